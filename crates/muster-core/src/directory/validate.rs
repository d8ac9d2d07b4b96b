//! Field validation shared by create and update.
//!
//! Zato's `create_user` checks only that a username exists and is unique; its stricter rules live
//! in the sign-up validator. muster applies one set of rules to every way a user is written, so
//! a super-user cannot create a user that sign-up would refuse.

use crate::error::{DomainError, codes};

pub const MAX_USERNAME_LEN: usize = super::username::MAX_LEN;
pub const MAX_EMAIL_LEN: usize = 128;
pub const MAX_NAME_LEN: usize = 191;

/// Checks a username and returns the form to store (see [`super::username`]).
pub fn username(value: &str) -> Result<String, DomainError> {
    super::username::canonical(value)
}

pub fn email(value: &str) -> Result<(), DomainError> {
    if value.chars().count() > MAX_EMAIL_LEN {
        return Err(DomainError::invalid_field(
            "email",
            codes::EMAIL_TOO_LONG,
            format!("email must be at most {MAX_EMAIL_LEN} characters"),
        ));
    }
    let valid = match value.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !value.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    };
    if !valid {
        return Err(DomainError::invalid_field(
            "email",
            codes::EMAIL_INVALID,
            "email is not a valid address",
        ));
    }
    Ok(())
}

/// Names, display name and TOTP label: bounded, no control characters.
pub fn text(field: &str, value: &str) -> Result<(), DomainError> {
    if value.chars().count() > MAX_NAME_LEN {
        return Err(DomainError::invalid_field(
            field,
            codes::INVALID_INPUT,
            format!("{field} must be at most {MAX_NAME_LEN} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(DomainError::invalid_field(
            field,
            codes::INVALID_INPUT,
            format!("{field} contains control characters"),
        ));
    }
    Ok(())
}

/// A TOTP key given by the caller. The error never repeats the key.
pub fn totp_key(value: &str) -> Result<(), DomainError> {
    if crate::credentials::totp::decode_key(value).is_none() {
        return Err(DomainError::invalid_field(
            "totp_key",
            codes::INVALID_INPUT,
            "totp_key must be base32 and carry at least 80 bits",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert_eq!(username("alice").ok().as_deref(), Some("alice"));
        assert!(username("élodie.dupont@example").is_ok());
        assert_eq!(username("").map_err(|e| e.code), Err(codes::USERNAME_INVALID));
        assert_eq!(username("a b").map_err(|e| e.code), Err(codes::USERNAME_HAS_WHITESPACE));
        assert_eq!(
            username(&"x".repeat(129)).map_err(|e| e.code),
            Err(codes::USERNAME_TOO_LONG)
        );
        assert_eq!(username("a\u{7}").map_err(|e| e.code), Err(codes::USERNAME_INVALID));
    }

    #[test]
    fn emails() {
        assert!(email("a@example.org").is_ok());
        for bad in ["", "a", "@x", "a@", "a@b@c", "a b@c"] {
            assert_eq!(email(bad).map_err(|e| e.code), Err(codes::EMAIL_INVALID), "{bad}");
        }
    }
}
