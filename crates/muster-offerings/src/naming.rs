//! What an offering's username policy proposes for a person (the generators themselves are
//! `muster_core::offering::naming`).

use muster_core::directory::User;
use muster_core::offering::model::{Offering, UsernamePolicy};
use muster_core::offering::naming::{self, Proposal};

pub(crate) fn proposal(o: &Offering, person: &User) -> Proposal {
    let or_none = |name: Option<String>, wrap: fn(String) -> Proposal| name.map(wrap).unwrap_or(Proposal::None);
    match o.username_policy {
        UsernamePolicy::ServiceProvider => Proposal::None,
        // The directory name in its case-insensitive form, when it is a safe login name.
        UsernamePolicy::WaldurUsername => {
            let key = User::username_key(&person.username);
            or_none(naming::claim_name(&key).filter(|k| *k == key), Proposal::Exact)
        }
        UsernamePolicy::Anonymized => Proposal::Counter(o.username_prefix.clone()),
        UsernamePolicy::FullName => or_none(
            naming::full_name_base(person.first_name.as_deref(), person.last_name.as_deref()),
            Proposal::Series,
        ),
        UsernamePolicy::IdentityClaim => or_none(
            o.username_claim.value_of(person).and_then(|v| naming::claim_name(&v)),
            Proposal::Exact,
        ),
    }
}
