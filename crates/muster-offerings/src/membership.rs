//! Accounts that follow group membership, written in a workflow step's transaction.
//!
//! A group member's accounts are exactly the group's offerings: each active member has a live
//! account on every offering of their group (requested if missing, brought back if it was on
//! its way out), and the live accounts they hold on offerings the group no longer has are
//! retired. What counts as a change, and which operation makes it, is
//! `muster_core::offering::membership`; the lifecycle table is used as it is
//! (`request_deletion` from `OK`) and never widened.

use crate::accounts::change_records;
use crate::new_account::NewAccount;
use crate::{Offerings, store_error};
use muster_core::audit::{RequestCtx, actions};
use muster_core::error::DomainError;
use muster_core::offering::lifecycle::{self, AccountState, Action};
use muster_core::offering::membership::{self, Operation};
use muster_core::offering::model::{Account, Offering, OfferingUserUuid, OfferingUuid, hex};
use muster_core::offering::naming::{self, Proposal};
use muster_store::{AccountChange, StoreTx};
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

/// How many accounts each kind of change touched, and a few of them by name.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Reconciled {
    pub requested: u64,
    pub restored: u64,
    pub rerequested: u64,
    pub deletion_requested: u64,
    pub discarded: u64,
    pub withdrawn: u64,
    /// Offerings the group names that no longer exist (nothing can be requested on them).
    pub missing_offerings: Vec<String>,
    /// The first changes, for the process state and the task's report.
    pub sample: Vec<serde_json::Value>,
}

/// How many changes [`Reconciled::sample`] keeps.
const SAMPLE: usize = 20;

impl Reconciled {
    pub fn changed(&self) -> u64 {
        self.requested + self.restored + self.rerequested + self.deletion_requested + self.discarded + self.withdrawn
    }

    fn note(&mut self, account: OfferingUserUuid, user: Uuid, offering: OfferingUuid, op: &str, to: AccountState) {
        if self.sample.len() < SAMPLE {
            self.sample.push(json!({
                "offering_user": account.to_string(),
                "user_uuid": hex(user),
                "offering_uuid": offering.to_string(),
                "operation": op,
                "state": to.label(),
            }));
        }
    }
}

/// Where the accounts of `members` disagree with the offerings they should have: one sentence
/// per missing or surplus account, empty when they agree.
pub fn drift(members: &[Uuid], want: &BTreeSet<Uuid>, accounts: &[Account]) -> Vec<String> {
    let by: BTreeMap<(Uuid, Uuid), &Account> = accounts.iter().map(|a| ((a.user_uuid, a.offering_uuid.0), a)).collect();
    let mut out = Vec::new();
    for m in members {
        for o in want {
            match by.get(&(*m, *o)) {
                None => out.push(format!("user {} has no account on offering {}", hex(*m), hex(*o))),
                Some(a) if !membership::is_live(a.state) => out.push(format!(
                    "user {}'s account {} on offering {} is {}",
                    hex(*m),
                    a.uuid,
                    hex(*o),
                    a.state.label()
                )),
                Some(_) => {}
            }
        }
    }
    let members: BTreeSet<Uuid> = members.iter().copied().collect();
    for a in accounts {
        if members.contains(&a.user_uuid) && !want.contains(&a.offering_uuid.0) && membership::is_live(a.state) {
            out.push(format!(
                "user {} has account {} ({}) on offering {}, which is not the group's",
                hex(a.user_uuid),
                a.uuid,
                a.state.label(),
                a.offering_uuid
            ));
        }
    }
    out
}

impl Offerings {
    /// Brings the accounts of `members` in line with `want`, in `tx` (see the module
    /// documentation): missing accounts are requested, accounts on their way out are brought
    /// back, and live accounts on any other offering are retired. Idempotent: a second run
    /// with the same arguments changes nothing.
    pub async fn reconcile_members(
        &self,
        tx: &mut StoreTx,
        ctx: &RequestCtx,
        members: &[Uuid],
        want: &BTreeSet<Uuid>,
    ) -> Result<Reconciled, DomainError> {
        let mut report = Reconciled::default();
        let mut offerings: BTreeMap<Uuid, Offering> = BTreeMap::new();
        for o in want {
            match self.store.offering(OfferingUuid(*o)).await.map_err(store_error)? {
                Some(off) => {
                    offerings.insert(*o, off);
                }
                None => report.missing_offerings.push(hex(*o)),
            }
        }
        let accounts = tx.accounts_of_users(members).await.map_err(store_error)?;
        // The names each offering has, by the prefix the policy asked about: read once, and
        // kept up to date with the names this run gives.
        let mut taken: BTreeMap<(Uuid, String), BTreeSet<String>> = BTreeMap::new();
        let by: BTreeMap<(Uuid, Uuid), &Account> =
            accounts.iter().map(|a| ((a.user_uuid, a.offering_uuid.0), a)).collect();
        for m in members {
            for (o, offering) in &offerings {
                let existing = by.get(&(*m, *o)).copied();
                match membership::for_member(existing.map(|a| a.state)) {
                    None => {}
                    Some(None) => {
                        let a = self.insert_in(tx, ctx, offering, *m, &mut taken).await?;
                        report.requested += 1;
                        report.note(a.0, *m, offering.uuid, "create", a.1);
                    }
                    Some(Some(op)) => {
                        if let Some(a) = existing {
                            let to = self.operate_in(tx, ctx, a, op).await?;
                            match op {
                                Operation::Restore => report.restored += 1,
                                _ => report.rerequested += 1,
                            }
                            report.note(a.uuid, *m, a.offering_uuid, op.name(), to);
                        }
                    }
                }
            }
        }
        for a in &accounts {
            if want.contains(&a.offering_uuid.0) {
                continue;
            }
            match membership::for_leaver(a.state) {
                None => {}
                Some(None) => {
                    let to = self.request_deletion_in(tx, ctx, a).await?;
                    report.deletion_requested += 1;
                    report.note(a.uuid, a.user_uuid, a.offering_uuid, Action::RequestDeletion.name(), to);
                }
                Some(Some(op)) => {
                    let to = self.operate_in(tx, ctx, a, op).await?;
                    match op {
                        Operation::Discard => report.discarded += 1,
                        _ => report.withdrawn += 1,
                    }
                    report.note(a.uuid, a.user_uuid, a.offering_uuid, op.name(), to);
                }
            }
        }
        Ok(report)
    }

    /// Requests an account for `user` on `offering` in `tx`.
    async fn insert_in(
        &self,
        tx: &mut StoreTx,
        ctx: &RequestCtx,
        offering: &Offering,
        user: Uuid,
        taken: &mut BTreeMap<(Uuid, String), BTreeSet<String>>,
    ) -> Result<(OfferingUserUuid, AccountState), DomainError> {
        let Some((person, _)) = self.store.user_by_uuid(user).await.map_err(store_error)? else {
            return Err(DomainError::internal("a group member has no directory user"));
        };
        let proposal = crate::naming::proposal(offering, &person);
        let username = match proposal.prefix() {
            None => String::new(),
            Some(prefix) => {
                let key = (offering.uuid.0, prefix.to_owned());
                if !taken.contains_key(&key) {
                    let names = tx
                        .offering_usernames(offering.uuid.0, prefix)
                        .await
                        .map_err(store_error)?;
                    taken.insert(key.clone(), names.into_iter().collect());
                }
                let set = taken.entry(key).or_default();
                let name = match &proposal {
                    Proposal::Counter(prefix) => {
                        let n = tx
                            .next_username_number(offering.uuid.0, naming::highest_counter(prefix, set))
                            .await
                            .map_err(store_error)?
                            .unwrap_or(0);
                        naming::counter_name(prefix, n)
                    }
                    _ => proposal.pick(set),
                };
                if !name.is_empty() {
                    // Every cached list the new name belongs to (a `full_name` base can be
                    // another's base with a suffix).
                    for ((o, p), set) in taken.iter_mut() {
                        if *o == offering.uuid.0 && name.starts_with(p.as_str()) {
                            set.insert(name.clone());
                        }
                    }
                }
                name
            }
        };
        let posix = crate::posix::allocate(tx.allocate_posix(offering, user).await.map_err(store_error)?, offering)?;
        let n = NewAccount::build(ctx, "system".to_owned(), offering, &person, username, posix);
        tx.insert_offering_user(
            n.uuid,
            offering,
            user,
            &n.fields,
            &n.history,
            &n.audit,
            n.posix.as_ref(),
        )
        .await
        .map_err(store_error)?;
        Ok((n.uuid, n.state()))
    }

    /// Applies a membership operation to an account read (and locked) in `tx`.
    async fn operate_in(
        &self,
        tx: &mut StoreTx,
        ctx: &RequestCtx,
        a: &Account,
        op: Operation,
    ) -> Result<AccountState, DomainError> {
        let mut fields = a.fields();
        // A deleted account released its name; if another account has taken it since, the
        // site names the account requested anew.
        if op == Operation::Rerequest
            && !a.username.is_empty()
            && tx
                .username_taken_by_other(a.offering_uuid.0, &a.username, a.uuid)
                .await
                .map_err(store_error)?
        {
            fields.username.clear();
        }
        fields.state = op.target(&fields.username);
        if op.clears_comments() {
            fields.comment.clear();
            fields.comment_url.clear();
        }
        let (audit, history) = change_records(ctx, "system", a, &fields, op.name(), op.audit_action(), true);
        let change = AccountChange {
            fields,
            allowed_from: op.sources().to_vec(),
            history,
            audit,
        };
        self.write_in(tx, a, change).await
    }

    /// The table's `request_deletion`, on muster's behalf, in `tx`.
    async fn request_deletion_in(
        &self,
        tx: &mut StoreTx,
        ctx: &RequestCtx,
        a: &Account,
    ) -> Result<AccountState, DomainError> {
        let mut fields = a.fields();
        fields.state = lifecycle::transition(Action::RequestDeletion, a.state)?;
        let (audit, history) = change_records(
            ctx,
            "system",
            a,
            &fields,
            Action::RequestDeletion.name(),
            actions::OFFERING_USER_TRANSITION,
            true,
        );
        let change = AccountChange {
            fields,
            allowed_from: lifecycle::sources(Action::RequestDeletion).to_vec(),
            history,
            audit,
        };
        self.write_in(tx, a, change).await
    }

    async fn write_in(
        &self,
        tx: &mut StoreTx,
        a: &Account,
        change: AccountChange,
    ) -> Result<AccountState, DomainError> {
        let to = change.fields.state;
        if tx
            .change_offering_user(a.uuid, a.version, &change)
            .await
            .map_err(store_error)?
        {
            Ok(to)
        } else {
            // Read under the lock on PostgreSQL and under the write lock on SQLite: only a
            // concurrent writer outside both could have moved it. The step is retried.
            Err(DomainError::conflict(
                muster_core::error::codes::CONFLICT,
                format!("account {} changed underneath this step", a.uuid),
            ))
        }
    }
}
