//! The statements a SQLite transaction holds for its next round trip (see `sqlite_tx::SqliteTx`).
//!
//! Every statement sent on its own is a hand-off to sqlx's SQLite thread and back; on the single
//! writer those hand-offs, not SQLite, bounded how many workflow steps a node ran per second. So
//! statements whose results nobody waits for are held here and sent together with the next one
//! that is waited for, or at a step's end, or with the COMMIT.

use crate::bind::{Bind, PushValue, SqlWriter, Value};
use crate::{Result, StoreError};
use sqlx::sqlite::SqliteArguments;
use sqlx::{Arguments, Sqlite};

/// Statements held for the next round trip of a SQLite transaction (see `sqlite_tx::SqliteTx`).
///
/// Each is written with its own `$1…$n` placeholders and renumbered here, after the arguments
/// already held. Only statements whose outcome is known in advance are held (nothing waits for
/// their row counts); what may fail says how its failure is reported (`may_clash`).
#[derive(Default)]
pub(crate) struct Batch {
    pub(crate) sql: String,
    pub(crate) args: SqliteArguments,
    /// How a unique violation of a held statement is reported.
    pub(crate) uniques: Vec<fn(&sqlx::Error) -> Option<StoreError>>,
    /// A statement held since the last savepoint may fail for a reason of its step's own (a
    /// taken username): the step's end sends the batch, so the failure is the step's.
    pub(crate) fallible: bool,
    /// Where the last savepoint begins while it is still held: rolling back to it just drops
    /// what follows. (Arguments are not dropped: unused trailing arguments bind nothing.)
    pub(crate) mark: Option<(usize, usize, bool)>,
    /// The first value that could not be encoded by [`PushValue`] (which cannot fail as it
    /// goes); the batch is refused when sent.
    pub(crate) unencoded: Option<sqlx::error::BoxDynError>,
}

impl Batch {
    /// Appends `sql`, its `$n` placeholders moved past the arguments already held.
    pub(crate) fn push(&mut self, sql: &str) -> &mut Self {
        let base = self.args.len();
        let mut rest = sql;
        while let Some(at) = rest.find('$') {
            self.sql.push_str(&rest[..at]);
            let digits = rest[at + 1..].bytes().take_while(u8::is_ascii_digit).count();
            match rest[at + 1..at + 1 + digits].parse::<usize>() {
                Ok(n) => {
                    use std::fmt::Write;
                    // Writing to a String cannot fail.
                    let _ = write!(self.sql, "${}", n + base);
                }
                Err(_) => self.sql.push('$'),
            }
            rest = &rest[at + 1 + digits..];
        }
        self.sql.push_str(rest);
        self.sql.push_str("; ");
        self
    }

    pub(crate) fn bind<'q, T: sqlx::Encode<'q, Sqlite> + sqlx::Type<Sqlite>>(&mut self, value: T) -> Result<&mut Self> {
        self.args
            .add(value)
            .map_err(|e| StoreError::Database(sqlx::Error::Encode(e)))?;
        Ok(self)
    }

    /// The statement just pushed may fail on a unique constraint that `map` reports.
    pub(crate) fn may_clash(&mut self, map: fn(&sqlx::Error) -> Option<StoreError>) -> &mut Self {
        self.uniques.push(map);
        self.fallible = true;
        self
    }

    pub(crate) fn savepoint(&mut self) {
        self.mark = Some((self.sql.len(), self.uniques.len(), self.fallible));
        self.sql.push_str("SAVEPOINT step; ");
        self.fallible = false;
    }

    /// Drops what follows the held savepoint; false when it was sent already.
    pub(crate) fn drop_to_mark(&mut self) -> bool {
        match self.mark.take() {
            Some((sql, uniques, fallible)) => {
                self.sql.truncate(sql);
                self.uniques.truncate(uniques);
                self.fallible = fallible;
                true
            }
            None => false,
        }
    }
}

/// Binds into a [`Batch`]; the first encoding error is kept and reported by
/// [`BatchBinder::done`].
pub(crate) struct BatchBinder<'a>(pub(crate) &'a mut Batch, pub(crate) crate::Result<()>);

impl BatchBinder<'_> {
    pub(crate) fn done(self) -> crate::Result<()> {
        self.1
    }
}

impl Bind for BatchBinder<'_> {
    fn bind_value(mut self, v: Value<'_>) -> Self {
        if self.1.is_ok() {
            self.1 = match v {
                Value::Text(t) => self.0.bind(t),
                Value::Owned(t) => self.0.bind(t),
                Value::Bool(b) => self.0.bind(b),
                Value::Int(i) => self.0.bind(i),
                Value::Time(t) => self.0.bind(t),
                Value::Json(j) => self.0.bind(sqlx::types::Json(j)),
                Value::Uuid(u) => self.0.bind(u),
            }
            .map(|_| ());
        }
        self
    }
}

/// Writing a statement into the batch piece by piece (see [`SqlWriter`]): text as it is, each
/// value as the next `$n` after the arguments already held. The statement's end is the
/// writer's to mark (`; `).
impl PushValue for Batch {
    fn push_value<'v>(&mut self, v: impl Into<Value<'v>>) -> &mut Self {
        let added = match v.into() {
            Value::Text(t) => self.args.add(t),
            Value::Owned(t) => self.args.add(t),
            Value::Bool(b) => self.args.add(b),
            Value::Int(i) => self.args.add(i),
            Value::Time(t) => self.args.add(t),
            Value::Json(j) => self.args.add(sqlx::types::Json(j)),
            Value::Uuid(u) => self.args.add(u),
        };
        if let Err(e) = added {
            self.unencoded.get_or_insert(e);
        }
        use std::fmt::Write;
        // Writing to a String cannot fail.
        let _ = write!(self.sql, "${}", self.args.len());
        self
    }

    fn push_list<'v, V: Into<Value<'v>>>(&mut self, values: impl IntoIterator<Item = V>) -> &mut Self {
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.sql.push_str(", ");
            }
            self.push_value(v);
        }
        self
    }
}

impl SqlWriter for Batch {
    fn text(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }
}

/// Holds one statement in a [`Batch`]: `hold!(batch, "… $1 … $2", a, b)`.
macro_rules! hold {
    ($batch:expr, $sql:expr $(, $v:expr)* $(,)?) => {{
        let b: &mut $crate::sqlite_batch::Batch = $batch;
        b.push($sql);
        $( b.bind($v)?; )*
        b
    }};
}
pub(crate) use hold;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_statements_are_renumbered_after_earlier_arguments() -> Result<()> {
        let mut b = Batch::default();
        hold!(&mut b, "INSERT INTO t (a, b) VALUES ($1, $2)", 1i64, 2i64);
        hold!(&mut b, "UPDATE t SET a = $2 WHERE b = $1 AND c = $10", 3i64, 4i64);
        assert_eq!(
            b.sql,
            "INSERT INTO t (a, b) VALUES ($1, $2); UPDATE t SET a = $4 WHERE b = $3 AND c = $12; "
        );
        Ok(())
    }

    #[test]
    fn a_held_savepoint_is_dropped_with_what_follows_it() -> Result<()> {
        let mut b = Batch::default();
        hold!(&mut b, "INSERT INTO t VALUES ($1)", 1i64);
        b.savepoint();
        hold!(&mut b, "INSERT INTO u VALUES ($1)", 2i64).may_clash(|_| None);
        assert!(b.fallible);
        assert!(b.drop_to_mark());
        assert_eq!(b.sql, "INSERT INTO t VALUES ($1); ");
        assert!(!b.fallible);
        assert!(b.uniques.is_empty());
        assert!(!b.drop_to_mark(), "the mark is gone once used");
        Ok(())
    }
}
