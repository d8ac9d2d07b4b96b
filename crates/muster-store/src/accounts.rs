//! Offering accounts: inserting them and changing them.
//!
//! A change reads the row, hands it to the service's rule (a closure: the store decides
//! nothing), and writes the result with a conditional update (`… WHERE uuid = $1 AND version =
//! $2 AND state IN (allowed sources)`) checked by its row count, so of any number of concurrent
//! conflicting calls exactly one wins; a caller that lost re-reads and its rule decides again.
//! The history entry, audit record and event of a change are written only together with it.

use crate::account_history::history_values;
use crate::audit::{audit_values, event_values};
use crate::bind::{PushValue, SqlWriter, Value, like_escape};
use crate::sqlite_batch::Batch;
use crate::{Inner, Result, Store, StoreError, Ts, on_db};
use muster_core::audit::AuditEntry;
use muster_core::error::DomainError;
use muster_core::offering::lifecycle::{AccountState, RuntimeState};
use muster_core::offering::model::{
    Account, AccountFields, HistoryEntry, Offering, OfferingUserUuid, OfferingUuid, PosixIdentity, ProviderUuid,
};
use uuid::Uuid;

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

/// Inserts an account row; values from [`account_values`].
pub(crate) const INSERT_ACCOUNT: &str = "INSERT INTO offering_users (uuid, offering_uuid, provider_uuid, user_uuid, \
    username, state, runtime_state, is_restricted, service_provider_comment, service_provider_comment_url, version, \
    created, modified, uidnumber, primarygroup, login_shell, home_prefix, home_directory) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1, $11, $11, $12, $13, $14, $15, $16)";

/// [`INSERT_ACCOUNT`]'s values, in its order: a new account created at `at`.
pub(crate) fn account_values<'a>(
    uuid: OfferingUserUuid,
    offering: &Offering,
    user: Uuid,
    fields: &'a AccountFields,
    at: time::OffsetDateTime,
    posix: Option<&'a PosixIdentity>,
) -> [Value<'a>; 16] {
    [
        Value::Uuid(Some(uuid.0)),
        Value::Uuid(Some(offering.uuid.0)),
        Value::Uuid(Some(offering.provider_uuid.0)),
        Value::Uuid(Some(user)),
        Value::Text(Some(&fields.username)),
        Value::Text(Some(fields.state.as_db())),
        Value::Text(Some(fields.runtime_state.as_db())),
        Value::Bool(fields.is_restricted),
        Value::Text(Some(&fields.comment)),
        Value::Text(Some(&fields.comment_url)),
        Value::Time(Some(Ts(at))),
        Value::Int(posix.map(|x| x.uid)),
        Value::Int(posix.map(|x| x.gid)),
        Value::Text(posix.map(|x| x.login_shell.as_str())),
        Value::Text(posix.map(|x| x.home_prefix.as_str())),
        Value::Text(posix.and_then(|x| x.home_override.as_deref())),
    ]
}

/// How an account insert's unique violations are reported: the person already has an
/// account on the offering, or a live account of the offering has the username.
pub(crate) fn account_clash(e: sqlx::Error) -> StoreError {
    match StoreError::unique_as(e, "user_uuid", "offering user") {
        StoreError::Database(e) => StoreError::unique_as(e, "username", "username"),
        other => other,
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

/// Pushes the conditional update of an account change: `UPDATE offering_users SET … WHERE uuid
/// AND version AND state IN (allowed)`. The state list is always padded to the number of states
/// (repeating one), so that every change has the same statement text, whatever its sources:
/// prepared statements are cached by text, and on SQLite a batch of changes is one text.
pub(crate) fn push_update(qb: &mut impl SqlWriter, uuid: OfferingUserUuid, version: i64, change: &AccountChange) {
    let f = &change.fields;
    qb.text("UPDATE offering_users SET username = ")
        .push_value(&f.username)
        .text(", state = ")
        .push_value(f.state.as_db())
        .text(", runtime_state = ")
        .push_value(f.runtime_state.as_db())
        .text(", is_restricted = ")
        .push_value(f.is_restricted)
        .text(", service_provider_comment = ")
        .push_value(&f.comment)
        .text(", service_provider_comment_url = ")
        .push_value(&f.comment_url)
        .text(", modified = ")
        .push_value(Ts(change.audit.at))
        .text(", version = version + 1 WHERE uuid = ")
        .push_value(uuid.0)
        .text(" AND version = ")
        .push_value(version)
        .text(" AND state IN (")
        .push_list(padded_states(&change.allowed_from).map(|s| s.as_db()))
        .text(")");
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
/// that says whether it did (the last insert changed a row only if the whole chain did). Held in
/// a transaction's batch, it goes to SQLite's connection thread with the transaction's end: one
/// hand-off for the whole change.
pub(crate) fn hold_change(qb: &mut Batch, uuid: OfferingUserUuid, version: i64, change: &AccountChange) {
    let a = &change.audit;
    if let Some(e) = &a.event {
        // The stream's counter exists before the chain below starts counting changes.
        qb.text("INSERT INTO event_streams (stream, last_seq) VALUES (")
            .push_value(e.stream)
            .text(", 0) ON CONFLICT (stream) DO NOTHING; ");
    }
    push_update(qb, uuid, version, change);
    qb.text("; ");
    if let Some(h) = &change.history {
        qb.text(concat!(
            "INSERT INTO offering_user_history (",
            crate::account_history::history_columns!(),
            ") SELECT "
        ))
        .push_list(history_values(uuid.0, h))
        .text(" WHERE changes() = 1; ");
    }
    qb.text(concat!(
        "INSERT INTO audit_log (",
        crate::audit::audit_columns!(),
        ") SELECT "
    ));
    qb.push_list(audit_values(a));
    qb.text(" WHERE changes() = 1; ");
    if let Some(e) = &a.event {
        // Numbered at once, as SQLite transactions number their events (see `tx.rs`,
        // `hold_numbered_events`): this batch holds the database's write lock until it commits.
        qb.text(concat!(
            "INSERT INTO events (",
            crate::audit::event_columns!(),
            ", seq) SELECT "
        ));
        qb.push_list(event_values(a, e));
        qb.text(", (SELECT last_seq + 1 FROM event_streams WHERE stream = ")
            .push_value(e.stream)
            .text(") WHERE changes() = 1; ");
        qb.text("UPDATE event_streams SET last_seq = last_seq + 1 WHERE stream = ")
            .push_value(e.stream)
            .text(" AND changes() = 1; ");
    }
    // (Not the summed row count of the batch: SQLite reports the previous batch's count for the
    // BEGIN.)
    qb.text("SELECT changes(); ");
}

/// Pushes one account change for PostgreSQL as one statement: the conditional update, and its
/// history entry, audit record and event inserted only if it applied (each `SELECT … FROM u`,
/// the updated row); it returns how many rows were updated, 1 or 0.
pub(crate) fn push_postgres_change(
    qb: &mut sqlx::QueryBuilder<sqlx::Postgres>,
    uuid: OfferingUserUuid,
    version: i64,
    change: &AccountChange,
) {
    let a = &change.audit;
    qb.push("WITH u AS (");
    push_update(qb, uuid, version, change);
    qb.push(" RETURNING uuid)");
    if let Some(h) = &change.history {
        qb.push(concat!(
            ", h AS (INSERT INTO offering_user_history (",
            crate::account_history::history_columns!(),
            ") SELECT "
        ))
        .push_list(history_values(uuid.0, h))
        .push(" FROM u)");
    }
    qb.push(concat!(
        ", a AS (INSERT INTO audit_log (",
        crate::audit::audit_columns!(),
        ") SELECT "
    ));
    qb.push_list(audit_values(a));
    qb.push(" FROM u)");
    if let Some(e) = &a.event {
        qb.push(concat!(
            ", e AS (INSERT INTO events (",
            crate::audit::event_columns!(),
            ") SELECT "
        ));
        qb.push_list(event_values(a, e));
        qb.push(" FROM u)");
    }
    qb.push(" SELECT COUNT(*) FROM u");
}

/// Whether a change held by `StoreTx::hold_offering_user_change` applied: its `SELECT
/// changes()` is the last row of the round trip that sent it.
pub(crate) fn applied_count(rows: &[sqlx::sqlite::SqliteRow]) -> Result<i64> {
    match rows.last() {
        Some(row) => Ok(sqlx::Row::try_get(row, 0)?),
        None => Err(StoreError::Corrupt("an account change without its row count".into())),
    }
}

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

impl Store {
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
        let mut tx = self.begin().await?;
        match tx
            .insert_offering_user(uuid, offering, user, fields, history, audit, posix)
            .await
        {
            Ok(()) => tx.commit().await,
            Err(e) => {
                tx.rollback().await?;
                Err(e)
            }
        }
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
    /// by its own row count; see `group_commit`).
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
            // SQLite: with the other changes waiting, as one part of a group commit (see
            // `account_batch`).
            Inner::Sqlite { .. } => {
                return self.account_batch.write(self, uuid, version, change).await;
            }
        };
        let mut qb = sqlx::QueryBuilder::<sqlx::Postgres>::new("");
        push_postgres_change(&mut qb, uuid, version, &change);
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
                crate::audit::insert(&mut *tx, audit).await?;
                crate::commit(tx).await?;
            } else {
                tx.rollback().await?;
            }
            n == 1
        }))
    }
}
