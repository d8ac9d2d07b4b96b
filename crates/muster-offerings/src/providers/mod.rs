//! Service providers, their managers, offerings and provider API tokens.
//!
//! Providers and offerings are created and changed by super-users. A provider's managers (and
//! super-users) mint and revoke its API tokens; a token cannot mint tokens.
//!
//! One module per thing managed: `provider` (the provider records), `managers` (who manages a
//! provider), `offerings` (the offerings and their naming and pool settings) and `api_tokens`
//! (the agents' keys). What they share stays here: the checks of names, UUIDs and POSIX pool
//! settings, the audit record of a call, and whether a caller manages a provider.

mod api_tokens;
mod managers;
mod offerings;
mod provider;

pub use api_tokens::CreateApiTokenInput;
pub use managers::AddManagerInput;
pub use offerings::{CreateOfferingInput, UpdateOfferingInput};
pub use provider::{CreateProviderInput, UpdateProviderInput};

use crate::{Actor, Offerings};
use muster_core::audit::{AuditEntry, RequestCtx};
use muster_core::error::{DomainError, codes};
use muster_core::offering::model::{PosixSettings, ProviderUuid};
use muster_directory::Caller;

const MAX_NAME: usize = 150;

/// Largest uid/gid muster hands out (2^31 - 2: `-1` and `2^31 - 1` mean "none" to some tools).
const MAX_ID: i64 = (1 << 31) - 2;

fn check_posix(p: PosixSettings) -> Result<PosixSettings, DomainError> {
    let bad = |msg: &str| DomainError::invalid_field("posix_settings", codes::INVALID_INPUT, msg.to_owned());
    let range = |min: i64, max: i64| (1..=MAX_ID).contains(&min) && (min..=MAX_ID).contains(&max);
    if !range(p.uid_min, p.uid_max) || !range(p.gid_min, p.gid_max) {
        return Err(bad(&format!("each range needs 1 <= min <= max <= {MAX_ID}")));
    }
    if p.shared_gid.is_some_and(|g| !(0..=MAX_ID).contains(&g)) {
        return Err(bad("shared_gid is out of range"));
    }
    let path =
        |v: &str| v.starts_with('/') && v.len() <= 255 && !v.contains("..") && v.chars().all(|c| c.is_ascii_graphic());
    if !path(&p.home_prefix) || !p.home_prefix.ends_with('/') {
        return Err(bad("home_prefix must be an absolute path ending with /"));
    }
    if !path(&p.login_shell) || p.login_shell.ends_with('/') {
        return Err(bad("login_shell must be an absolute path"));
    }
    Ok(p)
}

fn check_name(field: &str, name: &str) -> Result<String, DomainError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(DomainError::invalid_field(
            field,
            codes::INVALID_INPUT,
            format!("{field} must be 1 to {MAX_NAME} printable characters"),
        ));
    }
    Ok(name.to_owned())
}

pub(crate) fn parse_uuid(field: &str, text: &str) -> Result<uuid::Uuid, DomainError> {
    uuid::Uuid::parse_str(text.trim())
        .map_err(|_| DomainError::invalid_field(field, codes::INVALID_INPUT, format!("{field} must be a UUID")))
}

fn provider_not_found() -> DomainError {
    DomainError::not_found("service provider")
}

impl Offerings {
    fn entry(ctx: &RequestCtx, caller: &Caller, action: &'static str, target: String) -> AuditEntry {
        AuditEntry::new(&caller.ctx(ctx.clone()), action, Some(caller.actor()), Some(target))
    }

    /// Whether `caller` manages `provider` (super-users manage all).
    async fn manages(&self, caller: &Caller, provider: ProviderUuid) -> Result<bool, DomainError> {
        let scope = self.scope(Actor::Caller(caller)).await?;
        Ok(scope.can_manage(provider.0))
    }
}
