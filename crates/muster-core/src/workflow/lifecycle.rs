//! Subscription lifecycle (orchestrator-core's `SubscriptionLifecycle`, `orchestrator/types.py`): statuses, the transitions between them, which
//! workflow targets a status allows, and which statuses the subscriptions *using* a subscription
//! may have when it changes (orchestrator-core's `SAFE_USED_BY_TRANSITIONS_FOR_STATUS`).

use serde::{Deserialize, Serialize};

crate::named_enum! {
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum SubscriptionStatus {
        Initial = "initial",
        Provisioning = "provisioning",
        Active = "active",
        Disabled = "disabled",
        Terminated = "terminated",
        Migrating = "migrating",
    }
}

impl SubscriptionStatus {
    /// Never went live (`initial`) or finished (`terminated`): such a subscription may be
    /// deleted ([`delete_blocked`]), and as a user of another it no longer counts as one.
    pub const NOT_LIVE: [SubscriptionStatus; 2] = [Self::Initial, Self::Terminated];

    /// Before a create workflow made it active: what an aborted create leaves behind.
    pub const BEFORE_ACTIVE: [SubscriptionStatus; 2] = [Self::Initial, Self::Provisioning];

    /// The statuses this one may move to.
    pub fn next(self) -> &'static [SubscriptionStatus] {
        use SubscriptionStatus::*;
        match self {
            Initial => &[Provisioning, Active, Terminated],
            Provisioning => &[Active, Terminated],
            Active => &[Provisioning, Disabled, Migrating, Terminated],
            Disabled => &[Active, Terminated],
            Migrating => &[Active, Terminated],
            Terminated => &[],
        }
    }

    pub fn can_move_to(self, to: SubscriptionStatus) -> bool {
        self == to || self.next().contains(&to)
    }

    /// When a subscription moves to this status, the subscriptions that use it (`in_use_by`)
    /// must all be in one of these statuses: a UserGroup may not terminate while a User in it
    /// is still active.
    pub fn safe_for_users(self) -> &'static [SubscriptionStatus] {
        use SubscriptionStatus::*;
        match self {
            Initial => &[Initial],
            Provisioning => &[Initial, Provisioning, Active, Terminated],
            Active => &[Initial, Provisioning, Active, Disabled, Migrating, Terminated],
            Disabled => &[Initial, Disabled, Terminated],
            Migrating => &[Initial, Migrating, Terminated],
            Terminated => &[Initial, Terminated],
        }
    }
}

crate::named_enum! {
    /// What a workflow does to its subscription (orchestrator-core's `Target`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "UPPERCASE")]
    pub enum Target {
        Create = "CREATE",
        Modify = "MODIFY",
        Terminate = "TERMINATE",
        System = "SYSTEM",
        Validate = "VALIDATE",
    }
}

impl Target {
    /// The subscription statuses in which a workflow of this target may start
    /// (`TARGET_DEFAULT_USABLE_MAP`). Create workflows make their subscription.
    pub fn usable_when(self) -> &'static [SubscriptionStatus] {
        use SubscriptionStatus::*;
        match self {
            Self::Create => &[],
            Self::Modify | Self::System | Self::Validate => &[Active],
            Self::Terminate => &[Active, Provisioning],
        }
    }

    /// Terminate workflows wait until no subscription that is not terminated uses this one.
    pub fn blocked_by_users(self) -> bool {
        self == Self::Terminate
    }
}

/// Why a workflow may not start on a subscription now (orchestrator-core's reason strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BlockReason {
    #[serde(rename = "subscription.not_in_sync")]
    NotInSync,
    #[serde(rename = "subscription.no_modify_invalid_status")]
    InvalidStatus,
    #[serde(rename = "subscription.no_modify_subscription_in_use_by_others")]
    InUseByOthers,
    #[serde(rename = "subscription.relations_not_in_sync")]
    RelationsNotInSync,
}

impl BlockReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotInSync => "subscription.not_in_sync",
            Self::InvalidStatus => "subscription.no_modify_invalid_status",
            Self::InUseByOthers => "subscription.no_modify_subscription_in_use_by_others",
            Self::RelationsNotInSync => "subscription.relations_not_in_sync",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::NotInSync => "the subscription is out of sync: another workflow holds it",
            Self::InvalidStatus => "the workflow cannot run on a subscription in this status",
            Self::InUseByOthers => "other subscriptions that are not terminated use this subscription",
            Self::RelationsNotInSync => "a subscription this one depends on is out of sync",
        }
    }
}

/// Whether a workflow of `target` may start on a subscription in `status` with `insync`, used by
/// subscriptions in `users_statuses`, depending on subscriptions that are all in sync
/// (`relations_insync`). The first reason that applies, or None.
pub fn start_blocked(
    target: Target,
    status: SubscriptionStatus,
    insync: bool,
    users_statuses: &[SubscriptionStatus],
    relations_insync: bool,
) -> Option<BlockReason> {
    if target == Target::Create {
        return Some(BlockReason::InvalidStatus);
    }
    if !target.usable_when().contains(&status) {
        return Some(BlockReason::InvalidStatus);
    }
    // Validate workflows run on whatever is stored (unsync_unchecked) but still one at a time.
    if !insync {
        return Some(BlockReason::NotInSync);
    }
    // A subscription whose dependency (a User's group) is held by a workflow that changes it
    // waits: orchestrator-core's `locked_relations`.
    if matches!(target, Target::Modify | Target::Terminate) && !relations_insync {
        return Some(BlockReason::RelationsNotInSync);
    }
    if target.blocked_by_users()
        && users_statuses
            .iter()
            .any(|s| !SubscriptionStatus::Terminated.safe_for_users().contains(s))
    {
        return Some(BlockReason::InUseByOthers);
    }
    None
}

/// Why a subscription may not be deleted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DeleteBlock {
    #[serde(rename = "subscription.delete_invalid_status")]
    InvalidStatus,
    #[serde(rename = "subscription.delete_in_use_by_others")]
    InUseByOthers,
    #[serde(rename = "subscription.delete_held_by_process")]
    HeldByProcess,
}

impl DeleteBlock {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidStatus => "subscription.delete_invalid_status",
            Self::InUseByOthers => "subscription.delete_in_use_by_others",
            Self::HeldByProcess => "subscription.delete_held_by_process",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::InvalidStatus => "only initial and terminated subscriptions can be deleted; terminate it first",
            Self::InUseByOthers => "other subscriptions depend on this one; delete them first",
            Self::HeldByProcess => {
                "a process that is neither completed nor aborted holds the subscription; abort it first"
            }
        }
    }
}

/// Whether a subscription in `status`, used by `users` subscriptions and `held` by an unfinished
/// process, may be deleted: the first reason that applies, or None.
///
/// Only a subscription that never went live (`initial`, e.g. left by a failed create) or is
/// finished (`terminated`) may go, so deleting never stands in for a terminate workflow. One that
/// others depend on (a group with users, even terminated ones) waits for them, so no relation is
/// left pointing at nothing. One held by an unfinished process waits for that process: aborting
/// a create cleans up after itself, and a subscription deleted under a running workflow would
/// derail it.
pub fn delete_blocked(status: SubscriptionStatus, users: usize, held: bool) -> Option<DeleteBlock> {
    if !SubscriptionStatus::NOT_LIVE.contains(&status) {
        return Some(DeleteBlock::InvalidStatus);
    }
    if users > 0 {
        return Some(DeleteBlock::InUseByOthers);
    }
    if held {
        return Some(DeleteBlock::HeldByProcess);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::SubscriptionStatus::*;
    use super::*;

    #[test]
    fn strings_round_trip() {
        for s in SubscriptionStatus::ALL {
            assert_eq!(SubscriptionStatus::parse(s.as_str()), Some(s));
        }
        for t in Target::ALL {
            assert_eq!(Target::parse(t.as_str()), Some(t));
        }
    }

    #[test]
    fn terminated_is_final() {
        assert!(Terminated.next().is_empty());
        assert!(!Terminated.can_move_to(Active));
        assert!(Initial.can_move_to(Provisioning));
        assert!(!Initial.can_move_to(Disabled));
    }

    #[test]
    fn a_group_with_active_users_cannot_terminate() {
        assert_eq!(
            start_blocked(Target::Terminate, Active, true, &[Active], true),
            Some(BlockReason::InUseByOthers)
        );
        assert_eq!(
            start_blocked(Target::Terminate, Active, true, &[Terminated, Initial], true),
            None
        );
        // Modify is not blocked by users.
        assert_eq!(start_blocked(Target::Modify, Active, true, &[Active], true), None);
    }

    #[test]
    fn status_and_sync_block_starts() {
        assert_eq!(
            start_blocked(Target::Modify, Terminated, true, &[], true),
            Some(BlockReason::InvalidStatus)
        );
        assert_eq!(
            start_blocked(Target::Modify, Active, false, &[], true),
            Some(BlockReason::NotInSync)
        );
        assert_eq!(start_blocked(Target::Terminate, Provisioning, true, &[], true), None);
        assert_eq!(
            start_blocked(Target::Modify, Active, true, &[], false),
            Some(BlockReason::RelationsNotInSync)
        );
        assert_eq!(start_blocked(Target::Validate, Active, true, &[], false), None);
        assert_eq!(
            start_blocked(Target::Create, Active, true, &[], true),
            Some(BlockReason::InvalidStatus)
        );
    }

    #[test]
    fn only_initial_or_terminated_subscriptions_nobody_uses_or_holds_are_deleted() {
        for status in SubscriptionStatus::ALL {
            let want = match status {
                Initial | Terminated => None,
                _ => Some(DeleteBlock::InvalidStatus),
            };
            assert_eq!(delete_blocked(status, 0, false), want, "{status:?}");
        }
        assert_eq!(delete_blocked(Terminated, 1, false), Some(DeleteBlock::InUseByOthers));
        assert_eq!(delete_blocked(Initial, 0, true), Some(DeleteBlock::HeldByProcess));
        // The status is the first reason given, then users, then the holder.
        assert_eq!(delete_blocked(Active, 2, true), Some(DeleteBlock::InvalidStatus));
        assert_eq!(delete_blocked(Terminated, 2, true), Some(DeleteBlock::InUseByOthers));
    }
}
