//! Identifiers.
//!
//! Users carry two identifiers for the same thing: a `uuid` (what Waldur-style clients parse) and
//! a Zato-style opaque `user_id`, `musr` followed by the same UUID written as 26 lowercase
//! Crockford base32 characters. One is derived from the other, so they can never disagree.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// Crockford's base32 alphabet, lowercase (no i, l, o, u: they read as other characters).
const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const USER_ID_PREFIX: &str = "musr";
const ENCODED_LEN: usize = 26; // ceil(128 / 5)

/// Writes a 128-bit value as 26 Crockford base32 digits, most significant first.
fn encode_u128(mut value: u128) -> String {
    let mut out = [b'0'; ENCODED_LEN];
    for slot in out.iter_mut().rev() {
        *slot = CROCKFORD[(value & 0x1f) as usize];
        value >>= 5;
    }
    out.iter().map(|&b| b as char).collect()
}

fn decode_u128(text: &str) -> Option<u128> {
    if text.len() != ENCODED_LEN {
        return None;
    }
    let mut value: u128 = 0;
    for (i, c) in text.bytes().enumerate() {
        let digit = CROCKFORD.iter().position(|&a| a == c)? as u128;
        // The first digit holds only the top 3 bits (26 * 5 = 130 > 128).
        if i == 0 && digit > 0b111 {
            return None;
        }
        value = (value << 5) | digit;
    }
    Some(value)
}

/// The opaque, Zato-style user identifier: `musr` + 26 lowercase base32 characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(Uuid);

impl UserId {
    pub fn new_random() -> Self {
        Self(Uuid::new_v4())
    }

    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    pub fn uuid(&self) -> Uuid {
        self.0
    }

    /// Parses `musr…`; anything else (including a bare UUID) is `None`.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix(USER_ID_PREFIX)?;
        decode_u128(rest).map(|v| Self(Uuid::from_u128(v)))
    }

    /// Accepts either form a client may hold: `musr…` or the UUID.
    pub fn parse_any(text: &str) -> Option<Self> {
        Self::parse(text).or_else(|| Uuid::parse_str(text).ok().map(Self))
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{USER_ID_PREFIX}{}", encode_u128(self.0.as_u128()))
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for UserId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).ok_or_else(|| serde::de::Error::custom("not a muster user_id"))
    }
}

/// A session's public identifier. It is not the token and grants nothing by itself.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(pub Uuid);

impl SessionId {
    pub fn new_random() -> Self {
        Self(Uuid::new_v4())
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn user_id_has_the_documented_shape() {
        let id = UserId::new_random().to_string();
        assert!(id.starts_with("musr"));
        assert_eq!(id.len(), 4 + 26);
        assert!(id[4..].bytes().all(|b| CROCKFORD.contains(&b)));
    }

    #[test]
    fn extremes_round_trip() {
        for v in [0u128, 1, u128::MAX] {
            let id = UserId::from_uuid(Uuid::from_u128(v));
            assert_eq!(UserId::parse(&id.to_string()), Some(id));
        }
        assert_eq!(
            UserId::parse("musr00000000000000000000000000"),
            Some(UserId::from_uuid(Uuid::nil()))
        );
    }

    #[test]
    fn rejects_malformed_ids() {
        assert_eq!(UserId::parse("musr"), None);
        assert_eq!(UserId::parse("zusr00000000000000000000000000"), None);
        assert_eq!(UserId::parse("musr0000000000000000000000000u"), None);
        // 130 bits would overflow: the leading digit may only carry 3 bits.
        assert_eq!(UserId::parse("musrz0000000000000000000000000"), None);
    }

    proptest! {
        #[test]
        fn any_uuid_round_trips(v in any::<u128>()) {
            let id = UserId::from_uuid(Uuid::from_u128(v));
            prop_assert_eq!(UserId::parse(&id.to_string()), Some(id));
            prop_assert_eq!(UserId::parse_any(&Uuid::from_u128(v).to_string()), Some(id));
        }
    }
}
