//! `POST /api/marketplace-offering-users/{uuid}/set_posix_attributes/`: the site overrides an
//! account's login shell, home directory, uid or gid (Waldur's `set_posix_attributes`, in
//! `src/waldur_mastermind/marketplace/views.py` of waldur-mastermind). Out-of-pool and taken
//! ids are the caller's 400 with a field error; the store refuses ids handed out before (see
//! `muster_store::posix`).

use crate::accounts::{account_not_found, may_change};
use crate::views::event_data;
use crate::{Actor, Offerings, store_error};
use muster_core::audit::{AuditEntry, RequestCtx, actions, kinds, streams};
use muster_core::error::{DomainError, codes};
use muster_core::offering::lifecycle::AccountState;
use muster_core::offering::model::{Account, HistoryEntry, OfferingUserUuid, PosixIdentity, PosixPool};
use muster_store::PosixWrite;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The body of `set_posix_attributes`: at least one field.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PosixAttributesInput {
    /// An absolute path, e.g. `/bin/zsh`.
    pub login_shell: Option<String>,
    /// An absolute path. The home prefix and the username (the derived value) keeps following
    /// renames; any other value sticks.
    pub home_directory: Option<String>,
    /// In the offering's uid pool, held by no other account, never handed out before.
    pub uidnumber: Option<i64>,
    /// In the offering's gid pool (or its shared primary group), held by no other account,
    /// never handed out before.
    pub primarygroup: Option<i64>,
}

/// The answer of `set_posix_attributes`: Waldur's `{uidnumber, primarygroup, warnings}`, and
/// the shell and home directory.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PosixAttributesView {
    pub uidnumber: i64,
    pub primarygroup: i64,
    pub login_shell: String,
    pub home_directory: Option<String>,
    /// Advice that did not stop the change (e.g. ids that some tools treat as `nobody`).
    pub warnings: Vec<String>,
}

/// How many times a change is decided again after losing a race to another change.
const ATTEMPTS: usize = 64;

fn field(name: &str, message: impl Into<String>) -> DomainError {
    DomainError::invalid_field(name, codes::INVALID_INPUT, message)
}

/// An absolute path of printable ASCII without `..` (as the offering's `posix_settings`).
fn clean_path(name: &str, v: &str) -> Result<String, DomainError> {
    if v.starts_with('/') && v.len() <= 255 && !v.contains("..") && v.chars().all(|c| c.is_ascii_graphic()) {
        Ok(v.to_owned())
    } else {
        Err(field(
            name,
            "must be an absolute path of printable ASCII characters (no spaces, no ..), at most 255",
        ))
    }
}

/// 65534 and 65535 are `nobody`/`nogroup` or "no id" on many systems (Waldur warns likewise).
fn id_warning(what: &str, id: i64) -> Option<String> {
    matches!(id, 65534 | 65535).then(|| format!("{what} {id} is commonly reserved (nobody/nogroup or \"no id\")"))
}

impl Offerings {
    /// Overrides parts of an account's Unix identity: visible accounts only (404 otherwise),
    /// changed by the offering's provider (tokens and managers) or a super-user (403 otherwise).
    pub async fn set_posix_attributes(
        &self,
        ctx: &RequestCtx,
        caller: &muster_directory::Caller,
        uuid: &str,
        input: PosixAttributesInput,
    ) -> Result<PosixAttributesView, DomainError> {
        // The body is checked before anything is read: a bad body changes nothing.
        if input.login_shell.is_none()
            && input.home_directory.is_none()
            && input.uidnumber.is_none()
            && input.primarygroup.is_none()
        {
            return Err(DomainError::invalid(
                codes::INVALID_INPUT,
                "give at least one of login_shell, home_directory, uidnumber, primarygroup",
            ));
        }
        let shell = input
            .login_shell
            .as_deref()
            .map(|s| clean_path("login_shell", s))
            .transpose()?;
        if shell.as_deref().is_some_and(|s| s.ends_with('/')) {
            return Err(field("login_shell", "must be a file, not a directory"));
        }
        let home = input
            .home_directory
            .as_deref()
            .map(|h| clean_path("home_directory", h))
            .transpose()?;
        let uuid = OfferingUserUuid::parse(uuid).ok_or_else(account_not_found)?;
        let scope = self.scope(Actor::Caller(caller)).await?;
        let actor = caller.actor();
        let ctx = caller.ctx(ctx.clone());
        for _ in 0..ATTEMPTS {
            let before = self
                .store
                .offering_user(uuid)
                .await
                .map_err(store_error)?
                .ok_or_else(account_not_found)?;
            may_change(&scope, &before)?;
            let Some(old) = &before.posix else {
                return Err(DomainError::invalid(
                    codes::INVALID_OPERATION,
                    "the account has no Unix identity: its offering had no POSIX pools when it was created",
                ));
            };
            if before.state == AccountState::Deleted {
                return Err(DomainError::invalid(
                    codes::INVALID_OPERATION,
                    "the Unix identity of a deleted account cannot change",
                ));
            }
            let offering = self
                .store
                .offering(before.offering_uuid)
                .await
                .map_err(store_error)?
                .ok_or_else(account_not_found)?;
            let Some(pools) = &offering.posix else {
                return Err(DomainError::invalid(
                    codes::INVALID_OPERATION,
                    "the account's offering has no POSIX pools",
                ));
            };
            if offering.posix_pool == PosixPool::Provider {
                // The person's numbers are one identity on every offering of the provider: a
                // change for one account would split it.
                for (name, given, held) in [
                    ("uidnumber", input.uidnumber, old.uid),
                    ("primarygroup", input.primarygroup, old.gid),
                ] {
                    if given.is_some_and(|g| g != held) {
                        return Err(field(
                            name,
                            format!(
                                "{name} comes from the provider's shared pool and is the person's on every \
                                 offering of the provider; it cannot be changed for one account."
                            ),
                        ));
                    }
                }
            }
            let mut new = old.clone();
            let mut warnings = Vec::new();
            if let Some(uid) = input.uidnumber {
                if !(pools.uid_min..=pools.uid_max).contains(&uid) {
                    return Err(field(
                        "uidnumber",
                        format!(
                            "{uid} is outside the offering's uid pool ({}–{}).",
                            pools.uid_min, pools.uid_max
                        ),
                    ));
                }
                warnings.extend(id_warning("uid", uid));
                new.uid = uid;
            }
            if let Some(gid) = input.primarygroup {
                if pools.shared_gid != Some(gid) && !(pools.gid_min..=pools.gid_max).contains(&gid) {
                    return Err(field(
                        "primarygroup",
                        format!(
                            "{gid} is outside the offering's gid pool ({}–{}).",
                            pools.gid_min, pools.gid_max
                        ),
                    ));
                }
                warnings.extend(id_warning("gid", gid));
                new.gid = gid;
            }
            if let Some(s) = &shell {
                new.login_shell = s.clone();
            }
            if let Some(h) = &home {
                // The derived value keeps following renames (Waldur re-derives `homeDir` while
                // it still has it); anything else is an override that sticks.
                let derived = PosixIdentity {
                    home_override: None,
                    ..old.clone()
                }
                .home_directory(&before.username);
                new.home_override = (derived.as_deref() != Some(h.as_str())).then(|| h.clone());
            }
            let view = |a: &Account, p: &PosixIdentity, warnings: Vec<String>| PosixAttributesView {
                uidnumber: p.uid,
                primarygroup: p.gid,
                login_shell: p.login_shell.clone(),
                home_directory: p.home_directory(&a.username),
                warnings,
            };
            if &new == old {
                return Ok(view(&before, old, warnings));
            }
            let changed = changed_fields(old, &new, &before.username);
            let entry = AuditEntry::new(
                &ctx,
                actions::OFFERING_USER_UPDATE,
                Some(actor.clone()),
                Some(before.uuid.to_string()),
            );
            let after = Account {
                posix: Some(new.clone()),
                version: before.version + 1,
                modified: entry.at,
                ..before.clone()
            };
            let mut data = event_data(&after, Some(before.state), "set_posix_attributes", &changed);
            data["uidnumber"] = json!(new.uid);
            data["primarygroup"] = json!(new.gid);
            data["login_shell"] = json!(new.login_shell);
            data["home_directory"] = json!(new.home_directory(&after.username));
            let audit = entry
                .with_details(json!({
                    "action": "set_posix_attributes",
                    "changed_fields": changed,
                    "from": posix_json(old, &before.username),
                    "to": posix_json(&new, &before.username),
                }))
                .with_event(
                    streams::OFFERING_USERS,
                    kinds::OFFERING_USER_UPDATED,
                    after.uuid.to_string(),
                    data,
                );
            let history = HistoryEntry {
                at: audit.at,
                actor: Some(actor.clone()),
                action: "set_posix_attributes".to_owned(),
                from_state: Some(before.state),
                to_state: before.state,
                comment: String::new(),
                comment_url: String::new(),
                cid: ctx.cid.clone(),
            };
            let taken = |name: &str, id: i64| field(name, format!("{id} is already allocated to another account."));
            let retired = |name: &str, id: i64| {
                field(
                    name,
                    format!(
                        "{id} was handed out before and is never handed out again (unless an operator releases it); \
                         choose a number no account has had."
                    ),
                )
            };
            match self
                .store
                .set_posix_identity(&before, &new, &history, &audit)
                .await
                .map_err(store_error)?
            {
                PosixWrite::Written => return Ok(view(&after, &new, warnings)),
                PosixWrite::Stale => continue,
                PosixWrite::UidTaken => return Err(taken("uidnumber", new.uid)),
                PosixWrite::UidRetired => return Err(retired("uidnumber", new.uid)),
                PosixWrite::GidTaken => return Err(taken("primarygroup", new.gid)),
                PosixWrite::GidRetired => return Err(retired("primarygroup", new.gid)),
            }
        }
        Err(DomainError::conflict(
            codes::CONFLICT,
            "the account keeps changing underneath; try again",
        ))
    }
}

/// Waldur's names of the Unix identity fields that differ.
fn changed_fields(old: &PosixIdentity, new: &PosixIdentity, username: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.uid != new.uid {
        out.push("uidnumber");
    }
    if old.gid != new.gid {
        out.push("primarygroup");
    }
    if old.login_shell != new.login_shell {
        out.push("login_shell");
    }
    if old.home_directory(username) != new.home_directory(username) || old.home_override != new.home_override {
        out.push("home_directory");
    }
    out
}

fn posix_json(p: &PosixIdentity, username: &str) -> serde_json::Value {
    json!({
        "uidnumber": p.uid,
        "primarygroup": p.gid,
        "login_shell": p.login_shell,
        "home_directory": p.home_directory(username),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(clean_path("login_shell", "/bin/zsh").is_ok());
        assert!(clean_path("login_shell", "bin/zsh").is_err());
        assert!(clean_path("login_shell", "/bin/../zsh").is_err());
        assert!(clean_path("login_shell", "/bin/z sh").is_err());
        assert!(clean_path("home_directory", &format!("/{}", "a".repeat(255))).is_err());
    }

    #[test]
    fn reserved_ids_warn() {
        assert!(id_warning("uid", 65534).is_some());
        assert!(id_warning("uid", 65533).is_none());
    }
}
