//! Encryption at rest for secrets muster must be able to read back (TOTP keys).
//!
//! XChaCha20-Poly1305 with a random 192-bit nonce per value. The stored form names the format
//! version and the key (first 4 bytes of the key's SHA-256), so a value encrypted under another
//! server key fails with a clear error instead of garbage, and key rotation can find old values.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

use super::random_bytes;

pub const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretBoxError {
    #[error("value is not in muster's encrypted format")]
    Format,
    #[error("value was encrypted with another server key ({0})")]
    WrongKey(String),
    #[error("value failed authentication (corrupted or tampered)")]
    Tampered,
}

#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
    key_id: String,
    /// The server key, for deriving keys for other purposes ([`SecretBox::derive_key`]).
    key: [u8; KEY_LEN],
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBox")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl SecretBox {
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        let digest = Sha256::digest(key);
        let key_id = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        Self {
            cipher: XChaCha20Poly1305::new(key.into()),
            key_id,
            key: *key,
        }
    }

    pub fn generate_key() -> [u8; KEY_LEN] {
        random_bytes::<KEY_LEN>()
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// A key for `purpose`, derived from the server key (HMAC-SHA256 keyed by the server key
    /// over the purpose's name): each use gets its own key, and none reveals the server key.
    pub fn derive_key(&self, purpose: &str) -> [u8; KEY_LEN] {
        use hmac::{Hmac, Mac};
        // HMAC takes a key of any length: this cannot fail.
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&self.key) else {
            return [0; KEY_LEN];
        };
        mac.update(b"muster derived key: ");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// `v1.<key id>.<base64(nonce || ciphertext)>`
    pub fn seal(&self, plaintext: &str) -> String {
        let nonce = random_bytes::<24>();
        // Encryption with a valid key and nonce cannot fail for in-memory buffers.
        let ct = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plaintext.as_bytes())
            .unwrap_or_default();
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ct);
        format!("v1.{}.{}", self.key_id, STANDARD_NO_PAD.encode(blob))
    }

    pub fn open(&self, sealed: &str) -> Result<String, SecretBoxError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some("v1"), Some(key_id), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(SecretBoxError::Format);
        };
        if key_id != self.key_id {
            return Err(SecretBoxError::WrongKey(key_id.to_owned()));
        }
        let blob = STANDARD_NO_PAD.decode(body).map_err(|_| SecretBoxError::Format)?;
        if blob.len() < 24 {
            return Err(SecretBoxError::Format);
        }
        let (nonce, ct) = blob.split_at(24);
        let pt = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), ct)
            .map_err(|_| SecretBoxError::Tampered)?;
        String::from_utf8(pt).map_err(|_| SecretBoxError::Format)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_refusals() {
        let b = SecretBox::new(&SecretBox::generate_key());
        let sealed = b.seal("JBSWY3DPEHPK3PXP");
        assert!(!sealed.contains("JBSWY3DPEHPK3PXP"));
        assert_eq!(b.open(&sealed).as_deref(), Ok("JBSWY3DPEHPK3PXP"));
        assert_ne!(b.seal("x"), b.seal("x"), "random nonces");

        let other = SecretBox::new(&SecretBox::generate_key());
        assert!(matches!(other.open(&sealed), Err(SecretBoxError::WrongKey(_))));

        // Flip one bit of the ciphertext itself.
        let (head, body) = sealed.rsplit_once('.').expect("three parts");
        let mut blob = STANDARD_NO_PAD.decode(body).expect("base64");
        let last = blob.len() - 1;
        blob[last] ^= 1;
        let tampered = format!("{head}.{}", STANDARD_NO_PAD.encode(blob));
        assert_eq!(b.open(&tampered), Err(SecretBoxError::Tampered));
        assert_eq!(b.open("plain"), Err(SecretBoxError::Format));
    }

    #[test]
    fn derived_keys_differ_by_purpose_and_server_key() {
        let key = SecretBox::generate_key();
        let b = SecretBox::new(&key);
        assert_eq!(b.derive_key("a"), SecretBox::new(&key).derive_key("a"), "stable");
        assert_ne!(b.derive_key("a"), b.derive_key("b"));
        assert_ne!(
            b.derive_key("a"),
            SecretBox::new(&SecretBox::generate_key()).derive_key("a")
        );
        assert_ne!(b.derive_key("a"), key);
        assert!(
            !format!("{b:?}").contains(&format!("{:?}", key)),
            "Debug never shows the key"
        );
    }
}
