//! An operator's release of a uid or gid (`POST /api/marketplace-provider-offerings/{uuid}/
//! release_posix_id/`): the one way a number handed out once may be given again. Super-users
//! only; audited as `offering.posix_release`.

use crate::providers::parse_uuid;
use crate::{Actor, Offerings, forbidden, store_error};
use muster_core::audit::{AuditEntry, RequestCtx, actions};
use muster_core::error::{DomainError, codes};
use muster_core::offering::model::{OfferingUuid, PosixPool};
use muster_store::PosixRelease;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Exactly one of the two.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleasePosixIdInput {
    pub uidnumber: Option<i64>,
    pub primarygroup: Option<i64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReleasedPosixIdView {
    pub offering_uuid: String,
    /// `uid` or `gid`.
    pub kind: String,
    pub value: i64,
}

impl Offerings {
    /// Releases a number no account holds any more (delete the account row first), so that one
    /// `set_posix_attributes` may claim it again. The counter never goes back: new accounts
    /// still get fresh numbers.
    pub async fn release_posix_id(
        &self,
        ctx: &RequestCtx,
        caller: &muster_directory::Caller,
        offering: &str,
        input: ReleasePosixIdInput,
    ) -> Result<ReleasedPosixIdView, DomainError> {
        let (kind, field, number) = match (input.uidnumber, input.primarygroup) {
            (Some(u), None) => ("uid", "uidnumber", u),
            (None, Some(g)) => ("gid", "primarygroup", g),
            _ => {
                return Err(DomainError::invalid(
                    codes::INVALID_INPUT,
                    "give exactly one of uidnumber and primarygroup",
                ));
            }
        };
        let scope = self.scope(Actor::Caller(caller)).await?;
        if !scope.is_super_user() {
            return Err(forbidden());
        }
        let offering = OfferingUuid(parse_uuid("uuid", offering).map_err(|_| DomainError::not_found("offering"))?);
        let shared = self
            .store
            .offering(offering)
            .await
            .map_err(store_error)?
            .is_some_and(|o| o.posix_pool == PosixPool::Provider);
        if shared {
            // A provider pool's numbers are a person's identity on all the provider's
            // offerings, kept for ever; there is nothing per offering to release.
            return Err(DomainError::invalid(
                codes::INVALID_OPERATION,
                "the offering draws from its provider's shared pool, whose numbers stay with their person",
            ));
        }
        let audit = AuditEntry::new(
            &caller.ctx(ctx.clone()),
            actions::OFFERING_POSIX_RELEASE,
            Some(caller.actor()),
            Some(offering.to_string()),
        )
        .with_details(json!({"kind": kind, "value": number}));
        let bad = |msg: String| DomainError::invalid_field(field, codes::INVALID_INPUT, msg);
        match self
            .store
            .release_posix_id(offering, kind, number, &audit)
            .await
            .map_err(store_error)?
        {
            PosixRelease::Released => Ok(ReleasedPosixIdView {
                offering_uuid: offering.to_string(),
                kind: kind.to_owned(),
                value: number,
            }),
            PosixRelease::NoPool => Err(DomainError::not_found("offering")),
            PosixRelease::Held => Err(DomainError::conflict(
                "posix_id_held",
                format!(
                    "{kind} {number} is held by an account (deleted accounts keep theirs): delete that account first"
                ),
            )),
            PosixRelease::NotHandedOut => Err(bad(format!("{kind} {number} was never handed out: nothing to release"))),
            PosixRelease::AlreadyReleased => Err(DomainError::conflict(
                "posix_id_released",
                format!("{kind} {number} is already released"),
            )),
        }
    }
}
