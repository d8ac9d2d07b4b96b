//! Binding values the same way into both backends' queries and the SQLite batch.
//!
//! A table whose rows are written whole (users) lists its columns once, each with how a row
//! gives its value; its INSERT and UPDATE statements are generated from that list and its
//! values are bound by walking the same list ([`Bind`]), so a column's name, its placeholder
//! and its value cannot drift apart. (A query builder such as sea-query would give the same
//! guarantee, but would replace hand-written SQL everywhere, including the SQLite batches that
//! send several statements as one text; a list per table and one small trait keep the SQL as
//! it is.)

use crate::Ts;
use sqlx::{Database, Encode, Type};

/// One column's value, as every backend binds it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value<'a> {
    Text(Option<&'a str>),
    /// Text computed from the row (a lookup key, say).
    Owned(Option<String>),
    Bool(bool),
    Int(Option<i64>),
    Time(Option<Ts>),
    Json(&'a serde_json::Value),
    Uuid(Option<uuid::Uuid>),
}

/// Something values can be bound into: a query of either backend, or the SQLite batch.
pub(crate) trait Bind: Sized {
    fn bind_value(self, v: Value<'_>) -> Self;

    /// Binds `values` in order.
    fn bind_all<'v>(self, values: impl IntoIterator<Item = Value<'v>>) -> Self {
        values.into_iter().fold(self, |q, v| q.bind_value(v))
    }
}

impl<DB: Database> Bind for sqlx::query::Query<'_, DB, <DB as Database>::Arguments>
where
    for<'t> Option<&'t str>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<String>: Encode<'t, DB> + Type<DB>,
    for<'t> bool: Encode<'t, DB> + Type<DB>,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<Ts>: Encode<'t, DB> + Type<DB>,
    for<'t> sqlx::types::Json<&'t serde_json::Value>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<uuid::Uuid>: Encode<'t, DB> + Type<DB>,
{
    fn bind_value(self, v: Value<'_>) -> Self {
        match v {
            Value::Text(t) => self.bind(t),
            Value::Owned(t) => self.bind(t),
            Value::Bool(b) => self.bind(b),
            Value::Int(i) => self.bind(i),
            Value::Time(t) => self.bind(t),
            Value::Json(j) => self.bind(sqlx::types::Json(j)),
            Value::Uuid(u) => self.bind(u),
        }
    }
}

/// A database whose queries being built take every [`Value`]: both of muster's.
pub(crate) trait SqlDb: Database {
    fn push_bind_value(qb: &mut sqlx::QueryBuilder<Self>, v: Value<'_>);
}

impl<DB: Database> SqlDb for DB
where
    for<'t> Option<&'t str>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<String>: Encode<'t, DB> + Type<DB>,
    for<'t> bool: Encode<'t, DB> + Type<DB>,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<Ts>: Encode<'t, DB> + Type<DB>,
    for<'t> sqlx::types::Json<&'t serde_json::Value>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<uuid::Uuid>: Encode<'t, DB> + Type<DB>,
{
    fn push_bind_value(qb: &mut sqlx::QueryBuilder<Self>, v: Value<'_>) {
        match v {
            Value::Text(t) => qb.push_bind(t),
            Value::Owned(t) => qb.push_bind(t),
            Value::Bool(b) => qb.push_bind(b),
            Value::Int(i) => qb.push_bind(i),
            Value::Time(t) => qb.push_bind(t),
            Value::Json(j) => qb.push_bind(sqlx::types::Json(j)),
            Value::Uuid(u) => qb.push_bind(u),
        };
    }
}

/// Building a query with values: `qb.push(" AND x = ").push_value(v)` as with `push_bind`,
/// typed by [`Value`] so that one function serves both databases.
pub(crate) trait PushValue {
    /// One placeholder, bound to `v`.
    fn push_value<'v>(&mut self, v: impl Into<Value<'v>>) -> &mut Self;
    /// Placeholders separated by `, ` (an `IN (…)` list), bound in order.
    fn push_list<'v, V: Into<Value<'v>>>(&mut self, values: impl IntoIterator<Item = V>) -> &mut Self;
}

impl<DB: SqlDb> PushValue for sqlx::QueryBuilder<DB> {
    fn push_value<'v>(&mut self, v: impl Into<Value<'v>>) -> &mut Self {
        DB::push_bind_value(self, v.into());
        self
    }

    fn push_list<'v, V: Into<Value<'v>>>(&mut self, values: impl IntoIterator<Item = V>) -> &mut Self {
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            DB::push_bind_value(self, v.into());
        }
        self
    }
}

/// Statement text written with its values, for either database's query builder or the SQLite
/// batch: one function writes a statement for all three.
pub(crate) trait SqlWriter: PushValue {
    /// Appends `sql` as it is.
    fn text(&mut self, sql: &str) -> &mut Self;
}

impl<DB: SqlDb> SqlWriter for sqlx::QueryBuilder<DB> {
    fn text(&mut self, sql: &str) -> &mut Self {
        self.push(sql);
        self
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(s: &'a str) -> Self {
        Value::Text(Some(s))
    }
}

impl<'a> From<&'a String> for Value<'a> {
    fn from(s: &'a String) -> Self {
        Value::Text(Some(s))
    }
}

impl From<String> for Value<'_> {
    fn from(s: String) -> Self {
        Value::Owned(Some(s))
    }
}

impl From<i64> for Value<'_> {
    fn from(i: i64) -> Self {
        Value::Int(Some(i))
    }
}

impl From<bool> for Value<'_> {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<uuid::Uuid> for Value<'_> {
    fn from(u: uuid::Uuid) -> Self {
        Value::Uuid(Some(u))
    }
}

impl From<Ts> for Value<'_> {
    fn from(t: Ts) -> Self {
        Value::Time(Some(t))
    }
}

/// A LIKE pattern (with `ESCAPE '\'`) matching text that contains `s`, lower-cased: `%`, `_`
/// and `\` in `s` match only themselves.
pub(crate) fn contains_pattern(s: &str) -> String {
    format!("%{}%", like_escape(&s.to_lowercase()))
}

/// Escapes `%`, `_` and `\` for a LIKE pattern with `ESCAPE '\'`.
pub(crate) fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

/// `'a', 'b'`: an SQL list of names that come from muster-core's enums (never from input), for
/// `IN (…)` conditions whose lists are part of the statement's text.
pub(crate) fn sql_names(names: impl IntoIterator<Item = &'static str>) -> String {
    names
        .into_iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}
