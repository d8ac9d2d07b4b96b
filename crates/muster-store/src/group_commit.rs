//! Group commit for SQLite: transactions that queue for the one write connection join the
//! SQLite transaction of the one holding it, and one COMMIT ends them all.
//!
//! Why: a node's SQLite writes all go through one connection, and under load most of a
//! commit's cost is its own: every page it dirtied written to the WAL once per commit, the
//! same hot pages (the ends of tables and indexes that every workflow step appends to) again
//! and again. Sixteen step transactions committed as one write those pages once.
//!
//! How: each [`crate::StoreTx`] on SQLite wraps its part in `SAVEPOINT tx … RELEASE tx`, so
//! that a part that fails (or loses its lease) is rolled back alone. When the holder of the
//! connection is done with its part and another `StoreTx` is waiting, the connection is
//! handed over with the transaction still open, and the holder waits for the group's
//! outcome. The last member (no one waiting, or the group at its size or age limit) sends
//! `COMMIT` and tells every member how it went. No member's `commit` returns before its
//! writes are committed, so nothing a caller reports as done can still be undone.
//!
//! Statements that use the write pool directly (the directory's one-shot writes, claims, the
//! sequencer) never see an open group: the connection goes back to the pool only after a
//! `COMMIT`, and the group limits bound how long they wait for it.
//!
//! A failure that may have ended the group's SQLite transaction behind its back (a part that
//! cannot be rolled back to its savepoint, a COMMIT that fails: a full disk, an I/O error)
//! "breaks" the group: nobody else joins it, every member is told its writes did not commit,
//! and the connection is closed (SQLite rolls back whatever is still open) rather than handed
//! on in a state nobody knows; the next writer gets a fresh one from the pool.

use crate::{Failure, Result, StoreError};
use sqlx::Sqlite;
use sqlx::pool::PoolConnection;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A group commits once it has this many members…
const GROUP_MEMBERS: usize = 64;
/// …or has been open this long, so writers outside groups wait at most about this long.
const GROUP_AGE: Duration = Duration::from_millis(20);

/// The write connection with a transaction open, passed from one member to the next.
pub(crate) struct Handover {
    pub(crate) conn: PoolConnection<Sqlite>,
    pub(crate) group: Group,
}

/// Why a group did not commit; each member turns it into its error.
#[derive(Debug, Clone)]
pub(crate) struct GroupFailure {
    kind: Failure,
    reason: String,
}

impl GroupFailure {
    pub(crate) fn of(e: &sqlx::Error) -> Self {
        Self {
            kind: Failure::of(e),
            reason: e.to_string(),
        }
    }

    pub(crate) fn into_error(self) -> StoreError {
        match self.kind {
            Failure::Full => StoreError::StorageFull(self.reason),
            Failure::Unavailable => StoreError::Unavailable(self.reason),
            Failure::Other => StoreError::CommitFailed(self.reason),
        }
    }
}

type Outcome = std::result::Result<(), GroupFailure>;

/// The members of an open group that wait for its COMMIT.
pub(crate) struct Group {
    waiting: Vec<oneshot::Sender<Outcome>>,
    members: usize,
    since: Instant,
    /// A member sent `BEGIN`: a SQLite transaction is open on the connection.
    pub(crate) open: bool,
    /// The group's transaction may have ended behind its back (see the module comment).
    /// (Boxed: it is rare, and the group travels inside every SQLite transaction.)
    pub(crate) broken: Option<Box<GroupFailure>>,
}

impl Group {
    pub(crate) fn new() -> Self {
        Self {
            waiting: Vec::new(),
            members: 0,
            since: Instant::now(),
            open: false,
            broken: None,
        }
    }

    fn full(&self) -> bool {
        self.members + 1 >= GROUP_MEMBERS || self.since.elapsed() >= GROUP_AGE
    }
}

/// Who holds the write connection inside a group, and who waits to join.
#[derive(Default)]
pub(crate) struct Relay {
    state: std::sync::Mutex<RelayState>,
}

#[derive(Default)]
struct RelayState {
    /// A `StoreTx` holds the write connection and will look at `waiting` when it is done.
    held: bool,
    /// Transactions waiting to be handed the connection (None: take it from the pool).
    waiting: VecDeque<oneshot::Sender<Option<Handover>>>,
}

impl Relay {
    fn lock(&self) -> std::sync::MutexGuard<'_, RelayState> {
        // A poisoned lock only means a panic elsewhere while it was held; the state is a flag
        // and a queue, both still meaningful.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A place in the queue of the open group, if a transaction holds the connection.
    pub(crate) fn join(&self) -> Option<oneshot::Receiver<Option<Handover>>> {
        let mut st = self.lock();
        if !st.held {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        st.waiting.push_back(tx);
        Some(rx)
    }

    /// Whether no transaction waits to join: the holder may then end the group with its own
    /// last batch (someone who comes later starts a group of its own).
    pub(crate) fn nobody_waiting(&self) -> bool {
        self.lock().waiting.is_empty()
    }

    /// The connection was taken from the pool: its holder now answers the queue.
    pub(crate) fn hold(&self) {
        self.lock().held = true;
    }

    /// The holder went away without passing the connection on (no runtime left to do it):
    /// whoever waits takes it from the pool.
    pub(crate) fn abandon(&self) {
        let waiting: Vec<_> = {
            let mut st = self.lock();
            st.held = false;
            st.waiting.drain(..).collect()
        };
        for w in waiting {
            let _ = w.send(None);
        }
    }

    /// The holder's part is over (committed into the open transaction, or rolled back): hands
    /// the connection to the next in the queue, or commits the group. Returns the group's
    /// outcome once it is known.
    ///
    /// A part that was rolled back waits for it too: it ran inside the group's transaction and
    /// may have seen what earlier members wrote and have not committed yet (a row whose unique
    /// key it then clashed with, say). Its caller may act on what it saw (read that row from
    /// another connection) only once that is committed, and must learn if it never will be.
    pub(crate) async fn pass_on(&self, mut conn: PoolConnection<Sqlite>, mut group: Group) -> Result<()> {
        if let Some(failure) = group.broken.take() {
            return self.break_up(conn, group, *failure).await;
        }
        if !group.open {
            // No transaction is open: the holder's last batch carried the group's COMMIT (or
            // nothing was begun). Every part waiting is committed, the holder's too, and they
            // learn it now: whoever comes next starts a group of its own, whose fate is not
            // theirs.
            for w in std::mem::take(&mut group.waiting) {
                let _ = w.send(Ok(()));
            }
            group = Group::new();
        }
        let (me, outcome) = oneshot::channel();
        let mine = group.open;
        if mine {
            group.waiting.push(me);
        }
        group.members += 1;
        let mut handover = Some(Handover { conn, group });
        let to_pool = {
            let mut st = self.lock();
            loop {
                let Some(h) = handover.take() else { break Vec::new() };
                if h.group.full() {
                    handover = Some(h);
                    // The group ends here; whoever waits takes the connection from the pool,
                    // after the writers that queued there.
                    st.held = false;
                    break st.waiting.drain(..).collect::<Vec<_>>();
                }
                match st.waiting.pop_front() {
                    Some(next) => {
                        if let Err(Some(back)) = next.send(Some(h)) {
                            // That one gave up waiting: try the next.
                            handover = Some(back);
                        }
                    }
                    None => {
                        handover = Some(h);
                        st.held = false;
                        break Vec::new();
                    }
                }
            }
        };
        for w in to_pool {
            let _ = w.send(None);
        }
        let Some(Handover { conn: c, group }) = handover else {
            if !mine {
                return Ok(());
            }
            // Handed over: the group's last member reports.
            return reported(outcome).await;
        };
        conn = c;
        let result = if !group.open {
            Ok(())
        } else {
            match sqlx::query("COMMIT").execute(&mut *conn).await {
                Ok(_) => Ok(()),
                Err(e) => {
                    // Whether SQLite rolled back by itself or left the transaction open, the
                    // connection is closed: nothing of the group survives, and the next writer
                    // starts on a connection in a known state.
                    tracing::warn!(error = %e, "a group commit failed; replacing the write connection");
                    conn.close_on_drop();
                    Err(GroupFailure::of(&e))
                }
            }
        };
        drop(conn);
        for w in group.waiting {
            let _ = w.send(result.clone());
        }
        if !mine {
            return Ok(());
        }
        reported(outcome).await
    }

    /// Ends a broken group: closes the connection, tells every member that nothing of it
    /// committed, and sends those queued to join to the pool for a fresh connection.
    async fn break_up(&self, mut conn: PoolConnection<Sqlite>, group: Group, failure: GroupFailure) -> Result<()> {
        conn.close_on_drop();
        drop(conn);
        let queued: Vec<_> = {
            let mut st = self.lock();
            st.held = false;
            st.waiting.drain(..).collect()
        };
        for w in queued {
            let _ = w.send(None);
        }
        for w in group.waiting {
            let _ = w.send(Err(failure.clone()));
        }
        Err(failure.into_error())
    }
}

/// What the group's last member reported about its COMMIT.
async fn reported(outcome: oneshot::Receiver<Outcome>) -> Result<()> {
    match outcome.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.into_error()),
        Err(_) => Err(StoreError::CommitFailed("the group ended without a word".into())),
    }
}
