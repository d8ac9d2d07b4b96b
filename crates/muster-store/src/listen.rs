//! PostgreSQL `LISTEN` on a connection of its own.
//!
//! A listener holds its connection for as long as it listens. Taken from the store's pool, it
//! would leave the pool one connection short for queries (and a node has two listeners: work
//! and events). So each listener opens its own connection, with the pool's connect options (the
//! same server, user and `search_path`), through a one-connection pool of its own that sqlx's
//! `PgListener` reconnects through. See
//! <https://www.postgresql.org/docs/current/sql-listen.html> and
//! <https://www.postgresql.org/docs/current/sql-notify.html>.

use crate::{Result, StoreError};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use std::time::Duration;

/// What a listener heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// A notification on the channel.
    Notification,
    /// The connection was lost and is back: notifications sent meanwhile were lost.
    Reconnected,
}

/// A `LISTEN` on one channel, on a dedicated connection.
pub(crate) struct Listener {
    inner: PgListener,
    /// The store's pool: closing it (the node stopping) ends [`Listener::recv`].
    store_pool: PgPool,
}

impl Listener {
    /// Opens a connection with `pool`'s options and listens on `channel`.
    pub(crate) async fn connect(pool: &PgPool, channel: &str) -> Result<Self> {
        let own = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(10))
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with((*pool.connect_options()).clone());
        let mut inner = PgListener::connect_with(&own).await?;
        // Its own pool is never closed; the store's pool is watched instead (see `recv`).
        inner.ignore_pool_close_event(true);
        inner.listen(channel).await?;
        Ok(Self {
            inner,
            store_pool: pool.clone(),
        })
    }

    /// Waits for the next notification, or for the connection to come back after it was lost
    /// ([`Heard::Reconnected`]). An error means the connection is lost and could not be opened
    /// again (or, [`StoreError::Closed`], that the store was closed).
    pub(crate) async fn recv(&mut self) -> Result<Heard> {
        let heard = self.store_pool.close_event().do_until(self.inner.try_recv()).await;
        match heard {
            Err(_) => Err(StoreError::Closed),
            Ok(Ok(Some(_))) => Ok(Heard::Notification),
            Ok(Ok(None)) => Ok(Heard::Reconnected),
            Ok(Err(e)) => Err(e.into()),
        }
    }
}
