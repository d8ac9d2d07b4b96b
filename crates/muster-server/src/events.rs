//! The event hub: runs the sequencer and wakes followers.
//!
//! Writes anywhere in this process wake the sequencer at once (see `middleware::wake_sequencer`);
//! a slow tick also picks up events written by other nodes or the command line. Followers of
//! the stream are woken whenever this node's sequencer has numbered something and, on
//! PostgreSQL, whenever any node's has: a sequencer that numbered events sends `NOTIFY` on the
//! events channel, which [`EventHub::spawn_listener`] `LISTEN`s to on a connection of its own.
//! Followers treat a wake-up as a hint (they read `seq > cursor`) and otherwise look for
//! themselves every second, which covers a listener whose connection is lost.

use muster_store::{Store, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// How often the sequencer looks without being woken.
const IDLE_TICK: Duration = Duration::from_millis(500);
/// How long the sequencer waits after a wake-up before numbering.
const GATHER: Duration = Duration::from_millis(20);
/// Events numbered per sequencer transaction.
const BATCH: i64 = 1000;
/// How often a woken sequencer tries again while another node's holds the lock (that pass may
/// have started before this node's write committed, and left its events for this one).
const BUSY_RETRIES: u32 = 25;
/// The first and the longest wait before a lost events listener connects again.
const RECONNECT_FIRST: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct EventHub {
    wake_sequencer: Arc<Notify>,
    numbered: watch::Sender<u64>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self {
            wake_sequencer: Arc::new(Notify::new()),
            numbered: watch::Sender::new(0),
        }
    }
}

impl EventHub {
    /// Something was written: number its events now rather than at the next tick.
    pub fn wake(&self) {
        self.wake_sequencer.notify_one();
    }

    /// Changes whenever a sequencer numbered events (or may have: a hint, see the module).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.numbered.subscribe()
    }

    /// Wakes the followers.
    fn numbered(&self) {
        self.numbered.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// On PostgreSQL, wakes followers whenever any node's sequencer announces numbered events,
    /// until the store is closed; a lost connection is opened again with backoff (followers
    /// poll meanwhile). Does nothing on SQLite.
    pub fn spawn_listener(&self, store: Store) -> tokio::task::JoinHandle<()> {
        let hub = self.clone();
        tokio::spawn(async move {
            let mut backoff = RECONNECT_FIRST;
            let mut lost = false;
            loop {
                match store.event_listener().await {
                    Ok(None) => return,
                    Ok(Some(mut listener)) => {
                        if lost {
                            tracing::info!("the events listener is connected again");
                            // Announcements sent meanwhile were lost.
                            hub.numbered();
                        }
                        backoff = RECONNECT_FIRST;
                        loop {
                            match listener.recv().await {
                                Ok(muster_store::Heard::Notification) => hub.numbered(),
                                Ok(muster_store::Heard::Reconnected) => {
                                    tracing::warn!("the events listener lost its connection and opened another");
                                    hub.numbered();
                                }
                                Err(StoreError::Closed) => return,
                                Err(e) => {
                                    tracing::warn!(error = %e, "the events listener lost its connection; followers poll every second until it is back");
                                    break;
                                }
                            }
                        }
                    }
                    Err(_) if store.is_closed() => return,
                    Err(e) => tracing::warn!(
                        error = %e,
                        retry_in_ms = backoff.as_millis() as u64,
                        "the events listener could not connect; followers poll every second until it does"
                    ),
                }
                lost = true;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_MAX);
            }
        })
    }

    /// Runs the sequencer until the process ends or the store is closed.
    pub fn spawn_sequencer(&self, store: Store) -> tokio::task::JoinHandle<()> {
        let hub = self.clone();
        tokio::spawn(async move {
            let mut woken = false;
            let mut busy = 0;
            loop {
                match store.try_sequence_events(BATCH).await {
                    Ok(Some(n)) if n > 0 || woken => {
                        // Woken by a write: followers look even if this pass numbered nothing
                        // (on SQLite, transactions number their own events as they commit).
                        hub.numbered();
                        if n as i64 == BATCH {
                            continue; // more may be waiting
                        }
                    }
                    Ok(None) if woken && busy < BUSY_RETRIES => {
                        // Another node's sequencer is numbering; this node's write may have
                        // committed too late for that pass.
                        busy += 1;
                        tokio::time::sleep(GATHER).await;
                        continue;
                    }
                    Ok(_) => {}
                    // The node is stopping.
                    Err(muster_store::StoreError::Closed) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "event sequencer failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                busy = 0;
                woken = tokio::time::timeout(IDLE_TICK, hub.wake_sequencer.notified())
                    .await
                    .is_ok();
                if woken {
                    // Let a burst of commits gather: one pass numbers them all, instead of one
                    // writer transaction per commit competing with the writes themselves.
                    tokio::time::sleep(GATHER).await;
                }
            }
        })
    }
}
