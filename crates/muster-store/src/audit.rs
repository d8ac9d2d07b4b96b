//! The audit log.

use crate::bind::{Bind, PushValue, SqlDb, Value};
use crate::{Result, Store, Ts, on_db};
use muster_core::audit::{AuditEntry, Outcome};
use serde::Serialize;
use sqlx::types::Json;
use time::OffsetDateTime;

/// The audit record's columns, in the order [`audit_values`] gives them (a macro so that the
/// statements below stay constants).
macro_rules! audit_columns {
    () => {
        "at, cid, actor, current_app, remote_addr, action, target, outcome, reason, details"
    };
}
pub(crate) use audit_columns;

/// An event's columns but `seq` (numbered by whoever writes it: see `events.rs`), in the order
/// [`event_values`] gives them.
macro_rules! event_columns {
    () => {
        "stream, kind, subject, at, cid, data"
    };
}
pub(crate) use event_columns;

pub(crate) const INSERT_AUDIT: &str = concat!(
    "INSERT INTO audit_log (",
    audit_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
);

/// An audit record's values, in [`audit_columns!`] order.
pub(crate) fn audit_values(a: &AuditEntry) -> [Value<'_>; 10] {
    [
        Value::Time(Some(Ts(a.at))),
        Value::Text(Some(&a.cid)),
        Value::Text(a.actor.as_deref()),
        Value::Text(a.current_app.as_deref()),
        Value::Text(a.remote_addr.as_deref()),
        Value::Text(Some(a.action)),
        Value::Text(a.target.as_deref()),
        Value::Text(Some(a.outcome.as_str())),
        Value::Text(a.reason.as_deref()),
        Value::Json(&a.details),
    ]
}

/// The values of the event an audit record carries, in [`event_columns!`] order.
pub(crate) fn event_values<'a>(a: &'a AuditEntry, e: &'a muster_core::audit::Event) -> [Value<'a>; 6] {
    [
        Value::Text(Some(e.stream)),
        Value::Text(Some(e.kind)),
        Value::Text(e.subject.as_deref()),
        Value::Time(Some(Ts(a.at))),
        Value::Text(Some(&a.cid)),
        Value::Json(&e.data),
    ]
}

/// Holds an audit record's insert in a SQLite batch (see `sqlite_batch::Batch`).
pub(crate) fn hold_record(b: &mut crate::sqlite_batch::Batch, a: &AuditEntry) -> Result<()> {
    b.push(INSERT_AUDIT);
    bind_audit(crate::sqlite_batch::BatchBinder(b, Ok(())), a).done()
}

/// Binds [`INSERT_AUDIT`]'s arguments, in its order, to a query or a batch.
pub(crate) fn bind_audit<B: Bind>(q: B, a: &AuditEntry) -> B {
    q.bind_all(audit_values(a))
}

/// Inserts an [`AuditEntry`] and the event it carries, if any, on a connection or transaction
/// (inside another write): one statement text, one round trip. The event is numbered at once
/// on SQLite and left to the sequencer on PostgreSQL (see [`EventInsert`]).
///
/// (Not an `async fn`: the values are bound before it returns, and the future is the driver's
/// own, so it is `Send` for whichever connection it is given.)
pub(crate) fn insert<'e, 'c: 'e, E, DB>(conn: E, a: &AuditEntry) -> BoxFuture<'e, sqlx::Result<DB::QueryResult>>
where
    DB: sqlx::Database + EventInsert,
    E: 'e + sqlx::Executor<'c, Database = DB>,
    sqlx::query::Query<'static, DB, DB::Arguments>: Bind + sqlx::Execute<'static, DB>,
{
    let q = match &a.event {
        Some(e) => sqlx::query(DB::WITH_EVENT)
            .bind_all(audit_values(a))
            .bind_all(event_values(a, e)),
        None => sqlx::query(INSERT_AUDIT).bind_all(audit_values(a)),
    };
    conn.execute(q)
}

/// What [`sqlx::Executor::execute`] returns.
type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// How [`insert`] writes an audit record with its event, per database: the record's values
/// are `$1…$10`, the event's `$11…$16`.
///
/// SQLite numbers the event in the statements that write it: every write on SQLite holds the
/// database's one write lock until it commits, so numbers follow the order of commits, and an
/// event numbered later by the sequencer could otherwise come after events that transactions
/// committed after it numbered themselves (see `tx.rs`, `hold_numbered_events`). Callers run
/// it inside a transaction, so the counter and the event commit together. PostgreSQL's
/// writers commit concurrently: its events are numbered by the sequencer, in commit order.
pub(crate) trait EventInsert {
    const WITH_EVENT: &'static str;
}

impl EventInsert for sqlx::Sqlite {
    const WITH_EVENT: &'static str = concat!(
        "INSERT INTO audit_log (",
        audit_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10); \
         INSERT INTO event_streams (stream, last_seq) VALUES ($11, 1) \
         ON CONFLICT (stream) DO UPDATE SET last_seq = last_seq + 1; \
         INSERT INTO events (",
        event_columns!(),
        ", seq) VALUES ($11, $12, $13, $14, $15, $16, (SELECT last_seq FROM event_streams WHERE stream = $11))"
    );
}

impl EventInsert for sqlx::Postgres {
    const WITH_EVENT: &'static str = concat!(
        "WITH a AS (INSERT INTO audit_log (",
        audit_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)) INSERT INTO events (",
        event_columns!(),
        ") VALUES ($11, $12, $13, $14, $15, $16)"
    );
}

/// A stored audit record.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditRecord {
    pub id: i64,
    #[serde(serialize_with = "ser_ts")]
    pub at: Ts,
    pub cid: String,
    pub actor: Option<String>,
    pub current_app: Option<String>,
    pub remote_addr: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub outcome: String,
    pub reason: Option<String>,
    pub details: Json<serde_json::Value>,
}

fn ser_ts<S: serde::Serializer>(t: &Ts, s: S) -> Result<S::Ok, S::Error> {
    time::serde::rfc3339::serialize(&t.0, s)
}

/// Filters for [`Store::list_audit`]. Newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub target: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<Outcome>,
    pub cid: Option<String>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    pub offset: i64,
    pub limit: i64,
}

fn push_audit_filters<DB: SqlDb>(qb: &mut sqlx::QueryBuilder<DB>, q: &AuditQuery) {
    qb.push(" WHERE 1=1");
    if let Some(v) = &q.actor {
        qb.push(" AND actor = ").push_value(v.clone());
    }
    if let Some(v) = &q.target {
        qb.push(" AND target = ").push_value(v.clone());
    }
    if let Some(v) = &q.action {
        qb.push(" AND action = ").push_value(v.clone());
    }
    if let Some(v) = q.outcome {
        qb.push(" AND outcome = ").push_value(v.as_str());
    }
    if let Some(v) = &q.cid {
        qb.push(" AND cid = ").push_value(v.clone());
    }
    if let Some(v) = q.since {
        qb.push(" AND at >= ").push_value(Ts(v));
    }
    if let Some(v) = q.until {
        qb.push(" AND at < ").push_value(Ts(v));
    }
}

impl Store {
    /// Writes an audit record on its own, for events that change nothing else (a refused call).
    pub async fn insert_audit(&self, audit: &AuditEntry) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.audit(audit).await?;
        tx.commit().await
    }

    pub async fn list_audit(&self, q: &AuditQuery) -> Result<(i64, Vec<AuditRecord>)> {
        Ok(on_db!(self, read, pool => {
            let mut count = sqlx::QueryBuilder::new("SELECT COUNT(*) FROM audit_log");
            push_audit_filters(&mut count, q);
            let total: i64 = count.build_query_scalar().fetch_one(pool).await?;
            let mut page = sqlx::QueryBuilder::new(
                "SELECT id, at, cid, actor, current_app, remote_addr, action, target, outcome, reason, details FROM audit_log",
            );
            push_audit_filters(&mut page, q);
            page.push(" ORDER BY id DESC LIMIT ").push_bind(q.limit.max(0)).push(" OFFSET ").push_bind(q.offset.max(0));
            (total, page.build_query_as().fetch_all(pool).await?)
        }))
    }
}
