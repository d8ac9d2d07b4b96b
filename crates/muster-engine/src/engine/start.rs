//! Starting a process: the start form, the subscription it holds, the process row queued or
//! handed straight to this node's worker.
//!
//! A start commits the process, its hold on its subscription, its audit record and its events
//! in one transaction: a 2xx means all of them committed, and a refused start holds nothing
//! and is audited as refused.

use super::{Engine, StartError};
use crate::definition::{INIT, State, Workflow};
use muster_core::audit::{AuditEntry, Event, RequestCtx, actions, kinds, streams};
use muster_core::clock;
use muster_core::error::{DomainError, codes};
use muster_core::workflow::Target;
use muster_core::workflow::form::FormRun;
use muster_core::workflow::lifecycle::{BlockReason, start_blocked};
use muster_store::{NewProcess, StoreTx};
use serde_json::{Value, json};
use uuid::Uuid;

/// A free slot of this node's worker, taken for a process about to start.
struct Handoff {
    permit: tokio::sync::OwnedSemaphorePermit,
    inbox: tokio::sync::mpsc::UnboundedSender<(muster_store::ProcessRow, tokio::sync::OwnedSemaphorePermit)>,
}

impl<D: Send + Sync + 'static> Engine<D> {
    /// Runs a start form over `inputs` without starting anything: the next page, the
    /// validation errors, or the complete input.
    pub async fn run_start_form(&self, name: &str, inputs: Vec<Value>) -> Result<State, StartError> {
        let wf = self
            .workflow(name)
            .ok_or_else(|| DomainError::not_found("workflow"))?
            .clone();
        let mut run = FormRun::new(inputs);
        if let Some(form) = wf.form {
            form(&self.inner.deps, &State::new(), &mut run).await?;
        }
        run.finish().map_err(StartError::Form)
    }

    /// `POST /api/processes/{workflow}`: validates the form, stores the process (holding its
    /// subscription for modify/terminate/validate workflows) and queues it.
    pub async fn start(
        &self,
        ctx: &RequestCtx,
        actor: &str,
        name: &str,
        inputs: Vec<Value>,
    ) -> Result<Uuid, StartError> {
        let result = self.start_unaudited(ctx, actor, name, inputs).await;
        if let Err(e) = &result {
            let entry = AuditEntry::new(ctx, actions::PROCESS_START, Some(actor.to_owned()), None)
                .with_details(json!({ "workflow": name }));
            self.audit_refusal(entry, e).await;
        }
        result
    }

    async fn start_unaudited(
        &self,
        ctx: &RequestCtx,
        actor: &str,
        name: &str,
        inputs: Vec<Value>,
    ) -> Result<Uuid, StartError> {
        self.refuse_when_paused().await?;
        let state = self.run_start_form(name, inputs).await?;
        let wf = self
            .workflow(name)
            .ok_or_else(|| DomainError::not_found("workflow"))?
            .clone();
        let state = match wf.prepare {
            Some(p) => p(&self.inner.deps, state).await?,
            None => state,
        };
        let handoff = self.free_local_slot();
        let claim = handoff.as_ref().map(|_| {
            let until =
                clock::now() + time::Duration::try_from(self.inner.config.lease).unwrap_or(time::Duration::SECOND * 30);
            (self.inner.config.worker_name.clone(), until)
        });
        let mut tx = self.inner.store.begin().await?;
        let (pid, row) = self.start_claimed(&mut tx, ctx, actor, &wf, state, claim).await?;
        tx.commit().await?;
        self.events_written();
        match (handoff, row) {
            (Some(h), Some(row)) => {
                if let Err(tokio::sync::mpsc::error::SendError((row, _permit))) = h.inbox.send((row, h.permit)) {
                    // The worker stopped meanwhile: let any worker have it now rather than
                    // when the lease runs out.
                    let fence = muster_store::Fence {
                        process_id: row.process_id,
                        attempt: row.attempt,
                        worker: self.inner.config.worker_name.clone(),
                    };
                    if let Err(e) = self.inner.store.release_lease(&fence).await {
                        tracing::warn!(error = %e, "releasing a process the stopped worker was to run");
                    }
                }
            }
            _ => self.wake(),
        }
        Ok(pid)
    }

    /// Whether a workflow worker runs anywhere: this node's, or one whose heartbeat was
    /// recorded lately. A process started when none does waits until one starts.
    pub async fn worker_alive(&self) -> bool {
        if self.inner.local.lock().is_ok_and(|l| l.is_some()) {
            return true;
        }
        let since =
            clock::now() - time::Duration::try_from(super::WORKER_HEARTBEAT * 3).unwrap_or(time::Duration::MINUTE);
        // Unknown (the database did not answer) is not reported as "no worker".
        self.inner.store.worker_seen_since(since).await.unwrap_or(true)
    }

    /// Records that this node's worker is alive now (what [`Engine::worker_alive`] reads on
    /// every node).
    pub async fn record_worker_heartbeat(&self) -> Result<(), muster_store::StoreError> {
        let cfg = self.config();
        self.inner
            .store
            .worker_alive(&cfg.worker_name, cfg.concurrency as i64, clock::now())
            .await
    }

    /// A free slot of this node's worker, if it runs and has one.
    fn free_local_slot(&self) -> Option<Handoff> {
        let local = self.inner.local.lock().ok()?;
        let w = local.as_ref()?;
        let permit = w.slots.clone().try_acquire_owned().ok()?;
        Some(Handoff {
            permit,
            inbox: w.inbox.clone(),
        })
    }

    /// Stores and queues a process inside `tx` (also used by the scheduler).
    pub(crate) async fn start_in(
        &self,
        tx: &mut StoreTx,
        ctx: &RequestCtx,
        actor: &str,
        wf: &Workflow<D>,
        state: State,
    ) -> Result<Uuid, StartError> {
        Ok(self.start_claimed(tx, ctx, actor, wf, state, None).await?.0)
    }

    /// Stores a process inside `tx`: queued, or claimed by `claim` (worker, lease end), in
    /// which case the claimed row is returned for the claimant to run.
    async fn start_claimed(
        &self,
        tx: &mut StoreTx,
        ctx: &RequestCtx,
        actor: &str,
        wf: &Workflow<D>,
        mut state: State,
        claim: Option<(String, time::OffsetDateTime)>,
    ) -> Result<(Uuid, Option<muster_store::ProcessRow>), StartError> {
        let pid = Uuid::new_v4();
        let now = clock::now();
        state.insert("process_id".into(), json!(pid));
        state.insert("reporter".into(), json!(actor));
        state.insert("workflow_name".into(), json!(wf.name));
        state.insert("workflow_target".into(), json!(wf.target.as_str()));
        let first = wf.steps.first().map(|s| s.name).unwrap_or(INIT);
        let new = NewProcess {
            process_id: pid,
            workflow_name: wf.name.to_owned(),
            workflow_version: wf.version,
            target: wf.target.as_str().to_owned(),
            is_task: wf.is_task,
            created_by: actor.to_owned(),
            assignee: "SYSTEM".to_owned(),
            state: Value::Object(state.clone()),
            next_step: first.to_owned(),
            now,
            claimed_by: claim,
        };
        tx.insert_process(&new).await?;
        if matches!(wf.target, Target::Modify | Target::Terminate | Target::Validate)
            && let Some(sid) = state.get("subscription_id").and_then(Value::as_str)
        {
            let sid: Uuid = sid
                .parse()
                .map_err(|_| DomainError::invalid_field("subscription_id", codes::INVALID_INPUT, "not a uuid"))?;
            let version = state.get("version").and_then(Value::as_i64);
            let held = tx
                .hold_subscription(
                    sid,
                    pid,
                    &muster_store::HoldTerms {
                        usable: wf.target.usable_when(),
                        no_active_users: wf.target.blocked_by_users(),
                        no_held_relations: matches!(wf.target, Target::Modify | Target::Terminate),
                        expected_version: version,
                    },
                    now,
                )
                .await?;
            if !held {
                let reason = self.why_blocked(tx, sid, wf.target, version).await?;
                return Err(DomainError::conflict(codes::WORKFLOW_BLOCKED, reason).into());
            }
            tx.link_process_subscription(pid, sid, wf.target.as_str(), now).await?;
            let event = Event {
                stream: streams::SUBSCRIPTIONS,
                kind: kinds::SUBSCRIPTION_UPDATED,
                subject: Some(sid.to_string()),
                data: json!({ "subscription_id": sid, "insync": false, "locked_by_process": pid }),
            };
            tx.event(&event, now, Some(&ctx.cid)).await?;
        }
        let entry = AuditEntry::new(
            ctx,
            actions::PROCESS_START,
            Some(actor.to_owned()),
            Some(pid.to_string()),
        )
        .with_details(json!({ "workflow": wf.name, "version": wf.version }))
        .with_event(
            streams::PROCESSES,
            kinds::PROCESS_CREATED,
            pid.to_string(),
            json!({ "process_id": pid, "workflow_name": wf.name, "last_status": "created" }),
        );
        tx.audit(&entry).await?;
        let row = new.claimed_row();
        if row.is_none() {
            tx.notify_work().await?;
        }
        Ok((pid, row))
    }

    /// Explains why a subscription could not be held.
    async fn why_blocked(
        &self,
        tx: &mut StoreTx,
        sid: Uuid,
        target: Target,
        version: Option<i64>,
    ) -> Result<String, StartError> {
        let Some(sub) = tx.subscription(sid).await? else {
            return Err(DomainError::not_found("subscription").into());
        };
        if let Some(v) = version
            && v != sub.version
        {
            return Ok(format!(
                "stale data: the subscription is at version {}, the form was filled at version {v}",
                sub.version
            ));
        }
        let users = tx.in_use_by_statuses(sid).await?;
        let relations = tx.depends_on_insync(sid).await?;
        let reason = start_blocked(target, sub.status, sub.insync, &users, relations).unwrap_or(BlockReason::NotInSync);
        let holder = sub
            .locked_by_process
            .map(|p| format!(" (held by process {p})"))
            .unwrap_or_default();
        Ok(format!("{}: {}{holder}", reason.as_str(), reason.message()))
    }
}
