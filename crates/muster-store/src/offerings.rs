//! Offering accounts: service providers, their managers, offerings, accounts, their history
//! and provider API tokens.
//!
//! Every change commits with its audit record (and the event it carries) in one transaction.
//! Every path that does not commit rolls back explicitly: a dropped sqlx transaction only
//! sends its ROLLBACK when the connection is next used, and until then it would keep its locks
//! (a refused transition's row lock, say) on an idle pooled connection.
//! A change to an account reads the row, hands it to the service's rule (a closure: the store
//! decides nothing), and writes the result with a conditional update (`… WHERE uuid = $1 AND
//! version = $2 AND state IN (allowed sources)`) checked by its row count, so of any number of
//! concurrent conflicting calls exactly one wins; a caller that lost re-reads and its rule
//! decides again.

use crate::{Backend, Inner, Result, Store, StoreError, Ts, on_db};
use muster_core::audit::AuditEntry;
use muster_core::error::DomainError;
use muster_core::offering::lifecycle::{AccountState, RuntimeState};
use muster_core::offering::model::{
    Account, AccountFields, ApiToken, ApiTokenUuid, HistoryEntry, IdentityClaim, Offering, OfferingUserUuid,
    OfferingUuid, PosixIdentity, PosixPool, PosixSettings, Provider, ProviderUuid, UsernamePolicy,
};
use time::OffsetDateTime;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------------------------

#[derive(sqlx::FromRow)]
struct ProviderRow {
    uuid: Uuid,
    name: String,
    #[sqlx(flatten)]
    posix: PosixColumns,
    created: Ts,
    modified: Ts,
}

impl From<ProviderRow> for Provider {
    fn from(r: ProviderRow) -> Self {
        Provider {
            uuid: ProviderUuid(r.uuid),
            name: r.name,
            posix: r.posix.into_settings(),
            created: r.created.0,
            modified: r.modified.0,
        }
    }
}

const PROVIDER_COLUMNS: &str = "uuid, name, posix_uid_min, posix_uid_max, posix_gid_min, posix_gid_max, \
    posix_home_prefix, posix_login_shell, posix_shared_gid, created, modified";

/// A pool's settings as offerings and providers store them (all four bounds or none).
#[derive(sqlx::FromRow)]
struct PosixColumns {
    posix_uid_min: Option<i64>,
    posix_uid_max: Option<i64>,
    posix_gid_min: Option<i64>,
    posix_gid_max: Option<i64>,
    posix_home_prefix: String,
    posix_login_shell: String,
    posix_shared_gid: Option<i64>,
}

impl PosixColumns {
    fn into_settings(self) -> Option<PosixSettings> {
        match (
            self.posix_uid_min,
            self.posix_uid_max,
            self.posix_gid_min,
            self.posix_gid_max,
        ) {
            (Some(uid_min), Some(uid_max), Some(gid_min), Some(gid_max)) => Some(PosixSettings {
                uid_min,
                uid_max,
                gid_min,
                gid_max,
                home_prefix: self.posix_home_prefix,
                login_shell: self.posix_login_shell,
                shared_gid: self.posix_shared_gid,
            }),
            _ => None,
        }
    }
}

#[derive(sqlx::FromRow)]
struct OfferingRow {
    uuid: Uuid,
    provider_uuid: Uuid,
    name: String,
    slug: String,
    #[sqlx(rename = "type")]
    kind: String,
    provider_can_create: bool,
    username_policy: String,
    username_policy_generated: Option<String>,
    username_prefix: String,
    username_claim: String,
    posix_pool: String,
    #[sqlx(flatten)]
    posix: PosixColumns,
    created: Ts,
    modified: Ts,
}

impl OfferingRow {
    fn into_offering(self) -> Result<Offering> {
        Ok(Offering {
            uuid: OfferingUuid(self.uuid),
            provider_uuid: ProviderUuid(self.provider_uuid),
            name: self.name,
            slug: self.slug,
            kind: self.kind,
            provider_can_create: self.provider_can_create,
            username_policy: UsernamePolicy::parse(
                self.username_policy_generated
                    .as_deref()
                    .unwrap_or(&self.username_policy),
            )
            .ok_or_else(|| StoreError::Corrupt(format!("username_policy {:?}", self.username_policy)))?,
            username_prefix: self.username_prefix,
            username_claim: IdentityClaim::parse(&self.username_claim)
                .ok_or_else(|| StoreError::Corrupt(format!("username_claim {:?}", self.username_claim)))?,
            posix_pool: PosixPool::parse(&self.posix_pool)
                .ok_or_else(|| StoreError::Corrupt(format!("posix_pool {:?}", self.posix_pool)))?,
            posix: self.posix.into_settings(),
            created: self.created.0,
            modified: self.modified.0,
        })
    }
}

/// An offering's columns, with the settings of the pool its accounts draw from: its own, or
/// its provider's (`OFFERING_FROM` joins the provider).
const OFFERING_COLUMNS: &str = "o.uuid, o.provider_uuid, o.name, o.slug, o.type, o.provider_can_create, \
    o.username_policy, o.username_policy_generated, o.username_prefix, o.username_claim, o.posix_pool, \
    CASE WHEN o.posix_pool = 'provider' THEN p.posix_uid_min ELSE o.posix_uid_min END AS posix_uid_min, \
    CASE WHEN o.posix_pool = 'provider' THEN p.posix_uid_max ELSE o.posix_uid_max END AS posix_uid_max, \
    CASE WHEN o.posix_pool = 'provider' THEN p.posix_gid_min ELSE o.posix_gid_min END AS posix_gid_min, \
    CASE WHEN o.posix_pool = 'provider' THEN p.posix_gid_max ELSE o.posix_gid_max END AS posix_gid_max, \
    CASE WHEN o.posix_pool = 'provider' THEN p.posix_home_prefix ELSE o.posix_home_prefix END AS posix_home_prefix, \
    CASE WHEN o.posix_pool = 'provider' THEN p.posix_login_shell ELSE o.posix_login_shell END AS posix_login_shell, \
    CASE WHEN o.posix_pool = 'provider' THEN p.posix_shared_gid ELSE o.posix_shared_gid END AS posix_shared_gid, \
    o.created, o.modified";
const OFFERING_FROM: &str = "offerings o JOIN service_providers p ON p.uuid = o.provider_uuid";

/// The pool settings an offering stores as its own: none when it draws from its provider's.
fn own_posix(o: &Offering) -> Option<&PosixSettings> {
    match o.posix_pool {
        PosixPool::Offering => o.posix.as_ref(),
        PosixPool::Provider => None,
    }
}

/// How a policy is stored: the original column holds the two policies its CHECK constraint
/// knows, `username_policy_generated` the newer ones (see migration 0014).
fn stored_policy(p: UsernamePolicy) -> (&'static str, Option<&'static str>) {
    match p {
        UsernamePolicy::ServiceProvider | UsernamePolicy::WaldurUsername => (p.as_str(), None),
        _ => (UsernamePolicy::ServiceProvider.as_str(), Some(p.as_str())),
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct AccountRow {
    uuid: Uuid,
    offering_uuid: Uuid,
    offering_name: String,
    provider_uuid: Uuid,
    provider_name: String,
    user_uuid: Uuid,
    user_username: String,
    user_display_name: Option<String>,
    user_first_name: Option<String>,
    user_last_name: Option<String>,
    user_email: Option<String>,
    username: String,
    state: String,
    runtime_state: String,
    is_restricted: bool,
    service_provider_comment: String,
    service_provider_comment_url: String,
    version: i64,
    created: Ts,
    modified: Ts,
    uidnumber: Option<i64>,
    primarygroup: Option<i64>,
    login_shell: Option<String>,
    home_prefix: Option<String>,
    home_directory: Option<String>,
}

impl AccountRow {
    pub(crate) fn into_account(self) -> Result<Account> {
        let state =
            AccountState::from_db(&self.state).ok_or_else(|| StoreError::Corrupt(format!("state {:?}", self.state)))?;
        let runtime_state = RuntimeState::from_db(&self.runtime_state)
            .ok_or_else(|| StoreError::Corrupt(format!("runtime_state {:?}", self.runtime_state)))?;
        // Waldur's full name is first + last; a display name, where set, is what the person chose.
        let full_name = match self.user_display_name.filter(|d| !d.is_empty()) {
            Some(d) => d,
            None => [self.user_first_name, self.user_last_name]
                .into_iter()
                .flatten()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" "),
        };
        Ok(Account {
            uuid: OfferingUserUuid(self.uuid),
            offering_uuid: OfferingUuid(self.offering_uuid),
            offering_name: self.offering_name,
            provider_uuid: ProviderUuid(self.provider_uuid),
            provider_name: self.provider_name,
            user_uuid: self.user_uuid,
            user_username: self.user_username,
            user_full_name: full_name,
            user_email: self.user_email,
            username: self.username,
            state,
            runtime_state,
            is_restricted: self.is_restricted,
            comment: self.service_provider_comment,
            comment_url: self.service_provider_comment_url,
            version: self.version,
            created: self.created.0,
            modified: self.modified.0,
            posix: match (self.uidnumber, self.primarygroup) {
                (Some(uid), Some(gid)) => Some(PosixIdentity {
                    uid,
                    gid,
                    login_shell: self.login_shell.unwrap_or_default(),
                    home_prefix: self.home_prefix.unwrap_or_default(),
                    home_override: self.home_directory,
                }),
                _ => None,
            },
        })
    }
}

/// The joined columns of an account view.
pub(crate) const ACCOUNT_SELECT: &str = "SELECT ou.uuid, ou.offering_uuid, o.name AS offering_name, ou.provider_uuid, \
    p.name AS provider_name, ou.user_uuid, u.username AS user_username, u.display_name AS user_display_name, \
    u.first_name AS user_first_name, u.last_name AS user_last_name, u.email AS user_email, ou.username, ou.state, \
    ou.runtime_state, ou.is_restricted, ou.service_provider_comment, ou.service_provider_comment_url, ou.version, \
    ou.created, ou.modified, ou.uidnumber, ou.primarygroup, ou.login_shell, ou.home_prefix, \
    ou.home_directory \
    FROM offering_users ou JOIN offerings o ON o.uuid = ou.offering_uuid \
    JOIN service_providers p ON p.uuid = ou.provider_uuid JOIN users u ON u.uuid = ou.user_uuid";

#[derive(sqlx::FromRow)]
struct HistoryRow {
    at: Ts,
    actor: Option<String>,
    action: String,
    from_state: Option<String>,
    to_state: String,
    comment: String,
    comment_url: String,
    cid: String,
}

impl HistoryRow {
    fn into_entry(self) -> Result<HistoryEntry> {
        let parse =
            |s: &str| AccountState::from_db(s).ok_or_else(|| StoreError::Corrupt(format!("history state {s:?}")));
        Ok(HistoryEntry {
            at: self.at.0,
            actor: self.actor,
            action: self.action,
            from_state: self.from_state.as_deref().map(parse).transpose()?,
            to_state: parse(&self.to_state)?,
            comment: self.comment,
            comment_url: self.comment_url,
            cid: self.cid,
        })
    }
}

#[derive(sqlx::FromRow)]
struct ApiTokenRow {
    uuid: Uuid,
    provider_uuid: Uuid,
    name: String,
    created_by: String,
    created: Ts,
}

impl From<ApiTokenRow> for ApiToken {
    fn from(r: ApiTokenRow) -> Self {
        ApiToken {
            uuid: ApiTokenUuid(r.uuid),
            provider_uuid: ProviderUuid(r.provider_uuid),
            name: r.name,
            created_by: r.created_by,
            created: r.created.0,
        }
    }
}

/// Writes a history entry on a connection or transaction.
macro_rules! insert_history {
    ($conn:expr, $account:expr, $h:expr) => {{
        sqlx::query(
            "INSERT INTO offering_user_history (offering_user_uuid, at, actor, action, from_state, to_state, comment, \
             comment_url, cid) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind($account)
        .bind(crate::Ts($h.at))
        .bind(&$h.actor)
        .bind(&$h.action)
        .bind(
            $h.from_state
                .map(|s: muster_core::offering::lifecycle::AccountState| s.as_db()),
        )
        .bind($h.to_state.as_db())
        .bind(&$h.comment)
        .bind(&$h.comment_url)
        .bind(&$h.cid)
        .execute($conn)
        .await?;
    }};
}
pub(crate) use insert_history;

// ---------------------------------------------------------------------------------------------
// Account changes and queries
// ---------------------------------------------------------------------------------------------

/// Pushes the conditional update of an account change: `UPDATE offering_users SET … WHERE uuid
/// AND version AND state IN (allowed)`. The state list is always padded to the number of states
/// (repeating one), so that every change has the same statement text, whatever its sources:
/// prepared statements are cached by text, and on SQLite a batch of changes is one text.
macro_rules! push_update {
    ($qb:expr, $uuid:expr, $version:expr, $change:expr) => {{
        let f = &$change.fields;
        $qb.push("UPDATE offering_users SET username = ")
            .push_bind(f.username.clone())
            .push(", state = ")
            .push_bind(f.state.as_db())
            .push(", runtime_state = ")
            .push_bind(f.runtime_state.as_db())
            .push(", is_restricted = ")
            .push_bind(f.is_restricted)
            .push(", service_provider_comment = ")
            .push_bind(f.comment.clone())
            .push(", service_provider_comment_url = ")
            .push_bind(f.comment_url.clone())
            .push(", modified = ")
            .push_bind(Ts($change.audit.at))
            .push(", version = version + 1 WHERE uuid = ")
            .push_bind($uuid.0)
            .push(" AND version = ")
            .push_bind($version)
            .push(" AND state IN (");
        let mut sep = $qb.separated(", ");
        for s in padded_states(&$change.allowed_from) {
            sep.push_bind(s.as_db());
        }
        $qb.push(")");
    }};
}

/// `states`, padded with its last element to the number of states there are (an `IN` list
/// means the same with repeats). Empty stays empty.
pub(crate) fn padded_states(states: &[AccountState]) -> impl Iterator<Item = AccountState> + '_ {
    let pad = states.last().copied().into_iter().cycle();
    states
        .iter()
        .copied()
        .chain(pad)
        .take(AccountState::ALL.len().max(states.len()))
}

/// Pushes one account change for SQLite's writer: the update, then its history entry, audit
/// record and event, each inserted only if the statement before it changed exactly one row
/// (`changes() = 1`) — so they exist only if the update applied — and a final `SELECT changes()`
/// that says whether it did (the last insert changed a row only if the whole chain did). The
/// caller wraps one or more of these in `BEGIN IMMEDIATE; … COMMIT;` and sends them as one
/// batch: one hand-off to SQLite's connection thread instead of one per statement.
pub(crate) fn push_sqlite_change(
    qb: &mut sqlx::QueryBuilder<sqlx::Sqlite>,
    uuid: OfferingUserUuid,
    version: i64,
    change: &AccountChange,
) {
    let a = &change.audit;
    if let Some(e) = &a.event {
        // The stream's counter exists before the chain below starts counting changes.
        qb.push("INSERT INTO event_streams (stream, last_seq) VALUES (")
            .push_bind(e.stream)
            .push(", 0) ON CONFLICT (stream) DO NOTHING; ");
    }
    push_update!(qb, uuid, version, change);
    qb.push("; ");
    if let Some(h) = &change.history {
        qb.push(
            "INSERT INTO offering_user_history (offering_user_uuid, at, actor, action, from_state, to_state, \
             comment, comment_url, cid) SELECT ",
        )
        .push_bind(uuid.0)
        .push(", ")
        .push_bind(Ts(h.at))
        .push(", ")
        .push_bind(h.actor.clone())
        .push(", ")
        .push_bind(h.action.clone())
        .push(", ")
        .push_bind(h.from_state.map(|s| s.as_db()))
        .push(", ")
        .push_bind(h.to_state.as_db())
        .push(", ")
        .push_bind(h.comment.clone())
        .push(", ")
        .push_bind(h.comment_url.clone())
        .push(", ")
        .push_bind(h.cid.clone())
        .push(" WHERE changes() = 1; ");
    }
    qb.push(
        "INSERT INTO audit_log (at, cid, actor, current_app, remote_addr, action, target, outcome, reason, \
         details) SELECT ",
    )
    .push_bind(Ts(a.at))
    .push(", ")
    .push_bind(a.cid.clone())
    .push(", ")
    .push_bind(a.actor.clone())
    .push(", ")
    .push_bind(a.current_app.clone())
    .push(", ")
    .push_bind(a.remote_addr.clone())
    .push(", ")
    .push_bind(a.action)
    .push(", ")
    .push_bind(a.target.clone())
    .push(", ")
    .push_bind(a.outcome.as_str())
    .push(", ")
    .push_bind(a.reason.clone())
    .push(", ")
    .push_bind(sqlx::types::Json(a.details.clone()))
    .push(" WHERE changes() = 1; ");
    if let Some(e) = &a.event {
        // Numbered at once, as SQLite transactions number their events (see `tx.rs`,
        // `hold_numbered_events`): this batch holds the database's write lock until it commits.
        qb.push("INSERT INTO events (stream, seq, kind, subject, at, cid, data) SELECT ")
            .push_bind(e.stream)
            .push(", (SELECT last_seq + 1 FROM event_streams WHERE stream = ")
            .push_bind(e.stream)
            .push("), ")
            .push_bind(e.kind)
            .push(", ")
            .push_bind(e.subject.clone())
            .push(", ")
            .push_bind(Ts(a.at))
            .push(", ")
            .push_bind(a.cid.clone())
            .push(", ")
            .push_bind(sqlx::types::Json(e.data.clone()))
            .push(" WHERE changes() = 1; ");
        qb.push("UPDATE event_streams SET last_seq = last_seq + 1 WHERE stream = ")
            .push_bind(e.stream)
            .push(" AND changes() = 1; ");
    }
    // (Not the summed row count of the batch: SQLite reports the previous batch's count for the
    // BEGIN.)
    qb.push("SELECT changes(); ");
}

/// What drawing from an offering's POSIX pools gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PosixAllocation {
    /// The offering has no pools: the account gets no Unix identity.
    NoPool,
    UidPoolFull,
    GidPoolFull,
    Allocated {
        uid: i64,
        gid: i64,
    },
}

// The counters: the next number, if it is still in the pool, and the counter moved past it.
pub(crate) const NEXT_UID_SQLITE: &str = "UPDATE offerings SET posix_uid_next = MAX(COALESCE(posix_uid_next, \
    posix_uid_min), posix_uid_min) + 1 WHERE uuid = $1 AND posix_uid_min IS NOT NULL \
    AND MAX(COALESCE(posix_uid_next, posix_uid_min), posix_uid_min) <= posix_uid_max RETURNING posix_uid_next - 1";
pub(crate) const NEXT_GID_SQLITE: &str = "UPDATE offerings SET posix_gid_next = MAX(COALESCE(posix_gid_next, \
    posix_gid_min), posix_gid_min) + 1 WHERE uuid = $1 AND posix_gid_min IS NOT NULL \
    AND MAX(COALESCE(posix_gid_next, posix_gid_min), posix_gid_min) <= posix_gid_max RETURNING posix_gid_next - 1";
const NEXT_UID_POSTGRES: &str = "UPDATE offerings SET posix_uid_next = GREATEST(COALESCE(posix_uid_next, \
    posix_uid_min), posix_uid_min) + 1 WHERE uuid = $1 AND posix_uid_min IS NOT NULL \
    AND GREATEST(COALESCE(posix_uid_next, posix_uid_min), posix_uid_min) <= posix_uid_max RETURNING posix_uid_next - 1";
const NEXT_GID_POSTGRES: &str = "UPDATE offerings SET posix_gid_next = GREATEST(COALESCE(posix_gid_next, \
    posix_gid_min), posix_gid_min) + 1 WHERE uuid = $1 AND posix_gid_min IS NOT NULL \
    AND GREATEST(COALESCE(posix_gid_next, posix_gid_min), posix_gid_min) <= posix_gid_max RETURNING posix_gid_next - 1";

/// What the service's rule decided about a locked account.
#[derive(Debug)]
pub struct AccountChange {
    /// The account's fields after the change.
    pub fields: AccountFields,
    /// The states the row must still be in for the write to apply (the table's sources for a
    /// transition; the state that was read for other changes).
    pub allowed_from: Vec<AccountState>,
    /// The history entry, for changes that move the lifecycle (or name the account).
    pub history: Option<HistoryEntry>,
    pub audit: AuditEntry,
}

/// How [`Store::change_offering_user`] ended. (Short-lived and returned once per call, so the
/// size of the account variants does not matter.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum ChangeOutcome {
    NotFound,
    /// The rule refused; nothing was written.
    Refused(DomainError),
    /// The rule found nothing to change; nothing was written.
    Unchanged(Account),
    Changed {
        before: Account,
        after: Account,
    },
}

/// Which accounts a caller may see.
#[derive(Debug, Clone, Default)]
pub enum Visibility {
    #[default]
    All,
    /// Accounts of these providers, plus the accounts of this user.
    Limited { providers: Vec<Uuid>, user: Option<Uuid> },
}

/// A sort key for account lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountOrder {
    Created,
    Modified,
    Username,
    UserFirstName,
    UserLastName,
}

/// Filters for [`Store::list_offering_users`]; every filter present must match; lists are
/// OR-ed within themselves.
#[derive(Debug, Clone, Default)]
pub struct AccountQuery {
    pub visibility: Visibility,
    pub states: Vec<AccountState>,
    pub offering_uuids: Vec<Uuid>,
    pub provider_uuids: Vec<Uuid>,
    pub user_uuid: Option<Uuid>,
    /// Exact, case-insensitive match on the directory username.
    pub user_username: Option<String>,
    pub is_restricted: Option<bool>,
    pub runtime_states: Vec<RuntimeState>,
    /// Case-insensitive substring of offering name, local username, the person's names or
    /// directory username.
    pub query: Option<String>,
    pub created_from: Option<OffsetDateTime>,
    pub created_before: Option<OffsetDateTime>,
    pub modified_from: Option<OffsetDateTime>,
    pub modified_before: Option<OffsetDateTime>,
    /// Sort keys (descending when true); the default is username then uuid.
    pub order: Vec<(AccountOrder, bool)>,
    pub offset: i64,
    pub limit: i64,
}

impl AccountQuery {
    /// The same count as a query on `offering_user_tallies`, whose rows carry only provider,
    /// offering and state: None when `self` filters on anything else. A person's own accounts
    /// in the visibility do not matter when the provider filter keeps to visible providers.
    fn for_tallies(&self) -> Option<std::borrow::Cow<'_, AccountQuery>> {
        let other_filters = self.user_uuid.is_some()
            || self.user_username.is_some()
            || self.is_restricted.is_some()
            || !self.runtime_states.is_empty()
            || self.query.is_some()
            || self.created_from.is_some()
            || self.created_before.is_some()
            || self.modified_from.is_some()
            || self.modified_before.is_some();
        if other_filters {
            return None;
        }
        match &self.visibility {
            Visibility::All | Visibility::Limited { user: None, .. } => Some(std::borrow::Cow::Borrowed(self)),
            Visibility::Limited {
                providers,
                user: Some(_),
            } if !self.provider_uuids.is_empty() && self.provider_uuids.iter().all(|p| providers.contains(p)) => {
                Some(std::borrow::Cow::Owned(AccountQuery {
                    visibility: Visibility::All,
                    ..self.clone()
                }))
            }
            Visibility::Limited { .. } => None,
        }
    }

    /// Whether the filters need the users and offerings tables (otherwise counting reads only
    /// `offering_users` and its indexes).
    fn needs_joins(&self) -> bool {
        self.query.is_some() || self.user_username.is_some()
    }
}

fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

macro_rules! push_account_filters {
    ($qb:expr, $q:expr) => {{
        $qb.push(" WHERE 1=1");
        if let Visibility::Limited { providers, user } = &$q.visibility {
            $qb.push(" AND (1=0");
            if !providers.is_empty() {
                $qb.push(" OR ou.provider_uuid IN (");
                let mut sep = $qb.separated(", ");
                for p in providers {
                    sep.push_bind(*p);
                }
                $qb.push(")");
            }
            if let Some(u) = user {
                $qb.push(" OR ou.user_uuid = ").push_bind(*u);
            }
            $qb.push(")");
        }
        if !$q.states.is_empty() {
            $qb.push(" AND ou.state IN (");
            let mut sep = $qb.separated(", ");
            for s in &$q.states {
                sep.push_bind(s.as_db());
            }
            $qb.push(")");
        }
        if !$q.offering_uuids.is_empty() {
            $qb.push(" AND ou.offering_uuid IN (");
            let mut sep = $qb.separated(", ");
            for o in &$q.offering_uuids {
                sep.push_bind(*o);
            }
            $qb.push(")");
        }
        if !$q.provider_uuids.is_empty() {
            $qb.push(" AND ou.provider_uuid IN (");
            let mut sep = $qb.separated(", ");
            for p in &$q.provider_uuids {
                sep.push_bind(*p);
            }
            $qb.push(")");
        }
        if let Some(u) = $q.user_uuid {
            $qb.push(" AND ou.user_uuid = ").push_bind(u);
        }
        if let Some(v) = &$q.user_username {
            $qb.push(" AND u.username_key = ")
                .push_bind(muster_core::directory::User::username_key(v));
        }
        if let Some(v) = $q.is_restricted {
            $qb.push(" AND ou.is_restricted = ").push_bind(v);
        }
        if !$q.runtime_states.is_empty() {
            $qb.push(" AND ou.runtime_state IN (");
            let mut sep = $qb.separated(", ");
            for s in &$q.runtime_states {
                sep.push_bind(s.as_db());
            }
            $qb.push(")");
        }
        if let Some(v) = &$q.query {
            let pattern = format!("%{}%", like_escape(&v.to_lowercase()));
            $qb.push(" AND (LOWER(o.name) LIKE ")
                .push_bind(pattern.clone())
                .push(" ESCAPE '\\' OR LOWER(ou.username) LIKE ")
                .push_bind(pattern.clone())
                .push(" ESCAPE '\\' OR u.search_names LIKE ")
                .push_bind(pattern.clone())
                .push(" ESCAPE '\\' OR u.username_key LIKE ")
                .push_bind(pattern)
                .push(" ESCAPE '\\')");
        }
        if let Some(v) = $q.created_from {
            $qb.push(" AND ou.created >= ").push_bind(Ts(v));
        }
        if let Some(v) = $q.created_before {
            $qb.push(" AND ou.created < ").push_bind(Ts(v));
        }
        if let Some(v) = $q.modified_from {
            $qb.push(" AND ou.modified >= ").push_bind(Ts(v));
        }
        if let Some(v) = $q.modified_before {
            $qb.push(" AND ou.modified < ").push_bind(Ts(v));
        }
    }};
}

/// Builds, after `$prefix` (`""` or an `EXPLAIN`), the page query for `$q` whose ORDER BY is
/// `$order`.
///
/// When the page can be chosen from `offering_users` alone, it is: the inner query picks the
/// page's uuids from the account indexes (for the dashboard, `(provider_uuid, state, username,
/// uuid)` covers filter and order), and only those rows are joined with the offering, provider
/// and person. Joining first would look up every matching account's person and offering before
/// sorting: thousands of lookups for a page of a hundred.
macro_rules! page_query {
    ($prefix:expr, $q:expr, $order:expr) => {{
        let mut qb = sqlx::QueryBuilder::new($prefix);
        qb.push(ACCOUNT_SELECT);
        if Store::page_from_accounts_alone($q) && $q.states.len() > 1 {
            // Several states: the first `offset + limit` of each state (one ordered index range
            // each), merged. The page of the union is the page of those tops, so the database
            // never reads more than `offset + limit` entries per state however many match.
            let top = $q.offset.max(0).saturating_add($q.limit.max(0));
            // Only the sort keys, so that an index holding them answers each state alone.
            let mut columns = String::from("ou.uuid, ou.username");
            for (key, _) in &$q.order {
                let column = match key {
                    AccountOrder::Created => ", ou.created",
                    AccountOrder::Modified => ", ou.modified",
                    _ => continue,
                };
                if !columns.contains(column) {
                    columns.push_str(column);
                }
            }
            qb.push(" WHERE ou.uuid IN (SELECT uuid FROM (");
            for (i, state) in $q.states.iter().enumerate() {
                if i > 0 {
                    qb.push(" UNION ALL ");
                }
                let one = AccountQuery {
                    states: vec![*state],
                    ..$q.clone()
                };
                qb.push(format!("SELECT * FROM (SELECT {columns} FROM offering_users ou"));
                push_account_filters!(qb, one);
                qb.push($order.clone());
                qb.push(" LIMIT ").push_bind(top).push(format!(") AS s{i}"));
            }
            qb.push(") AS per_state");
            qb.push($order.replace("ou.", ""));
            qb.push(" LIMIT ")
                .push_bind($q.limit.max(0))
                .push(" OFFSET ")
                .push_bind($q.offset.max(0));
            qb.push(")");
            qb.push($order.clone());
        } else if Store::page_from_accounts_alone($q) {
            qb.push(" WHERE ou.uuid IN (SELECT ou.uuid FROM offering_users ou");
            push_account_filters!(qb, $q);
            qb.push($order.clone());
            qb.push(" LIMIT ")
                .push_bind($q.limit.max(0))
                .push(" OFFSET ")
                .push_bind($q.offset.max(0));
            qb.push(")");
            qb.push($order.clone());
        } else {
            push_account_filters!(qb, $q);
            qb.push($order.clone());
            qb.push(" LIMIT ")
                .push_bind($q.limit.max(0))
                .push(" OFFSET ")
                .push_bind($q.offset.max(0));
        }
        qb
    }};
}

impl Store {
    /// Byte order for text sort keys on both databases (PostgreSQL would otherwise use the
    /// database's collation and order differently from SQLite).
    fn binary(&self, column: &str) -> String {
        match self.backend() {
            Backend::Sqlite => column.to_owned(),
            Backend::Postgres => format!("{column} COLLATE \"C\""),
        }
    }

    fn order_by(&self, order: &[(AccountOrder, bool)]) -> String {
        let mut keys: Vec<String> = order
            .iter()
            .map(|(key, desc)| {
                let column = match key {
                    AccountOrder::Created => "ou.created".to_owned(),
                    AccountOrder::Modified => "ou.modified".to_owned(),
                    AccountOrder::Username => self.binary("ou.username"),
                    AccountOrder::UserFirstName => self.binary("COALESCE(u.first_name, '')"),
                    AccountOrder::UserLastName => self.binary("COALESCE(u.last_name, '')"),
                };
                if *desc { format!("{column} DESC") } else { column }
            })
            .collect();
        if order.is_empty() {
            keys.push(self.binary("ou.username"));
        }
        // A unique last key makes pages stable. It runs the same way as the key before it, so
        // that one index, e.g. (modified, uuid), read forwards or backwards, gives the order.
        let last_desc = order.last().is_some_and(|(_, desc)| *desc);
        keys.push(if last_desc { "ou.uuid DESC" } else { "ou.uuid" }.to_owned());
        format!(" ORDER BY {}", keys.join(", "))
    }

    // --- providers ---------------------------------------------------------------------------

    pub async fn insert_provider(&self, p: &Provider, audit: &AuditEntry) -> Result<()> {
        on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO service_providers (uuid, name, created, modified, posix_uid_min, posix_uid_max, \
                 posix_gid_min, posix_gid_max, posix_home_prefix, posix_login_shell, posix_shared_gid) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(p.uuid.0)
            .bind(&p.name)
            .bind(Ts(p.created))
            .bind(Ts(p.modified))
            .bind(p.posix.as_ref().map(|x| x.uid_min))
            .bind(p.posix.as_ref().map(|x| x.uid_max))
            .bind(p.posix.as_ref().map(|x| x.gid_min))
            .bind(p.posix.as_ref().map(|x| x.gid_max))
            .bind(p.posix.as_ref().map_or("/home/", |x| x.home_prefix.as_str()))
            .bind(p.posix.as_ref().map_or("/bin/bash", |x| x.login_shell.as_str()))
            .bind(p.posix.as_ref().and_then(|x| x.shared_gid))
            .execute(&mut *tx)
            .await?;
            crate::audit::insert!(&mut *tx, audit);
            crate::commit(tx).await?;
        });
        Ok(())
    }

    pub async fn provider(&self, uuid: ProviderUuid) -> Result<Option<Provider>> {
        let sql = format!("SELECT {PROVIDER_COLUMNS} FROM service_providers WHERE uuid = $1");
        let row: Option<ProviderRow> = on_db!(self, read, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(uuid.0)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(Provider::from))
    }

    /// Providers, by name; `only` restricts the list to those providers.
    pub async fn list_providers(&self, only: Option<&[Uuid]>) -> Result<Vec<Provider>> {
        let order = self.binary("name");
        let rows: Vec<ProviderRow> = on_db!(self, read, pool => {
            let mut qb = sqlx::QueryBuilder::new(format!("SELECT {PROVIDER_COLUMNS} FROM service_providers WHERE 1=1"));
            if let Some(only) = only {
                qb.push(" AND uuid IN (NULL");
                for u in only {
                    qb.push(", ").push_bind(*u);
                }
                qb.push(")");
            }
            qb.push(format!(" ORDER BY {order}, uuid"));
            qb.build_query_as().fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(Provider::from).collect())
    }

    /// Writes a provider's name and pool settings. False when there is no such provider.
    pub async fn update_provider(&self, p: &Provider, audit: &AuditEntry) -> Result<bool> {
        Ok(on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(
                "UPDATE service_providers SET name = $2, modified = $3, posix_uid_min = $4, posix_uid_max = $5, \
                 posix_gid_min = $6, posix_gid_max = $7, posix_home_prefix = $8, posix_login_shell = $9, \
                 posix_shared_gid = $10 WHERE uuid = $1",
            )
            .bind(p.uuid.0)
            .bind(&p.name)
            .bind(Ts(p.modified))
            .bind(p.posix.as_ref().map(|x| x.uid_min))
            .bind(p.posix.as_ref().map(|x| x.uid_max))
            .bind(p.posix.as_ref().map(|x| x.gid_min))
            .bind(p.posix.as_ref().map(|x| x.gid_max))
            .bind(p.posix.as_ref().map_or("/home/", |x| x.home_prefix.as_str()))
            .bind(p.posix.as_ref().map_or("/bin/bash", |x| x.login_shell.as_str()))
            .bind(p.posix.as_ref().and_then(|x| x.shared_gid))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 1 {
                crate::audit::insert!(&mut *tx, audit);
                crate::commit(tx).await?;
            } else {
                tx.rollback().await?;
            }
            n == 1
        }))
    }

    /// Deletes a provider that has no offerings (its managers and tokens go with it). `None`
    /// when there is no such provider, `Some(false)` when it still has offerings.
    pub async fn delete_provider(&self, uuid: ProviderUuid, audit: &AuditEntry) -> Result<Option<bool>> {
        let deleted = self.delete_provider_row(uuid, audit).await;
        // Its tokens went with it (ON DELETE CASCADE); after the commit, as for a revocation.
        self.tokens.evict_provider(uuid);
        deleted
    }

    async fn delete_provider_row(&self, uuid: ProviderUuid, audit: &AuditEntry) -> Result<Option<bool>> {
        Ok(on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            let offerings: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM offerings WHERE provider_uuid = $1")
                .bind(uuid.0)
                .fetch_one(&mut *tx)
                .await?;
            if offerings > 0 {
                let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM service_providers WHERE uuid = $1")
                    .bind(uuid.0)
                    .fetch_optional(&mut *tx)
                    .await?;
                tx.rollback().await?;
                return Ok(exists.map(|_| false));
            }
            let n = sqlx::query("DELETE FROM service_providers WHERE uuid = $1")
                .bind(uuid.0)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 1 {
                crate::audit::insert!(&mut *tx, audit);
                crate::commit(tx).await?;
                Some(true)
            } else {
                tx.rollback().await?;
                None
            }
        }))
    }

    /// Makes `user` a manager of `provider`. False when they already were one.
    pub async fn add_provider_manager(
        &self,
        provider: ProviderUuid,
        user: Uuid,
        at: OffsetDateTime,
        audit: &AuditEntry,
    ) -> Result<bool> {
        Ok(on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(
                "INSERT INTO provider_managers (provider_uuid, user_uuid, created) VALUES ($1, $2, $3) \
                 ON CONFLICT (provider_uuid, user_uuid) DO NOTHING",
            )
            .bind(provider.0)
            .bind(user)
            .bind(Ts(at))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 1 {
                crate::audit::insert!(&mut *tx, audit);
                crate::commit(tx).await?;
            } else {
                tx.rollback().await?;
            }
            n == 1
        }))
    }

    /// Removes `user` from the managers of `provider`. False when they were not one.
    pub async fn remove_provider_manager(
        &self,
        provider: ProviderUuid,
        user: Uuid,
        audit: &AuditEntry,
    ) -> Result<bool> {
        Ok(on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query("DELETE FROM provider_managers WHERE provider_uuid = $1 AND user_uuid = $2")
                .bind(provider.0)
                .bind(user)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 1 {
                crate::audit::insert!(&mut *tx, audit);
                crate::commit(tx).await?;
            } else {
                tx.rollback().await?;
            }
            n == 1
        }))
    }

    /// The providers `user` manages.
    pub async fn managed_providers(&self, user: Uuid) -> Result<Vec<Uuid>> {
        Ok(on_db!(self, read, pool => {
            sqlx::query_scalar("SELECT provider_uuid FROM provider_managers WHERE user_uuid = $1 ORDER BY provider_uuid")
                .bind(user)
                .fetch_all(pool)
                .await?
        }))
    }

    /// The managers of `provider` (user UUIDs).
    pub async fn provider_managers(&self, provider: ProviderUuid) -> Result<Vec<Uuid>> {
        Ok(on_db!(self, read, pool => {
            sqlx::query_scalar("SELECT user_uuid FROM provider_managers WHERE provider_uuid = $1 ORDER BY user_uuid")
                .bind(provider.0)
                .fetch_all(pool)
                .await?
        }))
    }

    // --- offerings ---------------------------------------------------------------------------

    /// Inserts an offering. `Duplicate("slug")` when the slug is taken.
    pub async fn insert_offering(&self, o: &Offering, audit: &AuditEntry) -> Result<()> {
        on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO offerings (uuid, provider_uuid, name, slug, type, provider_can_create, username_policy, \
                 username_policy_generated, username_prefix, username_claim, created, modified, posix_uid_min, \
                 posix_uid_max, posix_gid_min, posix_gid_max, posix_home_prefix, posix_login_shell, posix_shared_gid, \
                 posix_pool) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
            )
            .bind(o.uuid.0)
            .bind(o.provider_uuid.0)
            .bind(&o.name)
            .bind(&o.slug)
            .bind(&o.kind)
            .bind(o.provider_can_create)
            .bind(stored_policy(o.username_policy).0)
            .bind(stored_policy(o.username_policy).1)
            .bind(&o.username_prefix)
            .bind(o.username_claim.as_str())
            .bind(Ts(o.created))
            .bind(Ts(o.modified))
            .bind(own_posix(o).map(|p| p.uid_min))
            .bind(own_posix(o).map(|p| p.uid_max))
            .bind(own_posix(o).map(|p| p.gid_min))
            .bind(own_posix(o).map(|p| p.gid_max))
            .bind(own_posix(o).map_or("/home/", |p| p.home_prefix.as_str()))
            .bind(own_posix(o).map_or("/bin/bash", |p| p.login_shell.as_str()))
            .bind(own_posix(o).and_then(|p| p.shared_gid))
            .bind(o.posix_pool.as_str())
            .execute(&mut *tx)
            .await;
            if let Err(e) = inserted {
                tx.rollback().await?;
                return Err(StoreError::unique_as(e, "slug", "slug"));
            }
            crate::audit::insert!(&mut *tx, audit);
            crate::commit(tx).await?;
        });
        Ok(())
    }

    pub async fn offering(&self, uuid: OfferingUuid) -> Result<Option<Offering>> {
        let sql = format!("SELECT {OFFERING_COLUMNS} FROM {OFFERING_FROM} WHERE o.uuid = $1");
        let row: Option<OfferingRow> = on_db!(self, read, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(uuid.0).fetch_optional(pool).await?
        });
        row.map(OfferingRow::into_offering).transpose()
    }

    /// Offerings by name; `providers` restricts the list to those providers' offerings.
    pub async fn list_offerings(&self, providers: Option<&[Uuid]>) -> Result<Vec<Offering>> {
        let order = self.binary("o.name");
        let rows: Vec<OfferingRow> = on_db!(self, read, pool => {
            let mut qb = sqlx::QueryBuilder::new(format!("SELECT {OFFERING_COLUMNS} FROM {OFFERING_FROM} WHERE 1=1"));
            if let Some(only) = providers {
                qb.push(" AND o.provider_uuid IN (NULL");
                for u in only {
                    qb.push(", ").push_bind(*u);
                }
                qb.push(")");
            }
            qb.push(format!(" ORDER BY {order}, o.uuid"));
            qb.build_query_as().fetch_all(pool).await?
        });
        rows.into_iter().map(OfferingRow::into_offering).collect()
    }

    /// Writes an offering's mutable fields. False when there is no such offering.
    pub async fn update_offering(&self, o: &Offering, audit: &AuditEntry) -> Result<bool> {
        Ok(on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            let updated = sqlx::query(
                "UPDATE offerings SET name = $2, slug = $3, type = $4, provider_can_create = $5, username_policy = $6, \
                 username_policy_generated = $7, username_prefix = $8, username_claim = $9, modified = $10, \
                 posix_uid_min = $11, posix_uid_max = $12, posix_gid_min = $13, posix_gid_max = $14, \
                 posix_home_prefix = $15, posix_login_shell = $16, posix_shared_gid = $17, posix_pool = $18 \
                 WHERE uuid = $1",
            )
            .bind(o.uuid.0)
            .bind(&o.name)
            .bind(&o.slug)
            .bind(&o.kind)
            .bind(o.provider_can_create)
            .bind(stored_policy(o.username_policy).0)
            .bind(stored_policy(o.username_policy).1)
            .bind(&o.username_prefix)
            .bind(o.username_claim.as_str())
            .bind(Ts(o.modified))
            .bind(own_posix(o).map(|p| p.uid_min))
            .bind(own_posix(o).map(|p| p.uid_max))
            .bind(own_posix(o).map(|p| p.gid_min))
            .bind(own_posix(o).map(|p| p.gid_max))
            .bind(own_posix(o).map_or("/home/", |p| p.home_prefix.as_str()))
            .bind(own_posix(o).map_or("/bin/bash", |p| p.login_shell.as_str()))
            .bind(own_posix(o).and_then(|p| p.shared_gid))
            .bind(o.posix_pool.as_str())
            .execute(&mut *tx)
            .await;
            let n = match updated {
                Ok(done) => done.rows_affected(),
                Err(e) => {
                    tx.rollback().await?;
                    return Err(StoreError::unique_as(e, "slug", "slug"));
                }
            };
            if n == 1 {
                crate::audit::insert!(&mut *tx, audit);
                crate::commit(tx).await?;
            } else {
                tx.rollback().await?;
            }
            n == 1
        }))
    }

    /// Deletes an offering that has no accounts. `None` when there is no such offering,
    /// `Some(false)` when it still has accounts.
    pub async fn delete_offering(&self, uuid: OfferingUuid, audit: &AuditEntry) -> Result<Option<bool>> {
        Ok(on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            let accounts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM offering_users WHERE offering_uuid = $1")
                .bind(uuid.0)
                .fetch_one(&mut *tx)
                .await?;
            if accounts > 0 {
                tx.rollback().await?;
                return Ok(Some(false));
            }
            let n = sqlx::query("DELETE FROM offerings WHERE uuid = $1")
                .bind(uuid.0)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 1 {
                crate::audit::insert!(&mut *tx, audit);
                crate::commit(tx).await?;
                Some(true)
            } else {
                tx.rollback().await?;
                None
            }
        }))
    }

    // --- API tokens --------------------------------------------------------------------------

    /// Stores a new token by the SHA-256 of its key.
    pub async fn insert_api_token(&self, t: &ApiToken, hash: &[u8; 32], audit: &AuditEntry) -> Result<()> {
        on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO api_tokens (uuid, provider_uuid, name, token_hash, created_by, created) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(t.uuid.0)
            .bind(t.provider_uuid.0)
            .bind(&t.name)
            .bind(&hash[..])
            .bind(&t.created_by)
            .bind(Ts(t.created))
            .execute(&mut *tx)
            .await?;
            crate::audit::insert!(&mut *tx, audit);
            crate::commit(tx).await?;
        });
        Ok(())
    }

    /// The token whose key hashes to `hash`, with the stored hash (for a constant-time check).
    pub async fn api_token_by_hash(&self, hash: &[u8; 32]) -> Result<Option<(ApiToken, Vec<u8>)>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            token: ApiTokenRow,
            token_hash: Vec<u8>,
        }
        let row: Option<Row> = on_db!(self, read, pool => {
            sqlx::query_as(
                "SELECT uuid, provider_uuid, name, created_by, created, token_hash FROM api_tokens WHERE token_hash = $1",
            )
            .bind(&hash[..])
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|r| (ApiToken::from(r.token), r.token_hash)))
    }

    pub async fn list_api_tokens(&self, provider: ProviderUuid) -> Result<Vec<ApiToken>> {
        let rows: Vec<ApiTokenRow> = on_db!(self, read, pool => {
            sqlx::query_as(
                "SELECT uuid, provider_uuid, name, created_by, created FROM api_tokens WHERE provider_uuid = $1 \
                 ORDER BY created, uuid",
            )
            .bind(provider.0)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(ApiToken::from).collect())
    }

    /// Revokes (deletes) a provider's token. False when the provider has no such token.
    pub async fn delete_api_token(
        &self,
        provider: ProviderUuid,
        token: ApiTokenUuid,
        audit: &AuditEntry,
    ) -> Result<bool> {
        let deleted = self.delete_api_token_row(provider, token, audit).await;
        // After the commit (or a failure: evicting is always safe), so that no lookup that read
        // the row before the delete can leave it cached (see `token_cache`).
        self.tokens.evict_token(token);
        deleted
    }

    async fn delete_api_token_row(
        &self,
        provider: ProviderUuid,
        token: ApiTokenUuid,
        audit: &AuditEntry,
    ) -> Result<bool> {
        Ok(on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query("DELETE FROM api_tokens WHERE uuid = $1 AND provider_uuid = $2")
                .bind(token.0)
                .bind(provider.0)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 1 {
                crate::audit::insert!(&mut *tx, audit);
                crate::commit(tx).await?;
            } else {
                tx.rollback().await?;
            }
            n == 1
        }))
    }

    // --- accounts ----------------------------------------------------------------------------

    /// Inserts a new account with its first history entry and its audit record (and event).
    /// `Duplicate("offering user")` when the person already has an account on the offering,
    /// `Duplicate("username")` when a live account of the offering already has the username.
    // The row, its first history entry, its audit record and its Unix identity: one insert.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_offering_user(
        &self,
        uuid: OfferingUserUuid,
        offering: &Offering,
        user: Uuid,
        fields: &AccountFields,
        history: &HistoryEntry,
        audit: &AuditEntry,
        posix: Option<&PosixIdentity>,
    ) -> Result<()> {
        // Created at the moment of its audit record.
        let at = audit.at;
        on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO offering_users (uuid, offering_uuid, provider_uuid, user_uuid, username, state, \
                 runtime_state, is_restricted, service_provider_comment, service_provider_comment_url, version, \
                 created, modified, uidnumber, primarygroup, login_shell, home_prefix, home_directory) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1, $11, $11, $12, $13, $14, $15, $16)",
            )
            .bind(uuid.0)
            .bind(offering.uuid.0)
            .bind(offering.provider_uuid.0)
            .bind(user)
            .bind(&fields.username)
            .bind(fields.state.as_db())
            .bind(fields.runtime_state.as_db())
            .bind(fields.is_restricted)
            .bind(&fields.comment)
            .bind(&fields.comment_url)
            .bind(Ts(at))
            .bind(posix.map(|x| x.uid))
            .bind(posix.map(|x| x.gid))
            .bind(posix.map(|x| x.login_shell.as_str()))
            .bind(posix.map(|x| x.home_prefix.as_str()))
            .bind(posix.and_then(|x| x.home_override.as_deref()))
            .execute(&mut *tx)
            .await;
            if let Err(e) = inserted {
                tx.rollback().await?;
                return Err(match StoreError::unique_as(e, "user_uuid", "offering user") {
                    StoreError::Database(e) => StoreError::unique_as(e, "username", "username"),
                    other => other,
                });
            }
            insert_history!(&mut *tx, uuid.0, history);
            crate::audit::insert!(&mut *tx, audit);
            crate::commit(tx).await?;
        });
        Ok(())
    }

    pub async fn offering_user(&self, uuid: OfferingUserUuid) -> Result<Option<Account>> {
        let sql = format!("{ACCOUNT_SELECT} WHERE ou.uuid = $1");
        let row: Option<AccountRow> = on_db!(self, read, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(uuid.0).fetch_optional(pool).await?
        });
        row.map(AccountRow::into_account).transpose()
    }

    /// The local usernames on `offering` (of any account, deleted ones included) that start
    /// with `prefix`: what a generated name must not repeat.
    pub async fn offering_usernames(&self, offering: OfferingUuid, prefix: &str) -> Result<Vec<String>> {
        let pattern = format!("{}%", like_escape(prefix));
        Ok(on_db!(self, read, pool => {
            sqlx::query_scalar(
                "SELECT username FROM offering_users WHERE offering_uuid = $1 AND username LIKE $2 ESCAPE '\\'",
            )
            .bind(offering.0)
            .bind(&pattern)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Draws the next number of `offering`'s username counter, above `at_least` (one
    /// statement, committed at once: concurrent callers never draw the same number, and no
    /// lock is held after it). None when there is no such offering.
    pub async fn next_username_number(&self, offering: OfferingUuid, at_least: i64) -> Result<Option<i64>> {
        let sql = match self.backend() {
            Backend::Sqlite => {
                "UPDATE offerings SET username_counter = MAX(username_counter, $2) + 1 WHERE uuid = $1 \
                 RETURNING username_counter"
            }
            Backend::Postgres => {
                "UPDATE offerings SET username_counter = GREATEST(username_counter, $2) + 1 WHERE uuid = $1 \
                 RETURNING username_counter"
            }
        };
        Ok(on_db!(self, write, pool => {
            sqlx::query_scalar(sql).bind(offering.0).bind(at_least).fetch_optional(pool).await?
        }))
    }

    /// Draws a uid (and, unless the offering shares one primary group, a gid) from the
    /// offering's pools: one atomic UPDATE per counter, committed at once, so concurrent
    /// creations never draw the same number and none waits for another's transaction (a number
    /// drawn for an account that is then not created is a gap).
    /// On an offering that draws from its provider's pool, `user`'s identity there instead
    /// (`provider_posix`).
    pub async fn allocate_posix(&self, offering: &Offering, user: Uuid) -> Result<PosixAllocation> {
        let Some(p) = &offering.posix else {
            return Ok(PosixAllocation::NoPool);
        };
        if offering.posix_pool == PosixPool::Provider {
            return self.provider_posix_identity(offering.provider_uuid, user, p).await;
        }
        let (uid_sql, gid_sql) = match self.backend() {
            Backend::Sqlite => (NEXT_UID_SQLITE, NEXT_GID_SQLITE),
            Backend::Postgres => (NEXT_UID_POSTGRES, NEXT_GID_POSTGRES),
        };
        let Some(uid) = self.draw(offering, uid_sql, crate::posix::UID_HELD).await? else {
            return Ok(PosixAllocation::UidPoolFull);
        };
        let gid = match p.shared_gid {
            Some(g) => Some(g),
            None => self.draw(offering, gid_sql, crate::posix::GID_HELD).await?,
        };
        Ok(match gid {
            Some(gid) => PosixAllocation::Allocated { uid, gid },
            None => PosixAllocation::GidPoolFull,
        })
    }

    /// Draws from one counter until a number no account holds (an override may have claimed
    /// one ahead of the counter: see `posix`). None when the pool is full.
    async fn draw(&self, offering: &Offering, draw_sql: &'static str, held_sql: &'static str) -> Result<Option<i64>> {
        loop {
            let n: Option<i64> = on_db!(self, write, pool => {
                sqlx::query_scalar(draw_sql).bind(offering.uuid.0).fetch_optional(pool).await?
            });
            let Some(n) = n else { return Ok(None) };
            let held: i64 = on_db!(self, write, pool => {
                sqlx::query_scalar(held_sql).bind(offering.uuid.0).bind(n).bind(Uuid::nil()).fetch_one(pool).await?
            });
            if held == 0 {
                return Ok(Some(n));
            }
        }
    }

    /// Whether any account of `offering` (of any state) holds a Unix identity.
    pub async fn offering_has_posix_accounts(&self, offering: OfferingUuid) -> Result<bool> {
        Ok(on_db!(self, read, pool => {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM offering_users WHERE offering_uuid = $1 AND uidnumber IS NOT NULL)",
            )
            .bind(offering.0)
            .fetch_one(pool)
            .await?
        }))
    }

    /// The account of `user` on `offering`, if there is one.
    pub async fn offering_user_of(&self, offering: OfferingUuid, user: Uuid) -> Result<Option<Account>> {
        let sql = format!("{ACCOUNT_SELECT} WHERE ou.offering_uuid = $1 AND ou.user_uuid = $2");
        let row: Option<AccountRow> = on_db!(self, read, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(offering.0).bind(user).fetch_optional(pool).await?
        });
        row.map(AccountRow::into_account).transpose()
    }

    /// Changes an account: read, decide, conditional write, checked by row count.
    ///
    /// `rule` sees the account and decides: refuse, change nothing, or write an
    /// [`AccountChange`]. The write applies only if the row is still at the version that was
    /// read *and* its state is still one of `allowed_from` (`UPDATE … WHERE uuid = $1 AND
    /// version = $2 AND state IN (…)`); its history entry, audit record and event are written
    /// only together with it, in the same transaction (on PostgreSQL: the same statement). When
    /// another writer got there first the row is read again and `rule` decides again: of any
    /// number of racing callers exactly one wins, and the others see the new state (for a
    /// transition, the table then refuses them). Reading outside the write keeps the write
    /// short: on PostgreSQL one round trip, on SQLite no read on the single writer, where the
    /// node's concurrent changes also commit together in one transaction (each still checked
    /// by its own row count; see `account_writes`).
    pub async fn change_offering_user<F>(&self, uuid: OfferingUserUuid, rule: F) -> Result<ChangeOutcome>
    where
        F: Fn(&Account) -> std::result::Result<Option<AccountChange>, DomainError>,
    {
        // Each lost race means another change committed; the bound only stops a pathological
        // livelock from spinning forever.
        for _ in 0..64 {
            let Some(before) = self.offering_user(uuid).await? else {
                return Ok(ChangeOutcome::NotFound);
            };
            let change = match rule(&before) {
                Err(e) => return Ok(ChangeOutcome::Refused(e)),
                Ok(None) => return Ok(ChangeOutcome::Unchanged(before)),
                Ok(Some(change)) => change,
            };
            let (fields, at) = (change.fields.clone(), change.audit.at);
            if self.write_change(before.uuid, before.version, change).await? {
                let after = before.with(&fields, at);
                return Ok(ChangeOutcome::Changed { before, after });
            }
        }
        Ok(ChangeOutcome::Refused(DomainError::conflict(
            muster_core::error::codes::CONFLICT,
            "the account keeps changing underneath; try again",
        )))
    }

    /// Writes `change` if the row is still at `version` (and in one of `change.allowed_from`).
    /// False when it is not.
    async fn write_change(&self, uuid: OfferingUserUuid, version: i64, change: AccountChange) -> Result<bool> {
        let pool = match &self.inner {
            Inner::Postgres(pool) => pool,
            // SQLite: through the node's account writer, which commits concurrent changes
            // together (see `account_writes`).
            Inner::Sqlite { write, .. } => {
                return self.account_writes.write(write, uuid, version, change).await;
            }
        };
        // One statement: the update, and the records that exist only if it applied.
        let a = &change.audit;
        let mut qb = sqlx::QueryBuilder::<sqlx::Postgres>::new("WITH u AS (");
        push_update!(qb, uuid, version, change);
        qb.push(" RETURNING uuid)");
        if let Some(h) = &change.history {
            qb.push(
                ", h AS (INSERT INTO offering_user_history (offering_user_uuid, at, actor, action, from_state, \
                 to_state, comment, comment_url, cid) SELECT uuid, ",
            )
            .push_bind(Ts(h.at))
            .push(", ")
            .push_bind(h.actor.clone())
            .push(", ")
            .push_bind(h.action.clone())
            .push(", ")
            .push_bind(h.from_state.map(|s| s.as_db()))
            .push(", ")
            .push_bind(h.to_state.as_db())
            .push(", ")
            .push_bind(h.comment.clone())
            .push(", ")
            .push_bind(h.comment_url.clone())
            .push(", ")
            .push_bind(h.cid.clone())
            .push(" FROM u)");
        }
        qb.push(
            ", a AS (INSERT INTO audit_log (at, cid, actor, current_app, remote_addr, action, target, outcome, \
             reason, details) SELECT ",
        )
        .push_bind(Ts(a.at))
        .push(", ")
        .push_bind(a.cid.clone())
        .push(", ")
        .push_bind(a.actor.clone())
        .push(", ")
        .push_bind(a.current_app.clone())
        .push(", ")
        .push_bind(a.remote_addr.clone())
        .push(", ")
        .push_bind(a.action)
        .push(", ")
        .push_bind(a.target.clone())
        .push(", ")
        .push_bind(a.outcome.as_str())
        .push(", ")
        .push_bind(a.reason.clone())
        .push(", ")
        .push_bind(sqlx::types::Json(a.details.clone()))
        .push(" FROM u)");
        if let Some(e) = &a.event {
            qb.push(", e AS (INSERT INTO events (stream, kind, subject, at, cid, data) SELECT ")
                .push_bind(e.stream)
                .push(", ")
                .push_bind(e.kind)
                .push(", ")
                .push_bind(e.subject.clone())
                .push(", ")
                .push_bind(Ts(a.at))
                .push(", ")
                .push_bind(a.cid.clone())
                .push(", ")
                .push_bind(sqlx::types::Json(e.data.clone()))
                .push(" FROM u)");
        }
        qb.push(" SELECT COUNT(*) FROM u");
        let n: i64 = qb
            .build_query_scalar()
            .fetch_one(pool)
            .await
            .map_err(|e| StoreError::unique_as(e, "username", "username"))?;
        Ok(n == 1)
    }

    /// Deletes an account row (its history goes with it; the audit log keeps the record).
    pub async fn delete_offering_user(&self, uuid: OfferingUserUuid, audit: &AuditEntry) -> Result<bool> {
        Ok(on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query("DELETE FROM offering_users WHERE uuid = $1")
                .bind(uuid.0)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 1 {
                crate::audit::insert!(&mut *tx, audit);
                crate::commit(tx).await?;
            } else {
                tx.rollback().await?;
            }
            n == 1
        }))
    }

    /// How many accounts match `q` (ignoring paging). Filters by provider, offering and state
    /// alone are answered from the tallies (`offering_user_tallies`): a few hundred rows
    /// however many accounts there are.
    pub async fn count_offering_users(&self, q: &AccountQuery) -> Result<i64> {
        if let Some(t) = q.for_tallies() {
            return Ok(on_db!(self, read, pool => {
                let mut qb = sqlx::QueryBuilder::new("SELECT COALESCE(SUM(ou.n), 0) FROM offering_user_tallies ou");
                push_account_filters!(qb, t.as_ref());
                qb.build_query_scalar().fetch_one(pool).await?
            }));
        }
        let from = if q.needs_joins() {
            "SELECT COUNT(*) FROM offering_users ou JOIN offerings o ON o.uuid = ou.offering_uuid \
             JOIN users u ON u.uuid = ou.user_uuid"
        } else {
            "SELECT COUNT(*) FROM offering_users ou"
        };
        Ok(on_db!(self, read, pool => {
            let mut qb = sqlx::QueryBuilder::new(from);
            push_account_filters!(qb, q);
            qb.build_query_scalar().fetch_one(pool).await?
        }))
    }

    /// Whether the page of `q` can be chosen from `offering_users` alone (no filter or sort key
    /// on the person or the offering).
    fn page_from_accounts_alone(q: &AccountQuery) -> bool {
        !q.needs_joins()
            && q.order
                .iter()
                .all(|(k, _)| !matches!(k, AccountOrder::UserFirstName | AccountOrder::UserLastName))
    }

    /// One page of the accounts matching `q`.
    pub async fn list_offering_users(&self, q: &AccountQuery) -> Result<Vec<Account>> {
        let order = self.order_by(&q.order);
        let rows: Vec<AccountRow> = on_db!(self, read, pool => {
            let mut qb = page_query!("", q, order);
            qb.build_query_as().fetch_all(pool).await?
        });
        rows.into_iter().map(AccountRow::into_account).collect()
    }

    /// An account's history, oldest first.
    pub async fn offering_user_history(&self, uuid: OfferingUserUuid) -> Result<Vec<HistoryEntry>> {
        let rows: Vec<HistoryRow> = on_db!(self, read, pool => {
            sqlx::query_as(
                "SELECT at, actor, action, from_state, to_state, comment, comment_url, cid FROM offering_user_history \
                 WHERE offering_user_uuid = $1 ORDER BY id",
            )
            .bind(uuid.0)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(HistoryRow::into_entry).collect()
    }

    /// Events of the `offering_users`-style `stream` after `after` whose data names one of
    /// `providers` (as hex `provider_uuid`), oldest first, at most `limit`.
    pub async fn events_after_for_providers(
        &self,
        stream: &str,
        providers: &[String],
        after: i64,
        limit: i64,
    ) -> Result<Vec<crate::EventRecord>> {
        let field = match self.backend() {
            Backend::Sqlite => "json_extract(data, '$.provider_uuid')",
            Backend::Postgres => "data->>'provider_uuid'",
        };
        Ok(on_db!(self, read, pool => {
            let mut qb = sqlx::QueryBuilder::new("SELECT seq, stream, kind, subject, at, cid, data FROM events WHERE stream = ");
            qb.push_bind(stream.to_owned()).push(" AND seq > ").push_bind(after).push(format!(" AND {field} IN (NULL"));
            for p in providers {
                qb.push(", ").push_bind(p.clone());
            }
            qb.push(") ORDER BY seq LIMIT ").push_bind(limit.max(0));
            qb.build_query_as().fetch_all(pool).await?
        }))
    }
}

impl Store {
    /// The query plan of the page query for `q` (PostgreSQL `EXPLAIN`, SQLite `EXPLAIN QUERY
    /// PLAN`), one line per row: for checking that list queries are answered from indexes.
    pub async fn explain_offering_users(&self, q: &AccountQuery) -> Result<String> {
        let postgres = self.backend() == Backend::Postgres;
        let prefix = if postgres { "EXPLAIN " } else { "EXPLAIN QUERY PLAN " };
        let order = self.order_by(&q.order);
        Ok(on_db!(self, read, pool => {
            let mut qb = page_query!(prefix, q, order);
            let rows = qb.build().fetch_all(pool).await?;
            let mut out = Vec::new();
            for row in rows {
                use sqlx::Row as _;
                // PostgreSQL: one text column; SQLite: (id, parent, notused, detail).
                let line: String = if postgres { row.try_get(0)? } else { row.try_get(3)? };
                out.push(line);
            }
            out.join("\n")
        }))
    }
}
