//! Local usernames: the account name a hosting site creates for a person (Waldur's offering
//! user `username`). Waldur accepts any 100 characters; these names end up as login names,
//! home directories and LDAP entries on the sites, so muster holds them to the portable login
//! name rule shadow-utils' `useradd` applies by default and systemd documents as its strict
//! user-name syntax: a lower-case letter or `_` first, then lower-case letters, digits, `_`,
//! `.` and `-`, at most 32 characters (Linux's `utmp` name field). `<script>`, `../../etc`,
//! spaces, upper case and non-ASCII letters are all refused.

use crate::error::{DomainError, codes};

/// Longest local username (Linux `UT_NAMESIZE`; `useradd` refuses longer names).
pub const MAX_LEN: usize = 32;

/// Whether `name` (non-empty) is a safe local username.
pub fn is_valid(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    name.len() <= MAX_LEN
        && (first.is_ascii_lowercase() || first == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
}

/// Checks a local username; the empty name (none yet) is allowed. Code `E001001`.
pub fn check(name: &str) -> Result<(), DomainError> {
    if name.is_empty() || is_valid(name) {
        return Ok(());
    }
    Err(DomainError::invalid_field(
        "username",
        codes::USERNAME_INVALID,
        format!(
            "username must be a portable login name: a lower-case letter or _ first, then lower-case \
             letters, digits, _, . or -, at most {MAX_LEN} characters"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_login_names_only() {
        for ok in [
            "jsmith",
            "j.smith",
            "_svc",
            "carol01",
            "a-b_c.d",
            "walduruser_00001",
            &"x".repeat(32),
        ] {
            assert!(check(ok).is_ok(), "{ok}");
        }
        assert!(check("").is_ok(), "no name yet");
        for bad in [
            "<script>",
            "../../etc",
            "a/b",
            "JSmith",
            "1abc",
            "-abc",
            ".hidden",
            "has space",
            "tab\tname",
            "nul\0",
            "élodie",
            "a$",
            "a@b",
            &"x".repeat(33),
        ] {
            assert_eq!(check(bad).map_err(|e| e.code), Err(codes::USERNAME_INVALID), "{bad:?}");
        }
    }
}
