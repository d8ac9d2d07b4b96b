//! The offering-account lifecycle: the one table every other part of muster reads.
//!
//! An offering account is a person's account on one hosting offering (Waldur's marketplace
//! `OfferingUser`). Its lifecycle is a ten-state machine. Waldur keeps *three* tables for it that
//! disagree — the django-fsm decorators on the model, the validators in the API views and the
//! `STATE_TRANSITIONS` map in the Homeport UI — and some code paths assign `state` directly. That
//! is how accounts ended up in states no client expected. muster therefore has exactly one table,
//! [`TRANSITIONS`], and storage (the CHECK constraint), the HTTP API (allowed actions and error
//! bodies), events and the console all derive from it.
//!
//! The table uses the *API-level* allowed sources (Waldur's view validators), not the model's:
//!
//! * they are what every client actually experiences: the site agent and Homeport were written
//!   and tested against them, and Homeport's table matches them exactly;
//! * the extra model sources are unsafe as general transitions: `set_ok` from `Requested deletion`
//!   or `Deleting` would silently resurrect an account the agent may be half-way through tearing
//!   down; `request_deletion` from pre-OK states skips the agent's provisioning entirely; and
//!   `set_deleted` from `Requested` skips the deletion claim handshake.
//!
//! Internal paths that need something the table does not allow (restoring a returning member,
//! discarding a never-provisioned account) must be separate, named operations with their own
//! rules and audit events, never a widening of this table and never a direct state assignment.
//!
//! Like Waldur there are no self-transitions: asking for the state an account is already in is
//! refused with the same 400 a client already handles ("not in that state any more, back off").

use crate::error::{DomainError, codes};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where an offering account is in its lifecycle.
///
/// Serialised as Waldur's API label (`"Requested"`, `"Requested deletion"`, …) because that is
/// what the agent and UI filter and compare on; muster never exposes the integers on its API.
/// The discriminants are Waldur's stored integers, kept for migration and for the one Waldur
/// event (`username_set`) that carries the integer.
///
/// There is deliberately no `Default`: a new account's state depends on whether it is created
/// with a username, see [`creation_state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[repr(u8)]
pub enum AccountState {
    /// Account creation has been requested; nobody has started on it.
    #[serde(rename = "Requested")]
    Requested = 1,
    /// The hosting site is creating the account.
    #[serde(rename = "Creating")]
    Creating = 2,
    /// Waiting for the person to link an account they already have at the site.
    #[serde(rename = "Pending account linking")]
    PendingAccountLinking = 3,
    /// The site needs more validation (identity, affiliation, …) before the account is usable.
    #[serde(rename = "Pending additional validation")]
    PendingAdditionalValidation = 4,
    /// The account exists and is usable.
    #[serde(rename = "OK")]
    Ok = 5,
    /// Deletion has been requested; the site has not started on it.
    #[serde(rename = "Requested deletion")]
    DeletionRequested = 6,
    /// The site is removing the account.
    #[serde(rename = "Deleting")]
    Deleting = 7,
    /// The account has been removed at the site. Terminal: no action leaves it.
    #[serde(rename = "Deleted")]
    Deleted = 8,
    /// Creation failed; the site can retry or resolve it by hand.
    #[serde(rename = "Error creating")]
    ErrorCreating = 9,
    /// Deletion failed; the site can retry or declare the account fine after all.
    #[serde(rename = "Error deleting")]
    ErrorDeleting = 10,
}

/// Every name one state goes by, kept together so that they cannot drift apart.
struct StateNames {
    /// Waldur's `OfferingUserStates` constant, used in the invalid-transition message.
    constant: &'static str,
    /// Waldur's API label: filter value, response value and serde form.
    label: &'static str,
    /// muster's storage name (TEXT column with a CHECK constraint).
    db: &'static str,
}

impl AccountState {
    /// Every state, in Waldur's integer order.
    pub const ALL: [Self; 10] = [
        Self::Requested,
        Self::Creating,
        Self::PendingAccountLinking,
        Self::PendingAdditionalValidation,
        Self::Ok,
        Self::DeletionRequested,
        Self::Deleting,
        Self::Deleted,
        Self::ErrorCreating,
        Self::ErrorDeleting,
    ];

    const fn names(self) -> StateNames {
        let (constant, label, db) = match self {
            Self::Requested => ("CREATION_REQUESTED", "Requested", "requested"),
            Self::Creating => ("CREATING", "Creating", "creating"),
            Self::PendingAccountLinking => (
                "PENDING_ACCOUNT_LINKING",
                "Pending account linking",
                "pending_account_linking",
            ),
            Self::PendingAdditionalValidation => (
                "PENDING_ADDITIONAL_VALIDATION",
                "Pending additional validation",
                "pending_additional_validation",
            ),
            Self::Ok => ("OK", "OK", "ok"),
            Self::DeletionRequested => ("DELETION_REQUESTED", "Requested deletion", "deletion_requested"),
            Self::Deleting => ("DELETING", "Deleting", "deleting"),
            Self::Deleted => ("DELETED", "Deleted", "deleted"),
            Self::ErrorCreating => ("ERROR_CREATING", "Error creating", "error_creating"),
            Self::ErrorDeleting => ("ERROR_DELETING", "Error deleting", "error_deleting"),
        };
        StateNames { constant, label, db }
    }

    /// Waldur's stored integer (1..=10).
    pub const fn as_int(self) -> u8 {
        self as u8
    }

    /// The state with Waldur's integer `n`, if there is one.
    pub fn from_int(n: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_int() == n)
    }

    /// The API label, e.g. `"Pending account linking"`.
    pub const fn label(self) -> &'static str {
        self.names().label
    }

    /// The state whose API label is exactly `label` (case and spacing included, as Waldur's
    /// filter does; an unknown value is the caller's 400).
    pub fn parse_label(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.label() == label)
    }

    /// Waldur's constant name, e.g. `"CREATION_REQUESTED"`. Only used where muster reproduces
    /// Waldur's text, such as [`InvalidTransition::detail`].
    pub const fn constant_name(self) -> &'static str {
        self.names().constant
    }

    /// The storage name. Snake case and independent of the labels, so a label could be reworded
    /// without a data migration; the CHECK constraint lists `ALL.map(as_db)`.
    pub const fn as_db(self) -> &'static str {
        self.names().db
    }

    /// The state stored as `db`, or `None` if the column holds something the table does not know.
    pub fn from_db(db: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_db() == db)
    }
}

impl fmt::Display for AccountState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Whether the person can actually use the account right now, independent of the lifecycle.
///
/// Exists because linking or terms-of-use acceptance can lapse *after* an account is OK (e.g. an
/// expired identity link): the account stays OK while access is pending again. Serialised as the
/// Waldur label, which Waldur also stores verbatim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub enum RuntimeState {
    /// The person can use the account (Waldur's default).
    #[default]
    #[serde(rename = "Active")]
    Active,
    /// Access waits for the person to link an existing account.
    #[serde(rename = "Pending account linking")]
    PendingAccountLinking,
    /// Access waits for additional validation.
    #[serde(rename = "Pending additional validation")]
    PendingAdditionalValidation,
}

impl RuntimeState {
    pub const ALL: [Self; 3] = [
        Self::Active,
        Self::PendingAccountLinking,
        Self::PendingAdditionalValidation,
    ];

    /// The API label, e.g. `"Active"`.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Active => "Active",
            Self::PendingAccountLinking => "Pending account linking",
            Self::PendingAdditionalValidation => "Pending additional validation",
        }
    }

    /// The runtime state whose label is exactly `label`.
    pub fn parse_label(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.label() == label)
    }

    /// The storage name, snake case like [`AccountState::as_db`].
    pub const fn as_db(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::PendingAccountLinking => "pending_account_linking",
            Self::PendingAdditionalValidation => "pending_additional_validation",
        }
    }

    pub fn from_db(db: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_db() == db)
    }
}

impl fmt::Display for RuntimeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A state-changing API action: `POST /…/{uuid}/<name>/`.
///
/// The discriminant is the action's row in [`TRANSITIONS`]; a compile-time check below keeps the
/// two in step, so looking a row up can never fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Action {
    BeginCreating = 0,
    SetPendingAccountLinking = 1,
    SetPendingAdditionalValidation = 2,
    SetValidationComplete = 3,
    SetOk = 4,
    SetErrorCreating = 5,
    RequestDeletion = 6,
    SetDeleting = 7,
    SetDeleted = 8,
    SetErrorDeleting = 9,
}

impl Action {
    /// Every action, in table order.
    pub const ALL: [Self; 10] = [
        Self::BeginCreating,
        Self::SetPendingAccountLinking,
        Self::SetPendingAdditionalValidation,
        Self::SetValidationComplete,
        Self::SetOk,
        Self::SetErrorCreating,
        Self::RequestDeletion,
        Self::SetDeleting,
        Self::SetDeleted,
        Self::SetErrorDeleting,
    ];

    /// The URL segment, e.g. `"begin_creating"`; also the serde form.
    pub const fn name(self) -> &'static str {
        match self {
            Self::BeginCreating => "begin_creating",
            Self::SetPendingAccountLinking => "set_pending_account_linking",
            Self::SetPendingAdditionalValidation => "set_pending_additional_validation",
            Self::SetValidationComplete => "set_validation_complete",
            Self::SetOk => "set_ok",
            Self::SetErrorCreating => "set_error_creating",
            Self::RequestDeletion => "request_deletion",
            Self::SetDeleting => "set_deleting",
            Self::SetDeleted => "set_deleted",
            Self::SetErrorDeleting => "set_error_deleting",
        }
    }

    /// The action whose URL segment is exactly `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a transition does to `service_provider_comment` and `service_provider_comment_url`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommentEffect {
    /// Both are emptied: once the account is OK the instructions to the person are stale.
    Clear,
    /// Each is set if the request carries it (`""` resets it), otherwise left as it is. The
    /// pending states are where the site tells the person what to do next.
    SetIfGiven,
    /// Untouched.
    Keep,
}

/// One row of the lifecycle table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub action: Action,
    /// The states the action is allowed from, in Waldur's order (which is also the order of the
    /// list in the invalid-transition message).
    pub sources: &'static [AccountState],
    pub target: AccountState,
    pub comment_effect: CommentEffect,
}

use AccountState as S;

/// The lifecycle: one row per [`Action`], in [`Action::ALL`] order, with Waldur's API-level
/// sources (see the module documentation for why not the model's).
///
/// A `static` rather than a `const` so that [`row`] can hand out `'static` references to it.
pub static TRANSITIONS: [Transition; 10] = [
    Transition {
        action: Action::BeginCreating,
        sources: &[S::Requested, S::ErrorCreating],
        target: S::Creating,
        comment_effect: CommentEffect::Keep,
    },
    Transition {
        action: Action::SetPendingAccountLinking,
        sources: &[S::Creating, S::ErrorCreating, S::PendingAdditionalValidation],
        target: S::PendingAccountLinking,
        comment_effect: CommentEffect::SetIfGiven,
    },
    Transition {
        action: Action::SetPendingAdditionalValidation,
        sources: &[S::Creating, S::ErrorCreating, S::PendingAccountLinking],
        target: S::PendingAdditionalValidation,
        comment_effect: CommentEffect::SetIfGiven,
    },
    Transition {
        action: Action::SetValidationComplete,
        sources: &[S::PendingAdditionalValidation, S::PendingAccountLinking],
        target: S::Ok,
        comment_effect: CommentEffect::Clear,
    },
    Transition {
        action: Action::SetOk,
        sources: &[
            S::Requested,
            S::Creating,
            S::PendingAdditionalValidation,
            S::PendingAccountLinking,
            S::ErrorCreating,
            S::ErrorDeleting,
        ],
        target: S::Ok,
        comment_effect: CommentEffect::Clear,
    },
    Transition {
        action: Action::SetErrorCreating,
        sources: &[
            S::Requested,
            S::Creating,
            S::PendingAccountLinking,
            S::PendingAdditionalValidation,
        ],
        target: S::ErrorCreating,
        comment_effect: CommentEffect::Keep,
    },
    Transition {
        action: Action::RequestDeletion,
        sources: &[S::Ok],
        target: S::DeletionRequested,
        comment_effect: CommentEffect::Keep,
    },
    Transition {
        action: Action::SetDeleting,
        sources: &[S::DeletionRequested, S::ErrorDeleting],
        target: S::Deleting,
        comment_effect: CommentEffect::Keep,
    },
    Transition {
        action: Action::SetDeleted,
        sources: &[S::Deleting],
        target: S::Deleted,
        comment_effect: CommentEffect::Keep,
    },
    Transition {
        action: Action::SetErrorDeleting,
        sources: &[S::DeletionRequested, S::Deleting],
        target: S::ErrorDeleting,
        comment_effect: CommentEffect::Keep,
    },
];

// Compile-time check that row `i` of TRANSITIONS belongs to the action with discriminant `i`
// (and that Action::ALL is in the same order), so `row` can index instead of search.
const _: () = {
    let mut i = 0;
    while i < TRANSITIONS.len() {
        assert!(TRANSITIONS[i].action as usize == i);
        assert!(Action::ALL[i] as usize == i);
        i += 1;
    }
};

/// The table row for `action`.
pub const fn row(action: Action) -> &'static Transition {
    &TRANSITIONS[action as usize]
}

/// The states `action` is allowed from.
pub const fn sources(action: Action) -> &'static [AccountState] {
    row(action).sources
}

/// The state `action` leads to.
pub const fn target(action: Action) -> AccountState {
    row(action).target
}

/// What `action` does to the comment fields.
pub const fn comment_effect(action: Action) -> CommentEffect {
    row(action).comment_effect
}

/// Whether `action` may be applied to an account in state `from`.
pub fn allowed(action: Action, from: AccountState) -> bool {
    sources(action).contains(&from)
}

/// The actions that may be applied in state `from`, in table order (the console's menu).
pub fn actions_from(from: AccountState) -> Vec<Action> {
    Action::ALL.into_iter().filter(|a| allowed(*a, from)).collect()
}

impl CommentEffect {
    /// What the action does to the comments, in words (the API documentation's column).
    pub const fn describe(self) -> &'static str {
        match self {
            Self::Clear => "cleared",
            Self::SetIfGiven => "set if given",
            Self::Keep => "kept",
        }
    }
}

/// One action's row in words: "`Requested`, `Error creating` → `Creating`; comments kept."
/// The API's documentation of each action is generated from this, not written by hand.
pub fn describe(action: Action) -> String {
    let t = row(action);
    let from: Vec<String> = t.sources.iter().map(|s| format!("`{}`", s.label())).collect();
    format!(
        "{} → `{}`; comments {}.",
        from.join(", "),
        t.target.label(),
        t.comment_effect.describe()
    )
}

/// The table as Markdown (`docs/api.md` holds this; a test keeps the two equal).
pub fn markdown_table() -> String {
    let mut out = String::from("| Action | From | To | Comments |\n|---|---|---|---|\n");
    for t in &TRANSITIONS {
        let from: Vec<&str> = t.sources.iter().map(|s| s.label()).collect();
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            t.action.name(),
            from.join(", "),
            t.target.label(),
            t.comment_effect.describe()
        ));
    }
    out
}

/// The distinct states reachable from `from` in one action, in table order. Several actions can
/// lead to the same state (`set_validation_complete` and `set_ok` both lead to OK).
pub fn next_states(from: AccountState) -> Vec<AccountState> {
    let mut out = Vec::new();
    for t in TRANSITIONS.iter().filter(|t| t.sources.contains(&from)) {
        if !out.contains(&t.target) {
            out.push(t.target);
        }
    }
    out
}

/// The state after applying `action` in state `from`, or why it may not be applied.
pub fn transition(action: Action, from: AccountState) -> Result<AccountState, InvalidTransition> {
    let row = row(action);
    if row.sources.contains(&from) {
        Ok(row.target)
    } else {
        Err(InvalidTransition {
            action,
            current: from,
            valid: row.sources,
        })
    }
}

/// An action was asked for in a state it is not allowed from.
///
/// The API answers 400 (not 409), as Waldur does: the site agent treats 400 from a transition as
/// "the account is not in that state any more, back off quietly".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.detail())]
pub struct InvalidTransition {
    pub action: Action,
    pub current: AccountState,
    /// The states the action would have been allowed from.
    pub valid: &'static [AccountState],
}

impl InvalidTransition {
    /// The state the action leads to.
    pub fn target(&self) -> AccountState {
        target(self.action)
    }

    /// The `detail` of the 400 body.
    ///
    /// Waldur's sentence, word for word, so clients matching on it keep working — except that the
    /// current state is its label where Waldur prints the integer (`current state: 4`). Waldur
    /// lists the valid states as labels in the same sentence, so with the integer a client cannot
    /// even compare the two; muster never shows the integers on its API.
    pub fn detail(&self) -> String {
        let valid: Vec<&str> = self.valid.iter().map(|s| s.label()).collect();
        format!(
            "Cannot transition to {} from current state: {}. Valid states for operation: {}.",
            self.target().constant_name(),
            self.current.label(),
            valid.join(", ")
        )
    }
}

impl From<InvalidTransition> for DomainError {
    fn from(e: InvalidTransition) -> Self {
        DomainError::invalid(codes::INVALID_OPERATION, e.detail())
    }
}

/// The states in which setting a username completes creation (moves the account to OK).
///
/// This is how the site agent finishes provisioning: it PATCHes the local username instead of
/// calling `set_ok`. `Error deleting` is not among them even though `set_ok` is allowed from it:
/// a username says nothing about whether a failed deletion is resolved.
pub const USERNAME_COMPLETES_IN: [AccountState; 5] = [
    S::Requested,
    S::Creating,
    S::PendingAccountLinking,
    S::PendingAdditionalValidation,
    S::ErrorCreating,
];

/// What setting the username does to an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UsernameChange {
    /// Same username as before (`None` and `""` both mean "no username"): nothing changes, not
    /// even in `Deleted`, so re-sending a whole object is always harmless.
    Unchanged,
    /// The username changes; the state does not.
    Changed,
    /// The username changes and the account moves to OK, clearing the comments as `set_ok` does.
    ChangedAndOk,
    /// A different username was given for a `Deleted` account. Refused: the account no longer
    /// exists at the site, so the name would describe nothing, and a later restore must not pick
    /// up a name the site never created. (Waldur raised an unhandled error here.)
    RefusedDeleted,
}

impl UsernameChange {
    /// Whether the stored username changes.
    pub fn changes_username(self) -> bool {
        matches!(self, Self::Changed | Self::ChangedAndOk)
    }

    /// Whether the account moves to OK (and so its comments are cleared).
    pub fn moves_to_ok(self) -> bool {
        self == Self::ChangedAndOk
    }
}

/// `None` and `""` both mean "no username" (Waldur's column is nullable *and* blank-able and
/// tests truthiness).
fn present(username: Option<&str>) -> Option<&str> {
    username.filter(|u| !u.is_empty())
}

/// What changing an account's username from `old` to `new` in state `state` does.
///
/// Waldur's `save()` rule, kept because the agent depends on it: a non-empty username that differs
/// from the old one, set in [`USERNAME_COMPLETES_IN`], moves the account to OK; the same username
/// is a no-op (agents re-send it). Comparison is exact; the username itself (length, characters)
/// is validated by the caller before this is asked.
///
/// Invariant this relies on: an account in a creation-flow state has no username unless it is
/// being given one now. Any path that puts an account back into `Requested` (such as restoring a
/// deleted one) must clear the username, or re-sending the same name would leave it stuck.
pub fn username_change(state: AccountState, old: Option<&str>, new: Option<&str>) -> UsernameChange {
    let (old, new) = (present(old), present(new));
    if old == new {
        UsernameChange::Unchanged
    } else if state == AccountState::Deleted {
        UsernameChange::RefusedDeleted
    } else if new.is_some() && USERNAME_COMPLETES_IN.contains(&state) {
        UsernameChange::ChangedAndOk
    } else {
        UsernameChange::Changed
    }
}

/// The state of a newly created account: OK when it is created with a (non-empty) username,
/// since the site has evidently already made it, otherwise `Requested`.
pub fn creation_state(username: Option<&str>) -> AccountState {
    if present(username).is_some() {
        AccountState::Ok
    } else {
        AccountState::Requested
    }
}

/// Whether the runtime state may be set in `state`: always, except on a deleted account, because
/// runtime access can lapse and recover at any point of the lifecycle.
pub fn runtime_state_allowed(state: AccountState) -> bool {
    state != AccountState::Deleted
}

/// Whether the comment fields may be updated in `state`: always, except on a deleted account,
/// whose person there is nothing left to tell.
pub fn comments_allowed(state: AccountState) -> bool {
    state != AccountState::Deleted
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// Waldur's `OfferingUser` states (waldur-mastermind,
    /// `src/waldur_mastermind/marketplace/models.py`), written out independently of the code: (int, constant, label, storage).
    const STATES: [(u8, &str, &str, &str); 10] = [
        (1, "CREATION_REQUESTED", "Requested", "requested"),
        (2, "CREATING", "Creating", "creating"),
        (
            3,
            "PENDING_ACCOUNT_LINKING",
            "Pending account linking",
            "pending_account_linking",
        ),
        (
            4,
            "PENDING_ADDITIONAL_VALIDATION",
            "Pending additional validation",
            "pending_additional_validation",
        ),
        (5, "OK", "OK", "ok"),
        (6, "DELETION_REQUESTED", "Requested deletion", "deletion_requested"),
        (7, "DELETING", "Deleting", "deleting"),
        (8, "DELETED", "Deleted", "deleted"),
        (9, "ERROR_CREATING", "Error creating", "error_creating"),
        (10, "ERROR_DELETING", "Error deleting", "error_deleting"),
    ];

    /// Waldur's API-level transitions (its view validators) and Homeport's `STATE_TRANSITIONS`,
    /// written out with labels and names rather than the enums, so a typo in
    /// either the code or here fails a test: (action, target constant, sources, target, comments).
    const EXPECTED: [(&str, &str, &[&str], &str, &str); 10] = [
        (
            "begin_creating",
            "CREATING",
            &["Requested", "Error creating"],
            "Creating",
            "keep",
        ),
        (
            "set_pending_account_linking",
            "PENDING_ACCOUNT_LINKING",
            &["Creating", "Error creating", "Pending additional validation"],
            "Pending account linking",
            "set_if_given",
        ),
        (
            "set_pending_additional_validation",
            "PENDING_ADDITIONAL_VALIDATION",
            &["Creating", "Error creating", "Pending account linking"],
            "Pending additional validation",
            "set_if_given",
        ),
        (
            "set_validation_complete",
            "OK",
            &["Pending additional validation", "Pending account linking"],
            "OK",
            "clear",
        ),
        (
            "set_ok",
            "OK",
            &[
                "Requested",
                "Creating",
                "Pending additional validation",
                "Pending account linking",
                "Error creating",
                "Error deleting",
            ],
            "OK",
            "clear",
        ),
        (
            "set_error_creating",
            "ERROR_CREATING",
            &[
                "Requested",
                "Creating",
                "Pending account linking",
                "Pending additional validation",
            ],
            "Error creating",
            "keep",
        ),
        (
            "request_deletion",
            "DELETION_REQUESTED",
            &["OK"],
            "Requested deletion",
            "keep",
        ),
        (
            "set_deleting",
            "DELETING",
            &["Requested deletion", "Error deleting"],
            "Deleting",
            "keep",
        ),
        ("set_deleted", "DELETED", &["Deleting"], "Deleted", "keep"),
        (
            "set_error_deleting",
            "ERROR_DELETING",
            &["Requested deletion", "Deleting"],
            "Error deleting",
            "keep",
        ),
    ];

    /// Waldur Homeport's `STATE_TRANSITIONS` (<https://github.com/waldur/waldur-homeport>), a third independent statement of the
    /// same table: state → reachable states, compared as sets.
    const HOMEPORT: [(&str, &[&str]); 10] = [
        ("Requested", &["Creating", "OK", "Error creating"]),
        (
            "Creating",
            &[
                "OK",
                "Pending additional validation",
                "Pending account linking",
                "Error creating",
            ],
        ),
        (
            "Pending additional validation",
            &["OK", "Error creating", "Pending account linking"],
        ),
        (
            "Pending account linking",
            &["OK", "Error creating", "Pending additional validation"],
        ),
        ("OK", &["Requested deletion"]),
        (
            "Error creating",
            &[
                "Creating",
                "OK",
                "Pending additional validation",
                "Pending account linking",
            ],
        ),
        ("Error deleting", &["OK", "Deleting"]),
        ("Requested deletion", &["Deleting", "Error deleting"]),
        ("Deleting", &["Deleted", "Error deleting"]),
        ("Deleted", &[]),
    ];

    fn expected_row(
        action: Action,
    ) -> (
        &'static str,
        &'static str,
        &'static [&'static str],
        &'static str,
        &'static str,
    ) {
        match EXPECTED.iter().find(|r| r.0 == action.name()) {
            Some(r) => *r,
            None => panic!("no expected row for {action}"),
        }
    }

    fn labels(states: &[AccountState]) -> Vec<&'static str> {
        states.iter().map(|s| s.label()).collect()
    }

    #[test]
    fn state_names_match_the_reference() {
        assert_eq!(AccountState::ALL.len(), STATES.len());
        for (state, (int, constant, label, db)) in AccountState::ALL.into_iter().zip(STATES) {
            assert_eq!(state.as_int(), int);
            assert_eq!(state.constant_name(), constant);
            assert_eq!(state.label(), label);
            assert_eq!(state.as_db(), db);
            assert_eq!(state.to_string(), label);
        }
    }

    #[test]
    fn state_names_round_trip() {
        for state in AccountState::ALL {
            assert_eq!(AccountState::from_int(state.as_int()), Some(state));
            assert_eq!(AccountState::parse_label(state.label()), Some(state));
            assert_eq!(AccountState::from_db(state.as_db()), Some(state));
            let json = serde_json::to_string(&state).ok();
            assert_eq!(json, Some(format!("\"{}\"", state.label())));
            let back: Option<AccountState> = json.and_then(|j| serde_json::from_str(&j).ok());
            assert_eq!(back, Some(state));
        }
    }

    #[test]
    fn unknown_state_names_are_rejected() {
        for n in [0, 11, 255] {
            assert_eq!(AccountState::from_int(n), None);
        }
        for s in [
            "",
            "ok",
            "requested",
            "Pending Account Linking",
            " OK",
            "Deletion requested",
            "5",
        ] {
            assert_eq!(AccountState::parse_label(s), None, "{s:?}");
        }
        for s in ["", "OK", "Requested", "requested_deletion", "deletion-requested"] {
            assert_eq!(AccountState::from_db(s), None, "{s:?}");
        }
        assert!(serde_json::from_str::<AccountState>("\"ok\"").is_err());
        assert!(serde_json::from_str::<AccountState>("5").is_err());
    }

    #[test]
    fn names_are_distinct() {
        let ints: BTreeSet<_> = AccountState::ALL.iter().map(|s| s.as_int()).collect();
        let dbs: BTreeSet<_> = AccountState::ALL.iter().map(|s| s.as_db()).collect();
        let labels: BTreeSet<_> = AccountState::ALL.iter().map(|s| s.label()).collect();
        let actions: BTreeSet<_> = Action::ALL.iter().map(|a| a.name()).collect();
        assert_eq!((ints.len(), dbs.len(), labels.len(), actions.len()), (10, 10, 10, 10));
    }

    #[test]
    fn openapi_schema_lists_the_labels() {
        let schema = serde_json::to_value(<AccountState as utoipa::PartialSchema>::schema()).ok();
        let values = schema.as_ref().and_then(|s| s.get("enum")).cloned();
        let expected: Vec<serde_json::Value> = STATES.iter().map(|s| s.2.into()).collect();
        assert_eq!(values, Some(serde_json::Value::Array(expected)));
    }

    #[test]
    fn runtime_states_round_trip() {
        let expected = [
            ("Active", "active"),
            ("Pending account linking", "pending_account_linking"),
            ("Pending additional validation", "pending_additional_validation"),
        ];
        assert_eq!(RuntimeState::default(), RuntimeState::Active);
        for (state, (label, db)) in RuntimeState::ALL.into_iter().zip(expected) {
            assert_eq!(state.label(), label);
            assert_eq!(state.as_db(), db);
            assert_eq!(RuntimeState::parse_label(label), Some(state));
            assert_eq!(RuntimeState::from_db(db), Some(state));
            assert_eq!(serde_json::to_string(&state).ok(), Some(format!("\"{label}\"")));
            assert_eq!(
                serde_json::from_str::<RuntimeState>(&format!("\"{label}\"")).ok(),
                Some(state)
            );
        }
        assert_eq!(RuntimeState::parse_label("active"), None);
        assert_eq!(RuntimeState::parse_label("OK"), None);
    }

    #[test]
    fn action_names_round_trip() {
        let names: Vec<&str> = EXPECTED.iter().map(|r| r.0).collect();
        assert_eq!(Action::ALL.map(Action::name).to_vec(), names);
        for action in Action::ALL {
            assert_eq!(Action::parse(action.name()), Some(action));
            assert_eq!(
                serde_json::to_string(&action).ok(),
                Some(format!("\"{}\"", action.name()))
            );
        }
        for s in ["", "restore", "set_error", "begin-creating", "BeginCreating", "set_ok/"] {
            assert_eq!(Action::parse(s), None, "{s:?}");
        }
    }

    #[test]
    fn every_row_matches_the_literal_table() {
        assert_eq!(TRANSITIONS.len(), EXPECTED.len());
        for (t, (name, constant, srcs, tgt, effect)) in TRANSITIONS.iter().zip(EXPECTED) {
            assert_eq!(t.action.name(), name);
            assert_eq!(labels(t.sources), srcs.to_vec(), "{name}");
            assert_eq!(t.target.label(), tgt, "{name}");
            assert_eq!(t.target.constant_name(), constant, "{name}");
            let got = serde_json::to_value(t.comment_effect).ok();
            assert_eq!(got, Some(serde_json::Value::from(effect)), "{name}");
            assert_eq!(sources(t.action), t.sources);
            assert_eq!(target(t.action), t.target);
            assert_eq!(comment_effect(t.action), t.comment_effect);
            assert_eq!(row(t.action), t);
        }
    }

    #[test]
    fn every_action_in_every_state() {
        for action in Action::ALL {
            let (_, constant, srcs, tgt, _) = expected_row(action);
            for state in AccountState::ALL {
                let listed = srcs.contains(&state.label());
                assert_eq!(allowed(action, state), listed, "{action} from {state}");
                match transition(action, state) {
                    Ok(next) => {
                        assert!(listed, "{action} accepted from {state}");
                        assert_eq!(next.label(), tgt);
                    }
                    Err(e) => {
                        assert!(!listed, "{action} refused from {state}");
                        assert_eq!((e.action, e.current), (action, state));
                        assert_eq!(labels(e.valid), srcs.to_vec());
                        let detail = format!(
                            "Cannot transition to {constant} from current state: {}. Valid states for operation: {}.",
                            state.label(),
                            srcs.join(", ")
                        );
                        assert_eq!(e.detail(), detail);
                        assert_eq!(e.to_string(), detail);
                        let domain = DomainError::from(e);
                        assert_eq!(domain.kind, crate::ErrorKind::Invalid);
                        assert_eq!(domain.message, detail);
                    }
                }
            }
        }
    }

    #[test]
    fn waldur_test_case_reads_with_a_label() {
        // Waldur's test_invalid_state_transitions_return_400_not_500, with the label for the 4.
        let e = transition(Action::SetErrorDeleting, AccountState::PendingAdditionalValidation).err();
        assert_eq!(
            e.map(|e| e.detail()).as_deref(),
            Some(
                "Cannot transition to ERROR_DELETING from current state: Pending additional validation. \
                 Valid states for operation: Requested deletion, Deleting."
            )
        );
    }

    #[test]
    fn next_states_match_homeport() {
        for (from, to) in HOMEPORT {
            let state = AccountState::parse_label(from);
            let got: Option<BTreeSet<&str>> = state.map(|s| next_states(s).into_iter().map(|n| n.label()).collect());
            assert_eq!(got, Some(to.iter().copied().collect()), "{from}");
        }
    }

    #[test]
    fn next_states_are_distinct_and_in_table_order() {
        assert_eq!(
            next_states(AccountState::PendingAdditionalValidation),
            [S::PendingAccountLinking, S::Ok, S::ErrorCreating]
        );
        for state in AccountState::ALL {
            let next = next_states(state);
            let distinct: BTreeSet<_> = next.iter().collect();
            assert_eq!(distinct.len(), next.len(), "{state}");
            let from_actions: BTreeSet<_> = actions_from(state).into_iter().map(target).collect();
            assert_eq!(distinct, from_actions.iter().collect(), "{state}");
        }
    }

    #[test]
    fn no_self_transitions() {
        // Waldur allows none, restore included: no action leads from a state back to itself.
        for t in TRANSITIONS {
            assert!(!t.sources.contains(&t.target), "{} loops on {}", t.action, t.target);
        }
        for state in AccountState::ALL {
            assert!(!next_states(state).contains(&state), "{state}");
        }
    }

    #[test]
    fn deleted_is_terminal() {
        assert!(next_states(AccountState::Deleted).is_empty());
        assert!(actions_from(AccountState::Deleted).is_empty());
        for action in Action::ALL {
            assert!(transition(action, AccountState::Deleted).is_err(), "{action}");
        }
    }

    #[test]
    fn only_set_deleted_reaches_deleted_and_nothing_returns_to_requested() {
        for t in TRANSITIONS {
            assert_eq!(t.target == AccountState::Deleted, t.action == Action::SetDeleted);
            assert_ne!(t.target, AccountState::Requested);
        }
    }

    #[test]
    fn username_completes_creation_from_each_creation_state() {
        for state in USERNAME_COMPLETES_IN {
            let change = username_change(state, None, Some("jsmith"));
            assert_eq!(change, UsernameChange::ChangedAndOk, "{state}");
            assert!(change.changes_username() && change.moves_to_ok());
            assert_eq!(
                username_change(state, Some(""), Some("jsmith")),
                UsernameChange::ChangedAndOk
            );
            assert_eq!(
                username_change(state, Some("old"), Some("jsmith")),
                UsernameChange::ChangedAndOk
            );
            // The implicit move is one the table allows explicitly too.
            assert!(allowed(Action::SetOk, state), "{state}");
        }
        assert_eq!(
            USERNAME_COMPLETES_IN.map(AccountState::label),
            [
                "Requested",
                "Creating",
                "Pending account linking",
                "Pending additional validation",
                "Error creating"
            ]
        );
    }

    #[test]
    fn same_username_is_a_no_op_everywhere() {
        for state in AccountState::ALL {
            let change = username_change(state, Some("jsmith"), Some("jsmith"));
            assert_eq!(change, UsernameChange::Unchanged, "{state}");
            assert!(!change.changes_username() && !change.moves_to_ok());
            assert_eq!(username_change(state, None, None), UsernameChange::Unchanged);
            assert_eq!(username_change(state, None, Some("")), UsernameChange::Unchanged);
            assert_eq!(username_change(state, Some(""), None), UsernameChange::Unchanged);
        }
    }

    #[test]
    fn username_does_not_complete_outside_creation() {
        for state in [S::Ok, S::DeletionRequested, S::Deleting, S::ErrorDeleting] {
            assert_eq!(
                username_change(state, Some("a"), Some("b")),
                UsernameChange::Changed,
                "{state}"
            );
            assert_eq!(
                username_change(state, None, Some("b")),
                UsernameChange::Changed,
                "{state}"
            );
        }
    }

    #[test]
    fn clearing_the_username_never_completes() {
        for state in USERNAME_COMPLETES_IN.into_iter().chain([S::Ok]) {
            assert_eq!(
                username_change(state, Some("a"), None),
                UsernameChange::Changed,
                "{state}"
            );
            assert_eq!(
                username_change(state, Some("a"), Some("")),
                UsernameChange::Changed,
                "{state}"
            );
        }
    }

    #[test]
    fn username_change_refused_when_deleted() {
        for (old, new) in [(Some("a"), Some("b")), (None, Some("b")), (Some("a"), None)] {
            let change = username_change(S::Deleted, old, new);
            assert_eq!(change, UsernameChange::RefusedDeleted);
            assert!(!change.changes_username() && !change.moves_to_ok());
        }
    }

    #[test]
    fn creation_state_depends_on_the_username() {
        assert_eq!(creation_state(Some("jsmith")), AccountState::Ok);
        assert_eq!(creation_state(None), AccountState::Requested);
        assert_eq!(creation_state(Some("")), AccountState::Requested);
    }

    #[test]
    fn comments_and_runtime_state_everywhere_but_deleted() {
        for state in AccountState::ALL {
            let live = state != AccountState::Deleted;
            assert_eq!(runtime_state_allowed(state), live, "{state}");
            assert_eq!(comments_allowed(state), live, "{state}");
        }
    }

    #[test]
    fn comment_effects() {
        for action in Action::ALL {
            let expected = match action {
                Action::SetOk | Action::SetValidationComplete => CommentEffect::Clear,
                Action::SetPendingAccountLinking | Action::SetPendingAdditionalValidation => CommentEffect::SetIfGiven,
                _ => CommentEffect::Keep,
            };
            assert_eq!(comment_effect(action), expected, "{action}");
            // Every way into OK clears the comments.
            if target(action) == AccountState::Ok {
                assert_eq!(comment_effect(action), CommentEffect::Clear, "{action}");
            }
        }
    }

    proptest! {
        #[test]
        fn random_walks_follow_the_table(actions in prop::collection::vec(prop::sample::select(Action::ALL.to_vec()), 0..64)) {
            let targets: BTreeSet<AccountState> = TRANSITIONS.iter().map(|t| t.target).collect();
            let mut state = AccountState::Requested;
            let mut left_requested = false;
            for action in actions {
                let (_, _, srcs, tgt, _) = expected_row(action);
                match transition(action, state) {
                    Ok(next) => {
                        prop_assert!(srcs.contains(&state.label()), "{} accepted from {}", action, state);
                        prop_assert_eq!(next.label(), tgt);
                        prop_assert!(targets.contains(&next));
                        state = next;
                        left_requested = true;
                    }
                    Err(e) => {
                        prop_assert!(!srcs.contains(&state.label()), "{} refused from {}", action, state);
                        prop_assert_eq!(e.current, state);
                    }
                }
                prop_assert!(targets.contains(&state) || (state == AccountState::Requested && !left_requested));
            }
        }
    }
}
