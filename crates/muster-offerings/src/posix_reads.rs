//! Reading Unix identities (Waldur's `posix_allocations` and `posix_identities`): who may read
//! what follows the accounts' own visibility.

use crate::account_input::AccountFilter;
use crate::{Actor, Offerings, store_error};
use muster_core::error::{DomainError, codes};
use muster_core::offering::lifecycle::AccountState;
use muster_core::offering::model::PosixPool;
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
    /// Whose pool: `offering`, or `provider` (the number is the person's on every offering
    /// of the provider that shares it).
    pub pool: PosixPool,
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
        let offering = self.store.offering(a.offering_uuid).await.map_err(store_error)?;
        let pool = offering.as_ref().map(|o| o.posix_pool).unwrap_or_default();
        let pools = offering.and_then(|o| o.posix);
        let shared = pools.as_ref().is_some_and(|s| s.shared_gid == Some(p.gid));
        let entry = |kind: &str, value, range: Option<(i64, i64)>, shared| PosixAllocationView {
            kind: kind.to_owned(),
            value,
            offering_uuid: a.offering_uuid.to_string(),
            offering_name: a.offering_name.clone(),
            pool,
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

/// How much of one Unix id pool is handed out.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PosixPoolUseView {
    /// `provider` (shared by the provider's offerings whose `posix_pool` is `provider`) or
    /// `offering`.
    pub pool: PosixPool,
    /// The provider's or the offering's UUID and name.
    pub uuid: String,
    pub name: String,
    pub provider_uuid: String,
    pub uid_min: i64,
    pub uid_max: i64,
    /// Numbers handed out so far, gaps included (a number is never handed out twice).
    pub uid_used: i64,
    pub uid_size: i64,
    pub gid_min: i64,
    pub gid_max: i64,
    /// Zero when every account shares `shared_gid`.
    pub gid_used: i64,
    pub gid_size: i64,
    pub shared_gid: Option<i64>,
    /// The fuller of the two pools, in percent (rounded down); new accounts are refused at 100.
    pub percent_used: i64,
}

impl Offerings {
    /// `GET /api/marketplace-posix-pools/`: every pool the caller may see (super-users: all;
    /// managers and tokens: their providers') with how much of it is handed out.
    pub async fn posix_pool_use(
        &self,
        caller: &muster_directory::Caller,
    ) -> Result<Vec<PosixPoolUseView>, DomainError> {
        let scope = self.scope(Actor::Caller(caller)).await?;
        let only = (!scope.super_user).then_some(scope.providers.as_slice());
        let rows = self.store.posix_pool_use(only).await.map_err(store_error)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let uid_size = r.uid_max - r.uid_min + 1;
                let gid_size = r.gid_max - r.gid_min + 1;
                let percent = |used: i64, size: i64| if size > 0 { used * 100 / size } else { 0 };
                let gid_percent = if r.shared_gid.is_some() {
                    0
                } else {
                    percent(r.gid_used, gid_size)
                };
                PosixPoolUseView {
                    pool: if r.scope == "provider" {
                        PosixPool::Provider
                    } else {
                        PosixPool::Offering
                    },
                    uuid: r.uuid.simple().to_string(),
                    name: r.name,
                    provider_uuid: r.provider_uuid.simple().to_string(),
                    uid_min: r.uid_min,
                    uid_max: r.uid_max,
                    uid_used: r.uid_used,
                    uid_size,
                    gid_min: r.gid_min,
                    gid_max: r.gid_max,
                    gid_used: if r.shared_gid.is_some() { 0 } else { r.gid_used },
                    gid_size,
                    shared_gid: r.shared_gid,
                    percent_used: percent(r.uid_used, uid_size).max(gid_percent),
                }
            })
            .collect())
    }
}
