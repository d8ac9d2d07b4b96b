//! Usernames: the form they are stored in, the key they are unique under, and the key that
//! keeps look-alikes apart.
//!
//! - **Stored form**: RFC 8265 `UsernameCasePreserved` enforcement (full-width characters
//!   mapped to their narrow forms, NFC, only PRECIS `IdentifierClass` characters: no spaces,
//!   controls, format or bidi-override characters, and the bidi rule of RFC 5893). The case the
//!   user chose is kept for display.
//! - **Key** (`users.username_key`, unique): RFC 8265 `UsernameCaseMapped`, i.e. the stored
//!   form lower-cased. Logins and lookups by name go through the same key, so `ADMIN`,
//!   `ａｄｍｉｎ` and `admin` name one account.
//! - **Look-alike key** (`users.username_skeleton`, unique): the Unicode TR39 confusable
//!   skeleton of the key's full case folding, so `аdmin` (Cyrillic а), `adrnin` and `admin`
//!   cannot all exist, nor `straße` and `STRASSE`. A skeleton keeps accents (`ádmin` and
//!   `admin` may both exist; the precomposed and decomposed `ádmin` are one name).
//!
//! Both keys are computed here and stored by the database's unique indexes, so two concurrent
//! creations of look-alike names cannot both succeed.

use crate::error::{DomainError, codes};
use precis_core::profile::PrecisFastInvocation;
use precis_profiles::{UsernameCaseMapped, UsernameCasePreserved};

pub const MAX_LEN: usize = 128;

fn invalid(message: impl Into<String>) -> DomainError {
    DomainError::invalid_field("username", codes::USERNAME_INVALID, message)
}

/// Why PRECIS refused a username, without echoing it.
fn precis_refusal(e: &precis_core::Error) -> DomainError {
    match e {
        precis_core::Error::BadCodepoint(info) => invalid(format!(
            "username contains a character that is not allowed (U+{:04X} at position {}): \
             letters, digits and printable ASCII symbols only, no spaces, control, format or \
             direction-changing characters",
            info.cp,
            info.position + 1
        )),
        _ => invalid("username is not a valid RFC 8265 username"),
    }
}

/// Checks a new username and returns the form to store. Codes: `E001001` (empty or not
/// allowed), `E001003` (too long), `E001004` (whitespace).
pub fn canonical(value: &str) -> Result<String, DomainError> {
    if value.is_empty() {
        return Err(invalid("username must not be empty"));
    }
    if value.chars().any(char::is_whitespace) {
        return Err(DomainError::invalid_field(
            "username",
            codes::USERNAME_HAS_WHITESPACE,
            "username must not contain whitespace",
        ));
    }
    let stored = UsernameCasePreserved::enforce(value).map_err(|e| precis_refusal(&e))?;
    if stored.chars().count() > MAX_LEN {
        return Err(DomainError::invalid_field(
            "username",
            codes::USERNAME_TOO_LONG,
            format!("username must be at most {MAX_LEN} characters"),
        ));
    }
    Ok(stored.into_owned())
}

/// The key a username is unique under and looked up by. Never fails: a name PRECIS refuses
/// (typed at a login, or stored before these rules) is keyed by its lower-case form, which no
/// new username can have, so it finds only such an old row.
pub fn key(value: &str) -> String {
    match UsernameCaseMapped::enforce(value) {
        Ok(k) => k.into_owned(),
        Err(_) => value.to_lowercase(),
    }
}

/// The look-alike key of a username `key`: names with equal skeletons cannot both exist.
pub fn skeleton(key: &str) -> String {
    let folded = caseless::default_case_fold_str(key);
    let skeleton: String = unicode_security::confusable_detection::skeleton(&folded).collect();
    // Prototypes may be capitals (the digit 0's is `O`): fold again so case never matters.
    caseless::default_case_fold_str(&skeleton)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(v: &str) -> Option<&'static str> {
        canonical(v).err().map(|e| e.code)
    }

    #[test]
    fn stored_form_maps_width_and_composes_but_keeps_case() {
        assert_eq!(canonical("Alice").as_deref().ok(), Some("Alice"));
        assert_eq!(canonical("ａｄｍｉｎ").as_deref().ok(), Some("admin"));
        assert_eq!(canonical("a\u{301}dmin").as_deref().ok(), Some("\u{e1}dmin"));
        assert_eq!(
            canonical("élodie.dupont@example").as_deref().ok(),
            Some("élodie.dupont@example")
        );
    }

    #[test]
    fn refuses_invisible_control_and_direction_characters() {
        for bad in [
            "admin\u{200b}",
            "ad\u{ad}min",
            "\u{202e}nimda",
            "a\u{7}",
            "a\u{0}b",
            "x\u{feff}",
        ] {
            assert_eq!(code(bad), Some(codes::USERNAME_INVALID), "{bad:?}");
        }
        assert_eq!(code(""), Some(codes::USERNAME_INVALID));
        assert_eq!(code("a b"), Some(codes::USERNAME_HAS_WHITESPACE));
        assert_eq!(code(&"x".repeat(129)), Some(codes::USERNAME_TOO_LONG));
        assert_eq!(code(&"x".repeat(128)), None);
    }

    #[test]
    fn the_key_ignores_case_and_width() {
        assert_eq!(key("ADMIN"), "admin");
        assert_eq!(key("ａｄｍｉｎ"), "admin");
        assert_eq!(key("\u{e1}dmin"), key("a\u{301}dmin"));
        // Refused by PRECIS: keyed by the lower-case form, which no new name has.
        assert_eq!(key("Admin\u{200b}"), "admin\u{200b}");
    }

    #[test]
    fn look_alikes_share_a_skeleton() {
        let admin = skeleton(&key("admin"));
        for look_alike in ["\u{430}dmin", "ADMIN", "adrnin", "ａｄｍｉｎ"] {
            assert_eq!(skeleton(&key(look_alike)), admin, "{look_alike:?}");
        }
        assert_eq!(skeleton(&key("straße")), skeleton(&key("STRASSE")));
        assert_eq!(skeleton(&key("user0")), skeleton(&key("usero")));
        assert_eq!(skeleton(&key("\u{e1}dmin")), skeleton(&key("a\u{301}dmin")));
        // Different names stay different.
        assert_ne!(skeleton(&key("\u{e1}dmin")), admin);
        assert_ne!(skeleton(&key("alice")), skeleton(&key("alicia")));
        assert_ne!(skeleton(&key("user1")), skeleton(&key("user2")));
    }
}
