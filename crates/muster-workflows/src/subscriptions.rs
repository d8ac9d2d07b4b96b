//! Reading subscriptions: the domain model, lists, and which workflows may start.

use crate::Catalogue;
use muster_core::audit::{AuditEntry, RequestCtx, actions, kinds, streams};
use muster_core::error::{DomainError, codes};
use muster_core::workflow::lifecycle::{delete_blocked, start_blocked};
use muster_core::workflow::product::Block;
use muster_directory::Auth;
use muster_store::{Store, Subscription, SubscriptionQuery};
use serde_json::{Value, json};
use std::sync::Arc;
use uuid::Uuid;

fn ts(t: Option<time::OffsetDateTime>) -> Value {
    t.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .map(Value::String)
        .unwrap_or(Value::Null)
}

/// The subscription service. Who may do what is decided here (every call needs a super-user
/// today), so the REST API and the console cannot disagree; a refusal comes before anything is
/// read or parsed.
#[derive(Clone)]
pub struct Subscriptions {
    store: Store,
    catalogue: Arc<Catalogue>,
}

impl Subscriptions {
    pub fn new(store: Store, catalogue: Arc<Catalogue>) -> Self {
        Self { store, catalogue }
    }

    pub fn catalogue(&self) -> &Arc<Catalogue> {
        &self.catalogue
    }

    /// Who may read and change subscriptions.
    fn may_operate(auth: &Auth) -> Result<(), DomainError> {
        auth.require_super_user()
    }

    fn product_json(&self, product_id: Uuid) -> Value {
        self.catalogue
            .product(product_id)
            .map(|p| {
                json!({
                    "product_id": p.product_id, "name": p.name, "description": p.description,
                    "product_type": p.product_type, "tag": p.tag, "status": p.status,
                })
            })
            .unwrap_or(Value::Null)
    }

    fn base_json(&self, s: &Subscription) -> serde_json::Map<String, Value> {
        let v = json!({
            "subscription_id": s.subscription_id,
            "description": s.description,
            "status": s.status.as_str(),
            "product": self.product_json(s.product_id),
            "customer_id": s.customer_id,
            "insync": s.insync,
            "start_date": ts(s.start_date),
            "end_date": ts(s.end_date),
            "note": s.note,
            "version": s.version,
        });
        match v {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        }
    }

    /// `GET /api/subscriptions/domain-model/{id}`: the subscription with its fixed inputs and
    /// its block tree; a block owned by another subscription (a User's group) is nested with
    /// its `owner_subscription_id`.
    pub async fn domain_model(&self, auth: &Auth, id: &str) -> Result<Value, DomainError> {
        Self::may_operate(auth)?;
        let id = crate::processes::parse_id(id, "subscription")?;
        let s = self
            .store
            .subscription(id)
            .await
            .map_err(DomainError::from)?
            .ok_or_else(|| DomainError::not_found("subscription"))?;
        let mut m = self.base_json(&s);
        if let Some(p) = self.catalogue.product(s.product_id) {
            for (k, v) in &p.fixed_inputs {
                m.insert(k.clone(), json!(v));
            }
        }
        let in_use_by = self.store.in_use_by(id).await.map_err(DomainError::from)?;
        let in_use_by_ids: Vec<Uuid> = in_use_by.iter().map(|(i, _)| *i).collect();
        match &s.block {
            Block::UserGroup(b) => {
                m.insert(
                    "user_group".into(),
                    json!({
                        "name": "UserGroupBlock",
                        "subscription_instance_id": b.subscription_instance_id,
                        "owner_subscription_id": s.subscription_id,
                        "group_name": b.group_name,
                        "group_id": b.group_id,
                        "offerings": b.offerings,
                        "in_use_by_ids": in_use_by_ids,
                    }),
                );
            }
            Block::User(b) => {
                let group = match b.group {
                    Some(gid) => match self.store.subscription(gid).await.map_err(DomainError::from)? {
                        Some(Subscription {
                            block: Block::UserGroup(g),
                            ..
                        }) => json!({
                            "name": "UserGroupBlock",
                            "subscription_instance_id": g.subscription_instance_id,
                            "owner_subscription_id": gid,
                            "group_name": g.group_name,
                            "group_id": g.group_id,
                            "offerings": g.offerings,
                        }),
                        _ => Value::Null,
                    },
                    None => Value::Null,
                };
                m.insert(
                    "user".into(),
                    json!({
                        "name": "UserBlock",
                        "subscription_instance_id": b.subscription_instance_id,
                        "owner_subscription_id": s.subscription_id,
                        "username": b.username,
                        "age": b.age,
                        "user_id": b.user_id,
                        "directory_user": b.directory_user,
                        "group": group,
                        "in_use_by_ids": in_use_by_ids,
                    }),
                );
            }
        }
        m.insert("in_use_by_ids".into(), json!(in_use_by_ids));
        m.insert(
            "depends_on_ids".into(),
            json!(match &s.block {
                Block::User(b) => b.group.into_iter().collect::<Vec<_>>(),
                Block::UserGroup(_) => vec![],
            }),
        );
        m.insert("locked_by_process".into(), json!(s.locked_by_process));
        Ok(Value::Object(m))
    }

    /// A page of subscriptions and the total.
    pub async fn list(&self, auth: &Auth, q: &SubscriptionQuery) -> Result<(Vec<Value>, i64), DomainError> {
        Self::may_operate(auth)?;
        let (rows, total) = self.store.list_subscriptions(q).await.map_err(DomainError::from)?;
        let items = rows
            .into_iter()
            .map(|r| {
                json!({
                    "subscription_id": r.subscription_id,
                    "description": r.description,
                    "status": r.status,
                    "product": self.product_json(r.product_id),
                    "customer_id": r.customer_id,
                    "insync": r.insync,
                    "start_date": ts(r.start_date.map(|t| t.0)),
                    "end_date": ts(r.end_date.map(|t| t.0)),
                    "note": r.note,
                    "version": r.version,
                })
            })
            .collect();
        Ok((items, total))
    }

    /// `GET /api/subscriptions/workflows/{id}`: per target, the workflows and for each one that
    /// may not start now, the reason.
    pub async fn workflows(&self, auth: &Auth, id: &str) -> Result<Value, DomainError> {
        Self::may_operate(auth)?;
        let id = crate::processes::parse_id(id, "subscription")?;
        let s = self
            .store
            .subscription(id)
            .await
            .map_err(DomainError::from)?
            .ok_or_else(|| DomainError::not_found("subscription"))?;
        let users: Vec<_> = self
            .store
            .in_use_by(id)
            .await
            .map_err(DomainError::from)?
            .into_iter()
            .map(|(_, st)| st)
            .collect();
        let relations = self.store.depends_on_insync(id).await.map_err(DomainError::from)?;
        let product_type = s.block.product_type().as_str();
        let mut out = serde_json::Map::new();
        for key in ["create", "modify", "terminate", "system", "validate"] {
            out.insert(key.into(), json!([]));
        }
        for w in self.catalogue.workflows_for(product_type) {
            let mut entry = json!({ "name": w.name, "description": w.description });
            if let Some(reason) = start_blocked(w.target, s.status, s.insync, &users, relations) {
                entry["reason"] = json!(reason.as_str());
                entry["message"] = json!(reason.message());
                if let Some(p) = s.locked_by_process {
                    entry["locked_by_process"] = json!(p);
                }
            }
            if let Some(Value::Array(a)) = out.get_mut(&w.target.as_str().to_lowercase()) {
                a.push(entry);
            }
        }
        Ok(Value::Object(out))
    }

    /// `PUT /api/subscriptions/{id}/set_in_sync`: refused (409) while a process that is
    /// neither completed nor aborted holds the subscription.
    pub async fn set_in_sync(&self, ctx: &RequestCtx, auth: &Auth, id: &str) -> Result<(), DomainError> {
        Self::may_operate(auth)?;
        let id = crate::processes::parse_id(id, "subscription")?;
        let actor = auth.user_id();
        let actor = actor.as_str();
        if self.store.subscription(id).await.map_err(DomainError::from)?.is_none() {
            return Err(DomainError::not_found("subscription"));
        }
        let entry = AuditEntry::new(
            ctx,
            actions::SUBSCRIPTION_SET_IN_SYNC,
            Some(actor.to_owned()),
            Some(id.to_string()),
        )
        .with_event(
            streams::SUBSCRIPTIONS,
            kinds::SUBSCRIPTION_UPDATED,
            id.to_string(),
            json!({ "subscription_id": id, "insync": true }),
        );
        if !self.store.set_in_sync(id, &entry).await.map_err(DomainError::from)? {
            return Err(DomainError::conflict(
                codes::WORKFLOW_BLOCKED,
                "a process that is neither completed nor aborted holds the subscription",
            ));
        }
        Ok(())
    }

    /// `DELETE /api/subscriptions/{id}`: removes an `initial` or `terminated` subscription that
    /// nothing uses or holds (see `delete_blocked`); 409 with the reason otherwise. The directory
    /// user of a deleted User subscription stays (locked, if it was terminated): the directory
    /// is its own record.
    pub async fn delete(&self, ctx: &RequestCtx, auth: &Auth, id: &str) -> Result<(), DomainError> {
        Self::may_operate(auth)?;
        let id = crate::processes::parse_id(id, "subscription")?;
        let actor = auth.user_id();
        let actor = actor.as_str();
        let Some(s) = self.store.subscription(id).await.map_err(DomainError::from)? else {
            return Err(DomainError::not_found("subscription"));
        };
        let entry = AuditEntry::new(
            ctx,
            actions::SUBSCRIPTION_DELETE,
            Some(actor.to_owned()),
            Some(id.to_string()),
        )
        .with_event(
            streams::SUBSCRIPTIONS,
            kinds::SUBSCRIPTION_DELETED,
            id.to_string(),
            json!({ "subscription_id": id, "status": s.status.as_str() }),
        );
        if self
            .store
            .delete_subscription(id, &entry)
            .await
            .map_err(DomainError::from)?
        {
            return Ok(());
        }
        // Refused: say why, from what is stored now (it may have changed since the first read).
        let Some(now) = self.store.subscription(id).await.map_err(DomainError::from)? else {
            return Err(DomainError::not_found("subscription"));
        };
        let users = self.store.in_use_by(id).await.map_err(DomainError::from)?.len();
        // Held as the DELETE sees it: by a process that exists and is not finished.
        let held = match now.locked_by_process {
            Some(pid) => self
                .store
                .process(pid)
                .await
                .map_err(DomainError::from)?
                .is_some_and(|p| !matches!(p.last_status.as_str(), "completed" | "aborted")),
            None => false,
        };
        let reason = delete_blocked(now.status, users, held);
        let (code, err) = match reason {
            Some(r) => (
                r.as_str(),
                DomainError::conflict(codes::WORKFLOW_BLOCKED, format!("{}: {}", r.as_str(), r.message())),
            ),
            None => (
                codes::CONFLICT,
                DomainError::conflict(codes::CONFLICT, "the subscription changed meanwhile; try again"),
            ),
        };
        let refusal = AuditEntry::new(
            ctx,
            actions::SUBSCRIPTION_DELETE,
            Some(actor.to_owned()),
            Some(id.to_string()),
        )
        .failed(code);
        self.store.insert_audit(&refusal).await.map_err(DomainError::from)?;
        Err(err)
    }
}
