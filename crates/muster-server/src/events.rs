//! The event hub: runs the sequencer and wakes followers.
//!
//! Writes anywhere in this process wake the sequencer at once (see `middleware::wake_sequencer`);
//! a slow tick also picks up events written by other nodes or the command line. Followers of
//! the stream are woken whenever the sequencer has numbered something, and otherwise look for
//! themselves every second (events numbered by another node's sequencer).

use muster_store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// How often the sequencer looks without being woken.
const IDLE_TICK: Duration = Duration::from_millis(500);
/// How long the sequencer waits after a wake-up before numbering.
const GATHER: Duration = Duration::from_millis(20);
/// Events numbered per sequencer transaction.
const BATCH: i64 = 1000;

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

    /// Changes whenever the sequencer numbered events.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.numbered.subscribe()
    }

    /// Runs the sequencer until the process ends or the store is closed.
    pub fn spawn_sequencer(&self, store: Store) -> tokio::task::JoinHandle<()> {
        let hub = self.clone();
        tokio::spawn(async move {
            let mut woken = false;
            loop {
                match store.sequence_events(BATCH).await {
                    Ok(n) if n > 0 || woken => {
                        // Woken by a write: followers look even if this pass numbered nothing
                        // (on SQLite, transactions number their own events as they commit).
                        hub.numbered.send_modify(|v| *v = v.wrapping_add(1));
                        if n as i64 == BATCH {
                            continue; // more may be waiting
                        }
                    }
                    Ok(_) => {}
                    // The node is stopping.
                    Err(muster_store::StoreError::Closed) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "event sequencer failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
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
