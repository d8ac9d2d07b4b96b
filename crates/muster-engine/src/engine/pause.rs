//! The engine lock: pausing and resuming the engine, and its status.
//!
//! While the lock is set, starts, resumes and callbacks are refused and no worker claims a
//! process; runners stop at their next step boundary. A change reaches this node's runners at
//! once and every other node's within `PAUSE_RECHECK`.

use super::{Engine, internal};
use muster_core::audit::{AuditEntry, RequestCtx, actions};
use muster_core::clock;
use muster_core::error::{DomainError, ErrorKind, codes};
use muster_store::StoreError;
use serde_json::json;
use std::time::Duration;

/// How stale the cached engine lock may be: a pause reaches runners on every node within this.
const PAUSE_RECHECK: Duration = Duration::from_millis(200);

/// `GET /api/settings/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EngineStatus {
    pub global_lock: bool,
    /// RUNNING, PAUSING (locked, processes still finishing a step) or PAUSED.
    pub global_status: &'static str,
    pub running_processes: i64,
}

impl<D: Send + Sync + 'static> Engine<D> {
    /// Whether the engine is paused, from a cache at most `PAUSE_RECHECK` old.
    pub(crate) async fn paused(&self) -> Result<bool, StoreError> {
        if let Ok(p) = self.inner.paused.lock()
            && let (v, Some(at)) = *p
            && at.elapsed() < PAUSE_RECHECK
        {
            return Ok(v);
        }
        let v = self.inner.store.engine_locked().await?;
        if let Ok(mut p) = self.inner.paused.lock() {
            *p = (v, Some(std::time::Instant::now()));
        }
        Ok(v)
    }

    pub(super) async fn refuse_when_paused(&self) -> Result<(), DomainError> {
        if self.inner.store.engine_locked().await.map_err(internal)? {
            return Err(DomainError::new(
                ErrorKind::Unavailable,
                codes::ENGINE_PAUSED,
                "the engine is paused; try again when it runs",
            ));
        }
        Ok(())
    }

    pub async fn status(&self) -> Result<EngineStatus, DomainError> {
        let store = &self.inner.store;
        let locked = store.engine_locked().await.map_err(internal)?;
        let running = store.running_processes(clock::now()).await.map_err(internal)?;
        Ok(EngineStatus {
            global_lock: locked,
            global_status: match (locked, running) {
                (false, _) => "RUNNING",
                (true, 0) => "PAUSED",
                (true, _) => "PAUSING",
            },
            running_processes: running,
        })
    }

    /// Pauses (workers finish their current step and claim nothing new) or resumes.
    pub async fn set_paused(&self, ctx: &RequestCtx, actor: &str, paused: bool) -> Result<EngineStatus, DomainError> {
        let entry = AuditEntry::new(ctx, actions::ENGINE_SET_STATUS, Some(actor.to_owned()), None)
            .with_details(json!({ "global_lock": paused }));
        self.inner
            .store
            .set_engine_lock(paused, &entry)
            .await
            .map_err(internal)?;
        // This node's runners see the change at their next step, not when the cache expires.
        if let Ok(mut p) = self.inner.paused.lock() {
            *p = (paused, Some(std::time::Instant::now()));
        }
        if !paused {
            self.wake();
        }
        self.status().await
    }
}
