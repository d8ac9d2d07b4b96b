//! A waiting step's callback token: 256 random bits, handed out once in its URL; only the hex
//! of its SHA-256 is stored, so a copy of the database cannot resume a process.

use muster_core::credentials::random_bytes;
use muster_core::credentials::token::hash_token;

/// The stored form of a callback token: the hex of its SHA-256 (`muster_core`'s token hash).
pub(crate) fn token_hash(token: &str) -> String {
    hex(&hash_token(token))
}

/// A new token: 256 bits from the OS generator, as 64 hex digits (the form of the callback
/// URLs), the same strength as session tokens.
pub(crate) fn new_token() -> String {
    hex(&random_bytes::<32>())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// Stored callback hashes must still match: the hex of SHA-256, as the engine wrote them
    /// before it used `muster_core`'s hash.
    #[test]
    fn callback_token_hash_is_hex_sha256() {
        // FIPS 180-2, appendix B.1.
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let token = new_token();
        let direct: String = Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(token_hash(&token), direct);
    }
}
