//! Updating a user: which fields the owner may change, which only a super-user may, and what
//! a change implies (lock time, approval bookkeeping, revoking sessions).
//!
//! Zato lets owners change their username and switch TOTP off with nothing but a session token;
//! muster keeps those for super-users (an owner's TOTP changes belong behind re-authentication).

use super::user::{ApprovalStatus, SignUpStatus, User};
use super::validate;
use crate::error::{DomainError, codes};
use serde::{Deserialize, Deserializer};
use time::OffsetDateTime;

/// Tells an absent key (`None`) from an explicit `null` (`Some(None)`).
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

mod rfc3339_nullable {
    use serde::Deserializer;
    use time::OffsetDateTime;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<OffsetDateTime>>, D::Error> {
        time::serde::rfc3339::option::deserialize(d).map(Some)
    }
}

/// A partial update. Absent keys are left alone; `null` clears the fields that may be empty.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserInput {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub email: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub display_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub first_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub middle_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub last_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub totp_label: Option<Option<String>>,
    /// Super-user only.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub username: Option<Option<String>>,
    /// Super-user only.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<bool>)]
    pub is_totp_enabled: Option<Option<bool>>,
    /// Super-user only.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<bool>)]
    pub is_locked: Option<Option<bool>>,
    /// Super-user only. RFC 3339.
    #[serde(default, with = "rfc3339_nullable")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub password_expiry: Option<Option<OffsetDateTime>>,
    /// Super-user only.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<bool>)]
    pub password_must_change: Option<Option<bool>>,
    /// Super-user only.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<SignUpStatus>)]
    pub sign_up_status: Option<Option<SignUpStatus>>,
    /// Super-user only.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<ApprovalStatus>)]
    pub approval_status: Option<Option<ApprovalStatus>>,
}

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub user_id: &'a str,
    pub is_super_user: bool,
}

/// What an update did, for the audit record and the store.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Names of the fields whose value changed (never the values).
    pub changed: Vec<&'static str>,
    /// The change ends the user's right to hold sessions (lock, rejection, …).
    pub revoke_sessions: bool,
}

fn required<T>(field: &'static str, v: Option<T>) -> Result<T, DomainError> {
    v.ok_or_else(|| DomainError::invalid_field(field, codes::INVALID_INPUT, format!("{field} may not be null")))
}

/// A field's own validation rule.
type Check = fn(&str) -> Result<(), DomainError>;

fn text_field(
    field: &'static str,
    value: Option<Option<String>>,
    target: &mut Option<String>,
    applied: &mut Applied,
    check: Option<Check>,
) -> Result<(), DomainError> {
    if let Some(v) = value {
        let v = v.filter(|s| !s.is_empty());
        if let Some(s) = &v {
            match check {
                Some(check) => check(s)?,
                None => validate::text(field, s)?,
            }
        }
        if *target != v {
            *target = v;
            applied.changed.push(field);
        }
    }
    Ok(())
}

impl UpdateUserInput {
    /// Names of the keys present that only a super-user may change.
    fn super_user_keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.username.is_some() {
            keys.push("username")
        }
        if self.is_totp_enabled.is_some() {
            keys.push("is_totp_enabled")
        }
        if self.is_locked.is_some() {
            keys.push("is_locked")
        }
        if self.password_expiry.is_some() {
            keys.push("password_expiry")
        }
        if self.password_must_change.is_some() {
            keys.push("password_must_change")
        }
        if self.sign_up_status.is_some() {
            keys.push("sign_up_status")
        }
        if self.approval_status.is_some() {
            keys.push("approval_status")
        }
        keys
    }

    /// Applies the update to `user` in memory, checking every rule first.
    pub fn apply(self, user: &mut User, caller: Caller<'_>, now: OffsetDateTime) -> Result<Applied, DomainError> {
        let restricted = self.super_user_keys();
        if !caller.is_super_user && !restricted.is_empty() {
            return Err(DomainError::forbidden(
                codes::SUPER_USER_REQUIRED,
                format!("only a super-user may change: {}", restricted.join(", ")),
            ));
        }
        let is_self = caller.user_id == user.user_id().to_string();
        let mut applied = Applied::default();
        text_field(
            "email",
            self.email,
            &mut user.email,
            &mut applied,
            Some(validate::email),
        )?;
        text_field(
            "display_name",
            self.display_name,
            &mut user.display_name,
            &mut applied,
            None,
        )?;
        text_field("first_name", self.first_name, &mut user.first_name, &mut applied, None)?;
        text_field(
            "middle_name",
            self.middle_name,
            &mut user.middle_name,
            &mut applied,
            None,
        )?;
        text_field("last_name", self.last_name, &mut user.last_name, &mut applied, None)?;
        if let Some(label) = self.totp_label {
            let label = label.filter(|s| !s.is_empty()).unwrap_or_default();
            validate::text("totp_label", &label)?;
            if user.totp_label != label {
                user.totp_label = label;
                applied.changed.push("totp_label");
            }
        }
        if let Some(username) = self.username {
            let username = validate::username(&required("username", username)?)?;
            if user.username != username {
                user.username = username;
                applied.changed.push("username");
            }
        }
        if let Some(v) = self.is_totp_enabled {
            let v = required("is_totp_enabled", v)?;
            // A key is enrolled once a code from it was accepted (enrolment's confirmation, or
            // a login): until then nobody has shown they hold it, and switching it on for
            // oneself would shut oneself out.
            if v && is_self && !user.is_totp_enabled && user.totp_last_step.is_none() {
                return Err(DomainError::invalid(
                    codes::INVALID_OPERATION,
                    "TOTP cannot be switched on for yourself before a key is enrolled; \
                     enrol one with POST /api/users/me/totp",
                ));
            }
            if user.is_totp_enabled != v {
                user.is_totp_enabled = v;
                applied.changed.push("is_totp_enabled");
            }
        }
        if let Some(v) = self.is_locked {
            let v = required("is_locked", v)?;
            if v && is_self {
                return Err(DomainError::invalid(
                    codes::INVALID_OPERATION,
                    "a super-user cannot lock themselves",
                ));
            }
            if user.is_locked != v {
                user.is_locked = v;
                user.locked_time = Some(now);
                user.locked_by = Some(caller.user_id.to_owned());
                applied.changed.push("is_locked");
                applied.revoke_sessions |= v;
            }
        }
        if let Some(v) = self.password_expiry {
            let v = required("password_expiry", v)?;
            let v = crate::clock::to_utc(v).map(crate::clock::truncate).ok_or_else(|| {
                DomainError::invalid_field(
                    "password_expiry",
                    codes::INVALID_INPUT,
                    "password_expiry is out of range",
                )
            })?;
            if user.password_expiry != v {
                user.password_expiry = v;
                applied.changed.push("password_expiry");
                applied.revoke_sessions |= v <= now;
            }
        }
        if let Some(v) = self.password_must_change {
            let v = required("password_must_change", v)?;
            if user.password_must_change != v {
                user.password_must_change = v;
                applied.changed.push("password_must_change");
            }
        }
        if let Some(v) = self.sign_up_status {
            let v = required("sign_up_status", v)?;
            // Only `final` users may log in: any other status on oneself is a lock-out that
            // nobody but another super-user (or `muster user recover`) could undo.
            if v != SignUpStatus::Final && is_self {
                return Err(DomainError::invalid(
                    codes::INVALID_OPERATION,
                    "a super-user cannot take back their own sign-up",
                ));
            }
            if user.sign_up_status != v {
                user.sign_up_status = v;
                applied.changed.push("sign_up_status");
                applied.revoke_sessions |= v != SignUpStatus::Final;
            }
        }
        if let Some(v) = self.approval_status {
            let v = required("approval_status", v)?;
            if v != ApprovalStatus::Approved && is_self {
                return Err(DomainError::invalid(
                    codes::INVALID_OPERATION,
                    "a super-user cannot withdraw their own approval",
                ));
            }
            if user.approval_status != v {
                user.approval_status = v;
                user.approval_status_mod_by = caller.user_id.to_owned();
                user.approval_status_mod_time = now;
                applied.changed.push("approval_status");
                applied.revoke_sessions |= v != ApprovalStatus::Approved;
            }
        }
        Ok(applied)
    }
}

/// The command line's recovery of a user shut out of their account (a super-user who set their
/// own sign-up back, lost their second factor, …): unlocked, sign-up `final`, approved, TOTP
/// off with its spent step forgotten (the caller replaces the key, so a later switch-on needs a
/// new enrolment). The password is left alone. Returns the fields that changed; the caller ends
/// the user's sessions.
pub fn recover(user: &mut User, by: &str, now: OffsetDateTime) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if user.is_locked {
        user.is_locked = false;
        user.locked_time = Some(now);
        user.locked_by = Some(by.to_owned());
        changed.push("is_locked");
    }
    if user.sign_up_status != SignUpStatus::Final {
        user.sign_up_status = SignUpStatus::Final;
        changed.push("sign_up_status");
    }
    if user.approval_status != ApprovalStatus::Approved {
        user.approval_status = ApprovalStatus::Approved;
        user.approval_status_mod_by = by.to_owned();
        user.approval_status_mod_time = now;
        changed.push("approval_status");
    }
    if user.is_totp_enabled || user.totp_last_step.is_some() {
        user.is_totp_enabled = false;
        user.totp_last_step = None;
        changed.push("is_totp_enabled");
    }
    changed
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::directory::user::User;

    /// A plain approved user, for rule tests.
    pub(crate) fn user() -> User {
        let now = crate::clock::now();
        User {
            uuid: uuid::Uuid::new_v4(),
            username: "alice".into(),
            email: Some("alice@example.org".into()),
            display_name: Some("Alice".into()),
            first_name: None,
            middle_name: None,
            last_name: None,
            is_active: true,
            is_internal: false,
            is_super_user: false,
            is_approval_needed: false,
            approval_status: ApprovalStatus::Approved,
            approval_status_mod_by: "auto".into(),
            approval_status_mod_time: now,
            is_locked: false,
            locked_time: None,
            locked_by: None,
            password_hash: String::new(),
            password_is_set: true,
            password_must_change: false,
            password_last_set: now,
            password_expiry: now + time::Duration::days(730),
            sign_up_status: SignUpStatus::Final,
            sign_up_time: now,
            is_totp_enabled: false,
            totp_key_sealed: String::new(),
            totp_label: "muster".into(),
            totp_last_step: None,
            updated_at: now,
        }
    }

    fn input(v: serde_json::Value) -> UpdateUserInput {
        serde_json::from_value(v).expect("valid update")
    }

    #[test]
    fn owners_change_contact_fields_and_null_clears() {
        let mut u = user();
        let me = u.user_id().to_string();
        let caller = Caller {
            user_id: &me,
            is_super_user: false,
        };
        let a = input(serde_json::json!({"email": "a@b.c", "display_name": null, "last_name": "Liddell"}))
            .apply(&mut u, caller, crate::clock::now())
            .expect("allowed");
        assert_eq!(a.changed, vec!["email", "display_name", "last_name"]);
        assert_eq!(u.display_name, None);
        assert!(!a.revoke_sessions);
    }

    #[test]
    fn owners_cannot_touch_super_user_fields() {
        let mut u = user();
        let me = u.user_id().to_string();
        let caller = Caller {
            user_id: &me,
            is_super_user: false,
        };
        for body in [
            serde_json::json!({"username": "mallory"}),
            serde_json::json!({"is_totp_enabled": false}),
            serde_json::json!({"is_locked": false}),
            serde_json::json!({"approval_status": "approved"}),
            serde_json::json!({"password_expiry": "2100-01-01T00:00:00Z"}),
        ] {
            let before = format!("{u:?}");
            let e = input(body.clone())
                .apply(&mut u, caller, crate::clock::now())
                .expect_err("refused");
            assert_eq!(e.code, codes::SUPER_USER_REQUIRED, "{body}");
            assert_eq!(before, format!("{u:?}"), "nothing changed for {body}");
        }
    }

    #[test]
    fn lock_and_rejection_revoke_sessions_and_record_who() {
        let mut u = user();
        let caller = Caller {
            user_id: "musradmin",
            is_super_user: true,
        };
        let now = crate::clock::now();
        let a = input(serde_json::json!({"is_locked": true}))
            .apply(&mut u, caller, now)
            .expect("lock");
        assert!(a.revoke_sessions);
        assert_eq!(u.locked_by.as_deref(), Some("musradmin"));
        assert_eq!(u.locked_time, Some(now));
        let a = input(serde_json::json!({"approval_status": "rejected"}))
            .apply(&mut u, caller, now)
            .expect("reject");
        assert!(a.revoke_sessions);
        assert_eq!(u.approval_status_mod_by, "musradmin");
        let a = input(serde_json::json!({"is_locked": false}))
            .apply(&mut u, caller, now)
            .expect("unlock");
        assert!(!a.revoke_sessions);
    }

    #[test]
    fn recovery_undoes_every_lock_out() {
        let mut u = user();
        let now = crate::clock::now();
        assert!(recover(&mut u, "cli", now).is_empty(), "nothing to undo");
        u.is_locked = true;
        u.sign_up_status = SignUpStatus::BeforeConfirmation;
        u.approval_status = ApprovalStatus::Rejected;
        u.is_totp_enabled = true;
        u.totp_last_step = Some(7);
        let changed = recover(&mut u, "cli", now);
        assert_eq!(
            changed,
            vec!["is_locked", "sign_up_status", "approval_status", "is_totp_enabled"]
        );
        assert!(!u.is_locked && !u.is_totp_enabled && u.totp_last_step.is_none());
        assert_eq!(
            (u.sign_up_status, u.approval_status),
            (SignUpStatus::Final, ApprovalStatus::Approved)
        );
        assert_eq!(u.approval_status_mod_by, "cli");
        assert_eq!(u.locked_by.as_deref(), Some("cli"));
    }

    #[test]
    fn super_users_cannot_lock_or_reject_themselves_and_nulls_are_refused() {
        let mut u = user();
        u.is_super_user = true;
        let me = u.user_id().to_string();
        let caller = Caller {
            user_id: &me,
            is_super_user: true,
        };
        let now = crate::clock::now();
        let e = input(serde_json::json!({"is_locked": true}))
            .apply(&mut u, caller, now)
            .expect_err("self-lock");
        assert_eq!(e.code, codes::INVALID_OPERATION);
        let e = input(serde_json::json!({"approval_status": "rejected"}))
            .apply(&mut u, caller, now)
            .expect_err("self-reject");
        assert_eq!(e.code, codes::INVALID_OPERATION);
        let e = input(serde_json::json!({"sign_up_status": "before_confirmation"}))
            .apply(&mut u, caller, now)
            .expect_err("self sign-up reset");
        assert_eq!(e.code, codes::INVALID_OPERATION);
        let e = input(serde_json::json!({"is_totp_enabled": true}))
            .apply(&mut u, caller, now)
            .expect_err("TOTP on without an enrolled key");
        assert_eq!(e.code, codes::INVALID_OPERATION);
        assert!(
            !u.is_totp_enabled && u.sign_up_status == SignUpStatus::Final,
            "nothing changed"
        );
        input(serde_json::json!({"sign_up_status": "final", "is_totp_enabled": false}))
            .apply(&mut u, caller, now)
            .expect("the states that do not lock one out are fine");
        // Once a code from the key was accepted, switching TOTP back on is one's own choice.
        u.totp_last_step = Some(1);
        input(serde_json::json!({"is_totp_enabled": true}))
            .apply(&mut u, caller, now)
            .expect("an enrolled key");
        assert!(u.is_totp_enabled);
        // On someone else (whose key a super-user may have handed over), both are allowed.
        let mut other = user();
        input(serde_json::json!({"sign_up_status": "before_confirmation", "is_totp_enabled": true}))
            .apply(&mut other, caller, now)
            .expect("another user");
        let e = input(serde_json::json!({"username": null}))
            .apply(&mut u, caller, now)
            .expect_err("null username");
        assert_eq!(e.code, codes::INVALID_INPUT);
        assert!(serde_json::from_value::<UpdateUserInput>(serde_json::json!({"password": "x"})).is_err());
    }
}
