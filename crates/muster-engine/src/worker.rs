//! Workers: claim queued processes and run them, woken by new work (this node's starts, other
//! nodes' `NOTIFY`) or, failing that, by a poll.

use crate::engine::{Engine, WORKER_HEARTBEAT};
use muster_core::clock;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tracing::{info, warn};

/// Runs until `shutdown` turns true; then waits for the processes it runs to stop at a step
/// boundary (their leases are released as each step commits).
pub async fn run<D: Send + Sync + 'static>(engine: Engine<D>, mut shutdown: watch::Receiver<bool>) {
    let cfg = engine.config().clone();
    let slots = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    spawn_listener(&engine, shutdown.clone());
    // Processes started on this node while a slot is free come straight here, already
    // claimed (see `Engine::start`): no claim round trip, no wake-up of the claim loop.
    let (inbox, mut handed) = tokio::sync::mpsc::unbounded_channel();
    if let Ok(mut local) = engine.inner.local.lock() {
        *local = Some(crate::engine::LocalWorker {
            slots: slots.clone(),
            inbox,
        });
    }
    let runs_handed = {
        let (engine, stop) = (engine.clone(), shutdown.clone());
        tokio::spawn(async move {
            while let Some((row, permit)) = handed.recv().await {
                let (engine, stop) = (engine.clone(), stop.clone());
                tokio::spawn(async move {
                    crate::runner::run(&engine, row, stop).await;
                    drop(permit);
                });
            }
        })
    };
    let heartbeat = spawn_heartbeat(&engine);
    info!(worker = %cfg.worker_name, concurrency = cfg.concurrency, "worker started");
    loop {
        if *shutdown.borrow() {
            break;
        }
        let free = slots.available_permits();
        if free == 0 {
            // Wait for a running process to finish (or shutdown).
            tokio::select! {
                p = slots.clone().acquire_owned() => drop(p),
                _ = shutdown.changed() => {}
            }
            continue;
        }
        if engine.paused().await.unwrap_or(false) {
            // Paused: nothing may be claimed; look again at the poll interval (or when woken,
            // e.g. by an unpause on this node) instead of spinning on work that is due.
            tokio::select! {
                _ = engine.inner.wake.notified() => {}
                _ = tokio::time::sleep(cfg.poll) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let now = clock::now();
        let lease_until = now + time::Duration::try_from(cfg.lease).unwrap_or(time::Duration::SECOND * 30);
        let claimed = match engine
            .store()
            .claim_processes(&cfg.worker_name, free as i64, now, lease_until)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "claiming processes failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let full = claimed.len() == free;
        for row in claimed {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            let (engine, stop) = (engine.clone(), shutdown.clone());
            tokio::spawn(async move {
                crate::runner::run(&engine, row, stop).await;
                drop(permit);
            });
        }
        if full {
            continue;
        }
        let sleep = next_sleep(&engine, cfg.poll).await;
        tokio::select! {
            _ = engine.inner.wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
            _ = shutdown.changed() => {}
        }
    }
    // No more hand-offs; those already sent run (and stop at once, the worker stopping).
    if let Ok(mut local) = engine.inner.local.lock() {
        *local = None;
    }
    // Let running processes reach their next step boundary.
    let _ = slots.acquire_many(cfg.concurrency.max(1) as u32).await;
    runs_handed.abort();
    heartbeat.abort();
    let stale = clock::now() - time::Duration::try_from(WORKER_FORGOTTEN).unwrap_or(time::Duration::HOUR);
    if let Err(e) = engine.store().worker_gone(&cfg.worker_name, stale).await {
        warn!(error = %e, "could not record that the worker stopped");
    }
    info!(worker = %cfg.worker_name, "worker stopped");
}

/// A worker not heard of for this long is gone (a node that died without saying so).
const WORKER_FORGOTTEN: Duration = Duration::from_secs(24 * 3600);

/// Records this worker's heartbeat until aborted, so that starts on nodes without a worker of
/// their own can tell whether any worker runs.
fn spawn_heartbeat<D: Send + Sync + 'static>(engine: &Engine<D>) -> tokio::task::JoinHandle<()> {
    let engine = engine.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(WORKER_HEARTBEAT);
        loop {
            tick.tick().await;
            if let Err(e) = engine.record_worker_heartbeat().await {
                warn!(error = %e, "could not record the worker's heartbeat");
            }
        }
    })
}

/// Until the earliest queued process becomes claimable, at most `poll`.
async fn next_sleep<D: Send + Sync + 'static>(engine: &Engine<D>, poll: Duration) -> Duration {
    match engine.store().next_run_after().await {
        Ok(Some(t)) => {
            let d = t - clock::now();
            if d <= time::Duration::ZERO {
                Duration::from_millis(20).min(poll)
            } else {
                Duration::try_from(d).unwrap_or(poll).min(poll)
            }
        }
        _ => poll,
    }
}

/// On PostgreSQL, wakes the worker when any node announces work, until `shutdown`.
fn spawn_listener<D: Send + Sync + 'static>(engine: &Engine<D>, mut shutdown: watch::Receiver<bool>) {
    let engine = engine.clone();
    tokio::spawn(async move {
        loop {
            let listening = async {
                match engine.store().work_listener().await {
                    Ok(Some(mut l)) => loop {
                        match l.recv().await {
                            Ok(()) => engine.inner.wake.notify_one(),
                            Err(e) => {
                                warn!(error = %e, "work listener lost its connection; polling until it is back");
                                return true;
                            }
                        }
                    },
                    Ok(None) => false,
                    Err(e) => {
                        warn!(error = %e, "work listener could not connect");
                        true
                    }
                }
            };
            // Stopping ends the listener quietly: its connection going away then is expected.
            tokio::select! {
                again = listening => if !again { return },
                _ = shutdown.wait_for(|s| *s) => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    });
}
