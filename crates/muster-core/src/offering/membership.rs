//! Accounts that follow group membership: the named operations muster uses when a person
//! joins or leaves a group's offerings, beside the lifecycle table.
//!
//! The lifecycle table ([`super::lifecycle::TRANSITIONS`]) is what clients (the site agent, the
//! console) may do. Membership needs moves the table rightly refuses to clients: bringing back
//! an account that is being torn down because its owner came back, and dropping an account the
//! site never made. Each is a separate operation here, with its own sources, its own audit
//! action and its own history entry, after Waldur's `OfferingUser.restore()` and
//! `_create_or_restore_offering_user` (waldur-mastermind `src/waldur_mastermind/marketplace/
//! models.py`, `tasks.py`) and its auto-deletion (`set_deleted` straight from
//! `CREATION_REQUESTED`). The table itself is never widened.

use super::lifecycle::AccountState;
use serde::Serialize;

/// A membership operation on one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// A returning member's account that is being deleted (`Requested deletion`, `Deleting`,
    /// `Error deleting`) goes back to `OK` under its old username (Waldur's `restore()`); one
    /// that never had a username goes back to `Requested` for the site to name it.
    Restore,
    /// A returning member's `Deleted` account is requested anew: `Requested`, username kept,
    /// so the site creates it again under the same name.
    Rerequest,
    /// A departing member's account the site has not started on (`Requested`) is `Deleted`
    /// at once: there is nothing to tear down.
    Discard,
    /// A departing member's account the site is still creating (`Creating`, `Pending …`,
    /// `Error creating`) is put up for deletion (`Requested deletion`): the site may have made
    /// something already, so it goes through the site's deletion claim like any other.
    Withdraw,
}

use AccountState as S;

impl Operation {
    pub const ALL: [Self; 4] = [Self::Restore, Self::Rerequest, Self::Discard, Withdraw];

    /// The name in history entries, events and audit details.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Restore => "restore",
            Self::Rerequest => "rerequest",
            Self::Discard => "discard",
            Self::Withdraw => "withdraw",
        }
    }

    /// The operation's audit action.
    pub const fn audit_action(self) -> &'static str {
        match self {
            Self::Restore => crate::audit::actions::OFFERING_USER_RESTORE,
            Self::Rerequest => crate::audit::actions::OFFERING_USER_REREQUEST,
            Self::Discard => crate::audit::actions::OFFERING_USER_DISCARD,
            Self::Withdraw => crate::audit::actions::OFFERING_USER_WITHDRAW,
        }
    }

    /// The states the operation applies to.
    pub const fn sources(self) -> &'static [AccountState] {
        match self {
            Self::Restore => &[S::DeletionRequested, S::Deleting, S::ErrorDeleting],
            Self::Rerequest => &[S::Deleted],
            Self::Discard => &[S::Requested],
            Self::Withdraw => &[
                S::Creating,
                S::PendingAccountLinking,
                S::PendingAdditionalValidation,
                S::ErrorCreating,
            ],
        }
    }

    /// The state the operation leaves an account with `username` in.
    pub fn target(self, username: &str) -> AccountState {
        match self {
            Self::Restore if username.is_empty() => S::Requested,
            Self::Restore => S::Ok,
            Self::Rerequest => S::Requested,
            Self::Discard => S::Deleted,
            Self::Withdraw => S::DeletionRequested,
        }
    }

    /// Whether the operation clears the site's comments (as `set_ok` and `restore()` do):
    /// instructions for a previous life of the account are stale.
    pub const fn clears_comments(self) -> bool {
        matches!(self, Self::Restore | Self::Rerequest)
    }
}

use Operation::Withdraw;

/// Whether an account in `state` is live for its owner: requested, being made or made, and
/// not on its way out.
pub fn is_live(state: AccountState) -> bool {
    !matches!(
        state,
        S::DeletionRequested | S::Deleting | S::Deleted | S::ErrorDeleting
    )
}

/// What a member's account on an offering of their group needs: nothing (`None`), a new
/// account (`Some(None)`), or an operation.
pub fn for_member(state: Option<AccountState>) -> Option<Option<Operation>> {
    match state {
        None => Some(None),
        Some(s) if Operation::Restore.sources().contains(&s) => Some(Some(Operation::Restore)),
        Some(S::Deleted) => Some(Some(Operation::Rerequest)),
        Some(_) => None,
    }
}

/// How a live account of someone who is no longer meant to have it is retired: `None` for
/// the table's `request_deletion` (from `OK`), or a named operation; nothing for an account
/// already on its way out.
pub fn for_leaver(state: AccountState) -> Option<Option<Operation>> {
    if !is_live(state) {
        None
    } else if state == S::Ok {
        Some(None)
    } else if Operation::Discard.sources().contains(&state) {
        Some(Some(Operation::Discard))
    } else {
        Some(Some(Operation::Withdraw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offering::lifecycle::{Action, sources};

    #[test]
    fn every_state_has_exactly_one_answer_for_members_and_leavers() {
        for s in AccountState::ALL {
            // A member's account ends live; a leaver's ends on its way out.
            match for_member(Some(s)) {
                None => assert!(is_live(s), "{s}"),
                Some(Some(op)) => {
                    assert!(op.sources().contains(&s));
                    assert!(is_live(op.target("name")) && is_live(op.target("")), "{s}");
                }
                Some(None) => unreachable!("an existing account is never created again"),
            }
            match for_leaver(s) {
                None => assert!(!is_live(s)),
                Some(None) => assert!(sources(Action::RequestDeletion).contains(&s)),
                Some(Some(op)) => {
                    assert!(op.sources().contains(&s));
                    assert!(!is_live(op.target("name")), "{s}");
                }
            }
        }
    }

    #[test]
    fn restore_keeps_a_named_account_ok_and_an_unnamed_one_requested() {
        assert_eq!(Operation::Restore.target("ada"), S::Ok);
        assert_eq!(Operation::Restore.target(""), S::Requested);
        assert_eq!(Operation::Rerequest.target("ada"), S::Requested);
    }
}
