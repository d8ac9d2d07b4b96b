//! Reading Unix identities (Waldur's `posix_allocations` and `posix_identities`): who may read
//! what follows the accounts' own visibility.

use crate::accounts::AccountFilter;
use crate::{Actor, Offerings, store_error};
use muster_core::error::{DomainError, codes};
use muster_core::offering::lifecycle::AccountState;
use serde::Serialize;
use uuid::Uuid;

/// One number an account holds, with the pool it comes from.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PosixAllocationView {
    /// `uid` or `gid`.
    pub kind: String,
    pub value: i64,
    pub offering_uuid: String,
    pub offering_name: String,
    /// The pool's range (null when the offering no longer has pools).
    pub pool_min: Option<i64>,
    pub pool_max: Option<i64>,
    /// The offering's shared primary group, not a per-user gid.
    pub shared: bool,
}

/// One account's Unix identity, as `posix_identities` lists them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PosixIdentityView {
    pub offering_user_uuid: String,
    pub offering_uuid: String,
    pub offering_name: String,
    pub username: Option<String>,
    pub state: AccountState,
    pub uidnumber: i64,
    pub primarygroup: i64,
    pub login_shell: String,
    pub home_directory: Option<String>,
}

/// More accounts than anyone has on one site's offerings; a person's identities are one page.
const MAX_IDENTITIES: i64 = 10_000;

impl Offerings {
    /// `GET …/{uuid}/posix_allocations/`: the account's uid and gid and their pools (empty
    /// without an identity); 404 when the caller cannot see the account.
    pub async fn posix_allocations(
        &self,
        caller: &muster_directory::Caller,
        uuid: &str,
    ) -> Result<Vec<PosixAllocationView>, DomainError> {
        let a = self.visible(caller, uuid).await?;
        let Some(p) = &a.posix else {
            return Ok(Vec::new());
        };
        let pools = self
            .store
            .offering(a.offering_uuid)
            .await
            .map_err(store_error)?
            .and_then(|o| o.posix);
        let shared = pools.as_ref().is_some_and(|s| s.shared_gid == Some(p.gid));
        let entry = |kind: &str, value, range: Option<(i64, i64)>, shared| PosixAllocationView {
            kind: kind.to_owned(),
            value,
            offering_uuid: a.offering_uuid.to_string(),
            offering_name: a.offering_name.clone(),
            pool_min: range.map(|r| r.0),
            pool_max: range.map(|r| r.1),
            shared,
        };
        Ok(vec![
            entry("uid", p.uid, pools.as_ref().map(|s| (s.uid_min, s.uid_max)), false),
            entry(
                "gid",
                p.gid,
                pools.as_ref().filter(|_| !shared).map(|s| (s.gid_min, s.gid_max)),
                shared,
            ),
        ])
    }

    /// `GET …/posix_identities/?user_uuid=`: the Unix identities of a person's accounts that
    /// the caller can see (400 without `user_uuid`).
    pub async fn posix_identities(
        &self,
        caller: &muster_directory::Caller,
        user_uuid: Option<&str>,
    ) -> Result<Vec<PosixIdentityView>, DomainError> {
        let user = user_uuid
            .filter(|u| !u.is_empty())
            .ok_or_else(|| DomainError::invalid_field("user_uuid", codes::INVALID_INPUT, "This field is required."))?;
        let user = Uuid::parse_str(user)
            .map_err(|_| DomainError::invalid_field("user_uuid", codes::INVALID_INPUT, "user_uuid must be a UUID"))?;
        let scope = self.scope(Actor::Caller(caller)).await?;
        let filter = AccountFilter {
            user_uuid: Some(user),
            page: 1,
            page_size: MAX_IDENTITIES,
            ..Default::default()
        };
        let list = self
            .store
            .list_offering_users(&Self::query(&scope, &filter))
            .await
            .map_err(store_error)?;
        Ok(list
            .iter()
            .filter_map(|a| {
                let p = a.posix.as_ref()?;
                Some(PosixIdentityView {
                    offering_user_uuid: a.uuid.to_string(),
                    offering_uuid: a.offering_uuid.to_string(),
                    offering_name: a.offering_name.clone(),
                    username: Some(a.username.clone()).filter(|u| !u.is_empty()),
                    state: a.state,
                    uidnumber: p.uid,
                    primarygroup: p.gid,
                    login_shell: p.login_shell.clone(),
                    home_directory: p.home_directory(&a.username),
                })
            })
            .collect())
    }
}
