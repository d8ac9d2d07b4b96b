//! Usernames muster generates for new accounts under an offering's username policy, after
//! Waldur's `UsernameGenerationPolicy` (waldur-mastermind
//! `src/waldur_mastermind/marketplace/utils.py`, `generate_username`), with two differences:
//! every generated name is a portable login name (see [`super::username`]) that starts with a
//! letter, and names are unique per offering (the database's unique index backs the choice; a
//! caller that loses a race picks again).
//!
//! - `anonymized`: the offering's prefix and a counter, zero-padded to 5 digits
//!   (`walduruser_00001`), taken from the offering's own counter (one atomic update, so
//!   concurrent requests never draw the same number; Waldur read the last name and added one,
//!   which races) and kept above every number in use (numbers are never handed out again);
//! - `full_name`: `first_last`, transliterated to ASCII (`Élodie Ñúñez` → `elodie_nunez`), with
//!   `_01` … `_99` when taken;
//! - `identity_claim`: an attribute of the directory user (its username, e-mail local part, or
//!   a name), lower-cased, when it is a valid login name and free.
//!
//! No name (empty) means the account waits in `Requested` for the site to name it.

use super::username::{MAX_LEN, is_valid};
use std::collections::BTreeSet;
use unicode_normalization::UnicodeNormalization;

/// Digits of the anonymized counter (Waldur's width); wider only past 99999.
pub const COUNTER_WIDTH: usize = 5;

/// Longest anonymized prefix: the counter must still fit in [`MAX_LEN`].
pub const MAX_PREFIX: usize = MAX_LEN - COUNTER_WIDTH;

/// Waldur's default prefix (`username_anonymized_prefix`).
pub const DEFAULT_PREFIX: &str = "walduruser_";

/// What a policy asks for, before the offering's taken names are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proposal {
    /// Nothing: the site names the account.
    None,
    /// This name or nothing.
    Exact(String),
    /// This name, or it with a two-digit suffix.
    Series(String),
    /// The prefix and the next counter.
    Counter(String),
}

impl Proposal {
    /// The prefix the taken names that matter start with (for a `LIKE 'prefix%'` query).
    pub fn prefix(&self) -> Option<&str> {
        match self {
            Self::None => None,
            Self::Exact(s) | Self::Series(s) | Self::Counter(s) => Some(s),
        }
    }

    /// The name to use, given the names the offering already has that start with
    /// [`Proposal::prefix`]; empty when there is none to give.
    pub fn pick(&self, taken: &BTreeSet<String>) -> String {
        match self {
            Self::None => String::new(),
            Self::Exact(name) => {
                if taken.contains(name) {
                    String::new()
                } else {
                    name.clone()
                }
            }
            Self::Series(base) => {
                if !taken.contains(base) {
                    return base.clone();
                }
                (1..100)
                    .map(|n| format!("{}_{n:02}", cut(base, MAX_LEN - 3)))
                    .find(|c| !taken.contains(c) && is_valid(c))
                    .unwrap_or_default()
            }
            Self::Counter(prefix) => counter_name(prefix, highest_counter(prefix, taken) + 1),
        }
    }
}

/// The highest counter among `taken` names of the form `prefix` + digits (0 when none): the
/// next number must be above it, whatever the offering's counter says (a site may have named
/// accounts in the series by hand).
pub fn highest_counter(prefix: &str, taken: &BTreeSet<String>) -> i64 {
    taken
        .iter()
        .filter_map(|t| t.strip_prefix(prefix))
        .filter(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|rest| rest.parse::<i64>().ok())
        .max()
        .unwrap_or(0)
}

/// The anonymized name with number `n`; empty when it would be too long.
pub fn counter_name(prefix: &str, n: i64) -> String {
    let name = format!("{prefix}{n:0COUNTER_WIDTH$}");
    if name.len() <= MAX_LEN { name } else { String::new() }
}

/// The first `n` bytes of an ASCII string, without a trailing separator.
fn cut(s: &str, n: usize) -> &str {
    s.get(..n.min(s.len())).unwrap_or(s).trim_end_matches(['_', '.', '-'])
}

/// Whether `prefix` can start anonymized names: a lower-case letter first, then login-name
/// characters, at most [`MAX_PREFIX`].
pub fn is_valid_prefix(prefix: &str) -> bool {
    prefix.len() <= MAX_PREFIX && prefix.starts_with(|c: char| c.is_ascii_lowercase()) && is_valid(prefix)
}

/// Letters that have no ASCII decomposition but an accepted transliteration.
fn special(c: char) -> Option<&'static str> {
    Some(match c {
        'ß' => "ss",
        'æ' | 'Æ' => "ae",
        'œ' | 'Œ' => "oe",
        'ø' | 'Ø' => "o",
        'ł' | 'Ł' => "l",
        'đ' | 'Đ' | 'ð' | 'Ð' => "d",
        'þ' | 'Þ' => "th",
        'ı' => "i",
        'ħ' | 'Ħ' => "h",
        'ŋ' | 'Ŋ' => "ng",
        _ => return None,
    })
}

/// `s` in lower-case ASCII letters and digits: accents dropped (NFKD, combining marks
/// removed), a few letters spelled out, runs of anything else (spaces, hyphens, apostrophes)
/// one `_`, none at the ends.
pub fn transliterate(s: &str) -> String {
    let mut out = String::new();
    let mut gap = false;
    for c in s.chars() {
        let piece: String = match special(c) {
            Some(p) => p.to_owned(),
            None => c.nfkd().filter(char::is_ascii_alphanumeric).collect(),
        };
        let marks_only = piece.is_empty() && c.nfkd().all(|d| !d.is_ascii() && !d.is_alphanumeric());
        if piece.is_empty() {
            // A combining mark on its own belongs to the letter before; anything else separates.
            if !marks_only || c.is_whitespace() {
                gap = true;
            }
            continue;
        }
        if gap && !out.is_empty() {
            out.push('_');
        }
        gap = false;
        out.push_str(&piece.to_ascii_lowercase());
    }
    out
}

/// The `full_name` base for a person: `first_last`, starting with a letter, at most
/// [`MAX_LEN`]; None when the names give nothing usable.
pub fn full_name_base(first: Option<&str>, last: Option<&str>) -> Option<String> {
    let parts: Vec<String> = [first, last]
        .into_iter()
        .flatten()
        .map(transliterate)
        .filter(|p| !p.is_empty())
        .collect();
    let joined = parts.join("_");
    let base = cut(joined.trim_start_matches(|c: char| !c.is_ascii_lowercase()), MAX_LEN).to_owned();
    (is_valid(&base) && base.starts_with(|c: char| c.is_ascii_lowercase())).then_some(base)
}

/// An identity claim's value as a login name: lower-cased, kept only if it is then a valid
/// login name starting with a letter.
pub fn claim_name(value: &str) -> Option<String> {
    let v = value.trim().to_ascii_lowercase();
    (is_valid(&v) && v.starts_with(|c: char| c.is_ascii_lowercase())).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn transliteration_gives_lower_case_ascii() {
        assert_eq!(transliterate("Élodie"), "elodie");
        assert_eq!(transliterate("Ñúñez"), "nunez");
        assert_eq!(transliterate("Jørgen"), "jorgen");
        assert_eq!(transliterate("Straße"), "strasse");
        assert_eq!(transliterate("O'Brien-Łukasz"), "o_brien_lukasz");
        assert_eq!(transliterate("  Anne   Marie "), "anne_marie");
        assert_eq!(transliterate("李"), "");
    }

    #[test]
    fn full_names_are_login_names_with_suffixes_when_taken() {
        let base = full_name_base(Some("Élodie"), Some("Ñúñez")).expect("base");
        assert_eq!(base, "elodie_nunez");
        let p = Proposal::Series(base);
        assert_eq!(p.pick(&set(&[])), "elodie_nunez");
        assert_eq!(p.pick(&set(&["elodie_nunez"])), "elodie_nunez_01");
        assert_eq!(p.pick(&set(&["elodie_nunez", "elodie_nunez_01"])), "elodie_nunez_02");
        assert_eq!(full_name_base(Some("李"), Some("王")), None);
        assert_eq!(full_name_base(Some("1st"), Some("Smith")).as_deref(), Some("st_smith"));
        let long = full_name_base(Some(&"a".repeat(40)), Some("b")).expect("long");
        assert!(long.len() <= MAX_LEN && is_valid(&long));
        let p = Proposal::Series(long.clone());
        let next = p.pick(&set(&[&long]));
        assert!(
            next.len() <= MAX_LEN && is_valid(&next) && next.ends_with("_01"),
            "{next}"
        );
    }

    #[test]
    fn anonymized_names_count_past_the_highest_ever_used() {
        let p = Proposal::Counter("hpc_".to_owned());
        assert_eq!(p.pick(&set(&[])), "hpc_00001");
        assert_eq!(p.pick(&set(&["hpc_00001", "hpc_00007", "hpc_x"])), "hpc_00008");
        assert_eq!(p.pick(&set(&["hpc_99999"])), "hpc_100000");
        assert!(is_valid_prefix("hpc_") && !is_valid_prefix("_x") && !is_valid_prefix("Hpc"));
        assert!(!is_valid_prefix(&"a".repeat(MAX_PREFIX + 1)));
    }

    #[test]
    fn claims_become_login_names_or_nothing() {
        assert_eq!(claim_name("Ada.Lovelace").as_deref(), Some("ada.lovelace"));
        assert_eq!(claim_name("élodie"), None);
        assert_eq!(claim_name("_svc"), None);
        assert_eq!(Proposal::Exact("ada".into()).pick(&set(&["ada"])), "");
    }
}
