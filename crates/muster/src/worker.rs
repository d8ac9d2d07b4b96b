//! `muster worker`: the engine without HTTP. It numbers its steps' events itself (the event
//! sequencer, woken by its own commits; on PostgreSQL one node's sequencer runs at a time and
//! announces what it numbered to every node), so that followers on `serve` nodes see them at
//! once rather than at a `serve` node's next sequencer tick.

use crate::runtime;
use crate::settings::Resolved;
use anyhow::Result;
use std::time::Duration;

pub async fn run(resolved: Resolved) -> Result<()> {
    runtime::init_logging(resolved.json_logs);
    let directory = runtime::directory(&resolved).await?;
    let (engine, _) = runtime::engine(&resolved, &directory, resolved.worker_concurrency.max(1)).await?;
    let events = muster_server::events::EventHub::default();
    events.spawn_sequencer(directory.store().clone());
    engine.on_events(move || events.wake())?;
    // Seen by every node before it says it runs: a start elsewhere right after this line does
    // not warn that no worker runs. (The worker's own heartbeat goes on from here.)
    if let Err(e) = engine.record_worker_heartbeat().await {
        tracing::warn!(error = %e, "could not record the worker's first heartbeat");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(muster_engine::worker::run(engine.clone(), stop_rx.clone()));
    let scheduler = tokio::spawn(muster_engine::scheduler::run(
        engine,
        Duration::from_secs(resolved.scheduler_tick_secs),
        stop_rx,
    ));
    println!("muster worker running");
    crate::serve::shutdown().await;
    let _ = stop_tx.send(true);
    let _ = worker.await;
    let _ = scheduler.await;
    directory.store().close().await;
    Ok(())
}
