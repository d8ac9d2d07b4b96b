//! TOTP (RFC 6238): SHA-1, 6 digits, 30-second steps, as authenticator apps expect.
//!
//! Unlike Zato, a code is accepted one step either side of now (clock skew), and a step that has
//! been used once cannot be used again: [`verify`] returns the step that matched so the caller
//! can record it with a conditional update.

use super::random_bytes;
use data_encoding::BASE32_NOPAD;
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};

pub const STEP_SECONDS: u64 = 30;
const DIGITS: usize = 6;
/// Keys shorter than 80 bits are refused (RFC 4226 asks for at least 128; 80 keeps old
/// 16-character keys from other systems importable).
const MIN_KEY_BYTES: usize = 10;

/// A new 160-bit key, base32 without padding (32 characters).
pub fn generate_key() -> String {
    BASE32_NOPAD.encode(&random_bytes::<20>())
}

/// Decodes a base32 key (case-insensitive, spaces and padding ignored).
pub fn decode_key(key: &str) -> Option<Vec<u8>> {
    let cleaned: String = key
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '=')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let bytes = BASE32_NOPAD.decode(cleaned.as_bytes()).ok()?;
    (bytes.len() >= MIN_KEY_BYTES).then_some(bytes)
}

fn totp(key: &[u8]) -> TOTP {
    TOTP::new_unchecked(Algorithm::SHA1, DIGITS, 0, STEP_SECONDS, key.to_vec())
}

/// The `otpauth://` URI authenticator apps import (usually as a QR code), per Google
/// Authenticator's key-URI format: `otpauth://totp/ISSUER:ACCOUNT?secret=…&issuer=…`.
pub fn otpauth_uri(issuer: &str, account: &str, key_base32: &str) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        enc(issuer),
        enc(account),
        key_base32,
        enc(issuer)
    )
}

/// The code for `step`.
pub fn code_at_step(key: &[u8], step: u64) -> String {
    totp(key).generate(step * STEP_SECONDS)
}

/// The step number of a unix time.
pub fn step_of(unix_seconds: u64) -> u64 {
    unix_seconds / STEP_SECONDS
}

/// Checks `code` against the steps around `unix_seconds`, skipping any step at or before
/// `last_used_step`. Returns the step that matched.
pub fn verify(key: &[u8], code: &str, unix_seconds: u64, last_used_step: Option<u64>) -> Option<u64> {
    let code = code.trim();
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = step_of(unix_seconds);
    let t = totp(key);
    let mut matched = None;
    // Check every candidate (no early return) so timing does not say which step matched.
    for step in [now.saturating_sub(1), now, now + 1] {
        if last_used_step.is_some_and(|last| step <= last) {
            continue;
        }
        let expected = t.generate(step * STEP_SECONDS);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) && matched.is_none() {
            matched = Some(step);
        }
    }
    matched
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_decode_to_160_bits() {
        let k = generate_key();
        assert_eq!(k.len(), 32);
        assert_eq!(decode_key(&k).map(|b| b.len()), Some(20));
        assert_eq!(decode_key(&k.to_lowercase()).map(|b| b.len()), Some(20));
        assert!(decode_key("ABC").is_none());
        assert!(decode_key("not base32!").is_none());
    }

    #[test]
    fn otpauth_uris_escape_labels() {
        let uri = otpauth_uri("muster prod", "élodie@example.org", "JBSWY3DPEHPK3PXP");
        assert_eq!(
            uri,
            "otpauth://totp/muster%20prod:%C3%A9lodie%40example%2Eorg?secret=JBSWY3DPEHPK3PXP&issuer=muster%20prod&algorithm=SHA1&digits=6&period=30"
        );
    }

    #[test]
    fn rfc6238_sha1_vector() {
        // RFC 6238 appendix B, SHA-1 key "12345678901234567890", T = 59 s → 94287082 (8 digits);
        // the 6-digit code is its last six digits.
        let key = b"12345678901234567890";
        assert_eq!(code_at_step(key, step_of(59)), "287082");
    }

    #[test]
    fn accepts_one_step_of_skew_and_refuses_replays() {
        let key = decode_key(&generate_key()).expect("valid key");
        let now = 1_800_000_000;
        let step = step_of(now);
        let prev = code_at_step(&key, step - 1);
        let next = code_at_step(&key, step + 1);
        let far = code_at_step(&key, step + 2);
        assert_eq!(verify(&key, &prev, now, None), Some(step - 1));
        assert_eq!(verify(&key, &next, now, None), Some(step + 1));
        assert_eq!(verify(&key, &far, now, None), None);
        let current = code_at_step(&key, step);
        assert_eq!(verify(&key, &current, now, Some(step)), None, "a used step is refused");
        assert_eq!(verify(&key, &current, now, Some(step - 1)), Some(step));
        assert_eq!(verify(&key, "12345", now, None), None);
    }
}
