//! Reading the audit log (super-users).

use crate::{Auth, Directory, store_error};
use muster_core::error::DomainError;
use muster_store::{AuditQuery, AuditRecord};

impl Directory {
    pub async fn list_audit(&self, auth: &Auth, query: AuditQuery) -> Result<(i64, Vec<AuditRecord>), DomainError> {
        auth.require_super_user()?;
        self.store.list_audit(&query).await.map_err(store_error)
    }
}
