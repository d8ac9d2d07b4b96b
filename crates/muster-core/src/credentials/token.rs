//! Opaque bearer tokens.
//!
//! A token is a prefix naming its kind (so secret scanners can spot leaked ones) followed by 256
//! random bits. Only the SHA-256 of the whole token is stored; the token itself is shown once.
//! Looking a token up by its hash means the database never compares secret material, and a
//! stolen database holds nothing a client could present.

use super::random_bytes;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Prefix of session tokens.
pub const SESSION_PREFIX: &str = "mst_";
/// Prefix of provider API tokens (hosting-site agents, `Authorization: Token <key>`).
pub const API_TOKEN_PREFIX: &str = "mpt_";

/// A fresh token with `prefix`, and its hash.
pub fn new_token(prefix: &str) -> (String, [u8; 32]) {
    let token = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()));
    let hash = hash_token(&token);
    (token, hash)
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_256_bits_and_hash_deterministically() {
        let (t, h) = new_token(SESSION_PREFIX);
        assert!(t.starts_with(SESSION_PREFIX));
        assert_eq!(t.len(), SESSION_PREFIX.len() + 43);
        assert_eq!(hash_token(&t), h);
        let (t2, _) = new_token(SESSION_PREFIX);
        assert_ne!(t, t2);
    }
}
