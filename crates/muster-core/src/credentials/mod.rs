//! Credential primitives: password hashing, opaque tokens, TOTP and encryption at rest.
//!
//! These are CPU-only building blocks; the directory service decides when to use them and runs
//! the expensive ones (argon2id) off the async runtime.

pub mod password;
pub mod secretbox;
pub mod token;
pub mod totp;

use rand::RngCore;

/// `n` bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut out);
    out
}
