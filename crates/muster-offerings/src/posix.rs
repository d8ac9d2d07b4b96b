//! Unix identities of new accounts: what a draw from the offering's pools means.

use muster_core::error::DomainError;
use muster_core::offering::model::{Offering, PosixIdentity, PosixPool};
use muster_store::PosixAllocation;

/// The identity of a new account on `o`, from a draw; a full pool refuses the account (a
/// clear error now rather than an account the site cannot create later).
pub(crate) fn allocate(drawn: PosixAllocation, o: &Offering) -> Result<Option<PosixIdentity>, DomainError> {
    let Some(p) = &o.posix else {
        return Ok(None);
    };
    match drawn {
        PosixAllocation::NoPool => Ok(None),
        PosixAllocation::UidPoolFull => Err(full(o.posix_pool, "uid", p.uid_min, p.uid_max)),
        PosixAllocation::GidPoolFull => Err(full(o.posix_pool, "gid", p.gid_min, p.gid_max)),
        PosixAllocation::Allocated { uid, gid } => Ok(Some(PosixIdentity {
            uid,
            gid,
            login_shell: p.login_shell.clone(),
            home_prefix: p.home_prefix.clone(),
            home_override: None,
        })),
    }
}

fn full(pool: PosixPool, what: &str, min: i64, max: i64) -> DomainError {
    let whose = match pool {
        PosixPool::Offering => "offering",
        PosixPool::Provider => "provider",
    };
    DomainError::conflict(
        "posix_pool_full",
        format!("the {whose}'s {what} pool ({min}–{max}) is full: no account can be created until it is widened"),
    )
}
