//! What a new account is before it is written: its fields, its first history entry and the
//! audit record (with its `offering_user_created` event) that announce it.
//!
//! Both ways an account comes to be — asked for by a caller or on muster's behalf
//! (`accounts.rs`), and requested for a group member inside a workflow step (`membership.rs`) —
//! build it here, so an account reads the same whichever way it was made; they differ only in
//! the store call that writes it (a one-shot `Store` call, or the step's `StoreTx`).

use crate::views::event_data;
use muster_core::audit::{AuditEntry, RequestCtx, actions, kinds, streams};
use muster_core::directory::User;
use muster_core::offering::lifecycle::{self, AccountState, RuntimeState};
use muster_core::offering::model::{
    Account, AccountFields, HistoryEntry, Offering, OfferingUserUuid, PosixIdentity, hex,
};
use serde_json::json;

/// A new account of `person` on an offering, ready for `insert_offering_user`. Its history
/// entry and audit record carry the same instant, which the store takes as its creation time.
pub(crate) struct NewAccount {
    pub(crate) uuid: OfferingUserUuid,
    pub(crate) fields: AccountFields,
    pub(crate) history: HistoryEntry,
    pub(crate) audit: AuditEntry,
    pub(crate) posix: Option<PosixIdentity>,
}

impl NewAccount {
    /// The account `actor` creates for `person` on `offering`, named `username` (empty when the
    /// site is to name it), in the lifecycle's creation state for that name.
    pub(crate) fn build(
        ctx: &RequestCtx,
        actor: String,
        offering: &Offering,
        person: &User,
        username: String,
        posix: Option<PosixIdentity>,
    ) -> Self {
        let user = person.uuid;
        let state = lifecycle::creation_state(Some(&username));
        let fields = AccountFields {
            username,
            state,
            runtime_state: RuntimeState::default(),
            is_restricted: false,
            comment: String::new(),
            comment_url: String::new(),
        };
        let uuid = OfferingUserUuid::new_random();
        let entry = AuditEntry::new(
            ctx,
            actions::OFFERING_USER_CREATE,
            Some(actor.clone()),
            Some(uuid.to_string()),
        );
        let at = entry.at;
        // The account as its event describes it; the joined names the store adds on reading
        // (provider name, the person's full name) are not known here and stay empty.
        let account = Account {
            uuid,
            offering_uuid: offering.uuid,
            offering_name: offering.name.clone(),
            provider_uuid: offering.provider_uuid,
            provider_name: String::new(),
            user_uuid: user,
            user_username: person.username.clone(),
            user_full_name: String::new(),
            user_email: person.email.clone(),
            username: fields.username.clone(),
            state,
            runtime_state: fields.runtime_state,
            is_restricted: false,
            comment: String::new(),
            comment_url: String::new(),
            version: 1,
            created: at,
            modified: at,
            posix: posix.clone(),
        };
        let history = HistoryEntry {
            at,
            actor: Some(actor),
            action: "create".to_owned(),
            from_state: None,
            to_state: state,
            comment: String::new(),
            comment_url: String::new(),
            cid: ctx.cid.clone(),
        };
        let audit = entry
            .with_details(
                json!({"offering_uuid": offering.uuid.to_string(), "user_uuid": hex(user), "state": state.label()}),
            )
            .with_event(
                streams::OFFERING_USERS,
                kinds::OFFERING_USER_CREATED,
                uuid.to_string(),
                event_data(&account, None, "create", &[]),
            );
        Self {
            uuid,
            fields,
            history,
            audit,
            posix,
        }
    }

    /// The state the account is created in.
    pub(crate) fn state(&self) -> AccountState {
        self.fields.state
    }
}
