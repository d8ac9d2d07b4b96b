//! An offering account's history: one entry per lifecycle move (or naming), written in the
//! transaction of the change it records.

use crate::bind::Value;
use crate::{Result, Store, StoreError, Ts, on_db};
use muster_core::offering::lifecycle::AccountState;
use muster_core::offering::model::{HistoryEntry, OfferingUserUuid};
use uuid::Uuid;

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

/// A history entry's columns, in the order [`history_values`] gives them (a macro so that the
/// statements built from it stay constants).
macro_rules! history_columns {
    () => {
        "offering_user_uuid, at, actor, action, from_state, to_state, comment, comment_url, cid"
    };
}
pub(crate) use history_columns;

pub(crate) const INSERT_HISTORY: &str = concat!(
    "INSERT INTO offering_user_history (",
    history_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
);

/// A history entry's values for `account`, in [`history_columns!`] order.
pub(crate) fn history_values(account: Uuid, h: &HistoryEntry) -> [Value<'_>; 9] {
    [
        Value::Uuid(Some(account)),
        Value::Time(Some(Ts(h.at))),
        Value::Text(h.actor.as_deref()),
        Value::Text(Some(&h.action)),
        Value::Text(h.from_state.map(|s| s.as_db())),
        Value::Text(Some(h.to_state.as_db())),
        Value::Text(Some(&h.comment)),
        Value::Text(Some(&h.comment_url)),
        Value::Text(Some(&h.cid)),
    ]
}

impl Store {
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
}
