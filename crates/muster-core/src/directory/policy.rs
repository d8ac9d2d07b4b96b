//! Password policy: length bounds and a reject list, checked in Zato's order and with its codes.
//! No composition rules (NIST SP 800-63B advises against them).

use crate::error::{DomainError, codes};

#[derive(Debug, Clone)]
pub struct PasswordPolicy {
    pub min_length: usize,
    pub max_length: usize,
    /// Lower-case substrings a password must not contain.
    pub reject_list: Vec<String>,
}

/// Zato's shipped reject list, plus a few more of the most common passwords.
pub const DEFAULT_REJECT_LIST: &[&str] = &[
    "111111",
    "123123",
    "123321",
    "123456",
    "123qwe",
    "1q2w3e",
    "1q2w3e4r",
    "1qaz2wsx",
    "aaaaaa",
    "abc123",
    "asdasd",
    "asdfgh",
    "iloveyou",
    "monkey",
    "password",
    "qwerty",
    "qwertyuiop",
    "zxcvbnm",
    "letmein",
    "welcome",
    "dragon",
    "baseball",
    "football",
    "sunshine",
    "princess",
];

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_length: 8,
            max_length: 256,
            reject_list: DEFAULT_REJECT_LIST.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

impl PasswordPolicy {
    /// Checks `password`; `field` names the input it came from. Lengths count characters.
    pub fn check(&self, field: &str, password: &str) -> Result<(), DomainError> {
        let len = password.chars().count();
        if len < self.min_length {
            return Err(DomainError::invalid_field(
                field,
                codes::PASSWORD_TOO_SHORT,
                format!("password must be at least {} characters", self.min_length),
            ));
        }
        if len > self.max_length {
            return Err(DomainError::invalid_field(
                field,
                codes::PASSWORD_TOO_LONG,
                format!("password must be at most {} characters", self.max_length),
            ));
        }
        let lower = password.to_lowercase();
        if self
            .reject_list
            .iter()
            .any(|r| !r.is_empty() && lower.contains(r.as_str()))
        {
            return Err(DomainError::invalid_field(
                field,
                codes::PASSWORD_REJECTED,
                "password contains a commonly used sequence",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_in_zato_order_with_zato_codes() {
        let p = PasswordPolicy::default();
        assert!(p.check("password", "tr0ub4dor&3").is_ok());
        assert_eq!(
            p.check("password", "short").map_err(|e| e.code),
            Err(codes::PASSWORD_TOO_SHORT)
        );
        assert_eq!(
            p.check("password", &"x".repeat(257)).map_err(|e| e.code),
            Err(codes::PASSWORD_TOO_LONG)
        );
        assert_eq!(
            p.check("password", "MyPassword1").map_err(|e| e.code),
            Err(codes::PASSWORD_REJECTED)
        );
        // 8 characters of multi-byte text are 8 characters, not 16 bytes
        assert!(p.check("password", "ééééééé").is_err());
        assert!(p.check("password", "éééééééé").is_ok());
    }

    #[test]
    fn the_error_never_contains_the_password() {
        let p = PasswordPolicy::default();
        let e = p
            .check("password", "qwerty-secret-thing")
            .err()
            .map(|e| format!("{e:?}"))
            .unwrap_or_default();
        assert!(!e.contains("qwerty-secret-thing"));
    }
}
