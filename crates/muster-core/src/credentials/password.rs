//! Password hashing.
//!
//! Passwords a person chooses are hashed with argon2id (OWASP's minimum by default: 19 MiB,
//! 2 passes, 1 lane) and stored as PHC strings, so parameters can change without a migration.
//!
//! Passwords muster generates carry 192 random bits. Nobody can guess them, so a slow hash buys
//! nothing; they are stored as a salted SHA-256 under muster's own PHC-style identifier. That
//! keeps provisioning (users created without a password) from paying argon2id's cost.
//!
//! Verification always performs exactly one argon2id computation, whatever is stored (or when
//! the user does not exist), so timing does not reveal which case applied.

use super::random_bytes;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const GENERATED_SCHEME: &str = "$muster-sha256$";

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for Argon2Params {
    /// OWASP's recommended minimum for argon2id.
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid argon2 parameters: {0}")]
pub struct InvalidParams(String);

/// Hashes and verifies passwords. Cheap to clone.
#[derive(Clone)]
pub struct PasswordHasher {
    argon: Argon2<'static>,
    /// A hash of a password nobody knows, verified against when the user is unknown.
    dummy: String,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", self.argon.params())
            .finish()
    }
}

impl PasswordHasher {
    pub fn new(params: Argon2Params) -> Result<Self, InvalidParams> {
        let p = Params::new(params.memory_kib, params.iterations, params.parallelism, None)
            .map_err(|e| InvalidParams(e.to_string()))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, p);
        let mut hasher = Self {
            argon,
            dummy: String::new(),
        };
        hasher.dummy = hasher.hash(&generate_password());
        Ok(hasher)
    }

    /// argon2id PHC string of `password` with a fresh 128-bit salt.
    pub fn hash(&self, password: &str) -> String {
        let salt = SaltString::encode_b64(&random_bytes::<16>()).unwrap_or_else(|_| {
            // 16 bytes always encode; this branch exists only to avoid a panic path.
            SaltString::from_b64("c2FsdHNhbHRzYWx0c2FsdA").expect("static salt is valid")
        });
        match self.argon.hash_password(password.as_bytes(), &salt) {
            Ok(h) => h.to_string(),
            // Only reachable with a password longer than argon2 accepts (4 GiB): policy caps
            // lengths long before that. Store something that can never verify.
            Err(_) => format!("{GENERATED_SCHEME}invalid"),
        }
    }

    /// Verifies `password` against `stored` (None: unknown user). Always runs one argon2id.
    pub fn verify(&self, stored: Option<&str>, password: &str) -> bool {
        match stored {
            Some(s) if s.starts_with("$argon2") => self.verify_argon2(s, password),
            Some(s) if s.starts_with(GENERATED_SCHEME) => {
                let ok = verify_generated(s, password);
                let _ = self.verify_argon2(&self.dummy, password);
                ok
            }
            _ => {
                let _ = self.verify_argon2(&self.dummy, password);
                false
            }
        }
    }

    /// True when `stored` was made with other argon2 parameters than the current ones, so a
    /// successful login should store a fresh hash.
    pub fn needs_rehash(&self, stored: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return false;
        };
        if parsed.algorithm.as_str() != "argon2id" {
            return false;
        }
        let p = self.argon.params();
        let get = |name: &str| parsed.params.get_decimal(name);
        get("m") != Some(p.m_cost()) || get("t") != Some(p.t_cost()) || get("p") != Some(p.p_cost())
    }

    fn verify_argon2(&self, stored: &str, password: &str) -> bool {
        match PasswordHash::new(stored) {
            Ok(parsed) => self.argon.verify_password(password.as_bytes(), &parsed).is_ok(),
            Err(_) => false,
        }
    }
}

/// A new password with 192 bits of entropy, url-safe base64 (as Zato generates them).
pub fn generate_password() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<24>())
}

/// Stored form of a generated password: salted SHA-256 (see the module docs for why).
pub fn hash_generated(password: &str) -> String {
    let salt = random_bytes::<16>();
    let digest = salted_sha256(&salt, password);
    format!(
        "{GENERATED_SCHEME}{}${}",
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(digest)
    )
}

fn salted_sha256(salt: &[u8], password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    h.finalize().into()
}

fn verify_generated(stored: &str, password: &str) -> bool {
    let Some(rest) = stored.strip_prefix(GENERATED_SCHEME) else {
        return false;
    };
    let Some((salt, digest)) = rest.split_once('$') else {
        return false;
    };
    let (Ok(salt), Ok(digest)) = (STANDARD_NO_PAD.decode(salt), STANDARD_NO_PAD.decode(digest)) else {
        return false;
    };
    salted_sha256(&salt, password).ct_eq(digest.as_slice()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordHasher {
        PasswordHasher::new(Argon2Params {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        })
        .expect("valid params")
    }

    #[test]
    fn argon2id_round_trip() {
        let h = cheap();
        let stored = h.hash("correct horse battery staple");
        assert!(stored.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert!(h.verify(Some(&stored), "correct horse battery staple"));
        assert!(!h.verify(Some(&stored), "correct horse battery stapler"));
    }

    #[test]
    fn generated_passwords_have_192_bits_and_verify_cheaply() {
        let pw = generate_password();
        assert_eq!(pw.len(), 32); // 24 bytes in url-safe base64 without padding
        let stored = hash_generated(&pw);
        assert!(stored.starts_with(GENERATED_SCHEME));
        let h = cheap();
        assert!(h.verify(Some(&stored), &pw));
        assert!(!h.verify(Some(&stored), "something else"));
        assert_ne!(
            hash_generated(&pw),
            stored,
            "salted: the same password hashes differently"
        );
    }

    #[test]
    fn unknown_users_and_garbage_never_verify() {
        let h = cheap();
        assert!(!h.verify(None, ""));
        assert!(!h.verify(Some("plaintext"), "plaintext"));
        assert!(!h.verify(Some("$muster-sha256$invalid"), "invalid"));
    }

    #[test]
    fn rehash_is_needed_only_when_parameters_change() {
        let h = cheap();
        let stored = h.hash("pw-pw-pw-pw");
        assert!(!h.needs_rehash(&stored));
        let stronger = PasswordHasher::new(Argon2Params {
            memory_kib: 2048,
            iterations: 1,
            parallelism: 1,
        })
        .expect("valid params");
        assert!(stronger.needs_rehash(&stored));
    }
}
