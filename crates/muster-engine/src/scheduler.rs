//! Scheduled tasks, stored in the database. Every node runs the scheduler; a tick fires on
//! exactly one of them because firing is a conditional UPDATE of the schedule's
//! `next_run_at` (from the due time to the next), committed together with the task's process.

use crate::definition::State;
use crate::engine::Engine;
use muster_core::audit::RequestCtx;
use muster_core::clock;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::watch;
use tracing::{info, warn};

/// The first multiple of `interval` (plus `offset`) since the epoch that is after `after`.
pub fn next_tick(after: OffsetDateTime, interval: i64, offset: i64) -> OffsetDateTime {
    let interval = interval.max(1);
    let t = after.unix_timestamp();
    let k = (t - offset).div_euclid(interval) + 1;
    OffsetDateTime::from_unix_timestamp(k * interval + offset).unwrap_or(after)
}

/// Fires due schedules once; returns how many this node fired.
pub async fn tick<D: Send + Sync + 'static>(engine: &Engine<D>) -> Result<usize, muster_store::StoreError> {
    let now = clock::now();
    let mut fired = 0;
    for s in engine.store().schedules().await? {
        let Some(due) = s.next_run_at.map(|t| t.0) else {
            engine
                .store()
                .plan_schedule(&s.name, next_tick(now, s.interval_seconds, s.offset_seconds))
                .await?;
            continue;
        };
        if due > now {
            continue;
        }
        let Some(wf) = engine.workflow(&s.workflow_name).cloned() else {
            warn!(schedule = %s.name, workflow = %s.workflow_name, "scheduled workflow is not registered");
            continue;
        };
        let next = next_tick(now, s.interval_seconds, s.offset_seconds);
        let mut tx = engine.store().begin().await?;
        let ctx = RequestCtx {
            cid: format!("schedule-{}", uuid::Uuid::new_v4()),
            ..Default::default()
        };
        let pid = match engine.start_in(&mut tx, &ctx, "scheduler", &wf, State::new()).await {
            Ok(pid) => pid,
            Err(e) => {
                warn!(schedule = %s.name, error = ?e, "could not start scheduled task");
                continue;
            }
        };
        if tx.fire_schedule(&s.name, due, next, pid, now).await? {
            tx.commit().await?;
            info!(schedule = %s.name, process_id = %pid, "scheduled task started");
            fired += 1;
        } else {
            // Another node fired this tick.
            tx.rollback().await?;
        }
    }
    if fired > 0 {
        engine.events_written();
        engine.wake();
    }
    Ok(fired)
}

/// Ticks every `every` until shutdown; also fails callbacks past their timeout.
pub async fn run<D: Send + Sync + 'static>(engine: Engine<D>, every: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(e) = tick(&engine).await {
            warn!(error = %e, "scheduler tick failed");
        }
        if let Err(e) = engine.expire_callbacks().await {
            warn!(error = %e.message, "expiring callbacks failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_align_to_interval_and_offset() {
        let t = OffsetDateTime::from_unix_timestamp(86_400 * 10 + 100).expect("time");
        assert_eq!(next_tick(t, 86_400, 600).unix_timestamp(), 86_400 * 10 + 600);
        let t = OffsetDateTime::from_unix_timestamp(86_400 * 10 + 600).expect("time");
        assert_eq!(next_tick(t, 86_400, 600).unix_timestamp(), 86_400 * 11 + 600);
        let t = OffsetDateTime::from_unix_timestamp(3_601).expect("time");
        assert_eq!(next_tick(t, 3_600, 0).unix_timestamp(), 7_200);
    }
}
