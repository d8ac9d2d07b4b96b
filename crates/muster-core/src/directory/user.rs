//! The user record and the views of it that callers see.

use crate::ids::UserId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

crate::named_enum! {
    /// A super-user's decision on a new account (Zato: `approval_status`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum ApprovalStatus {
        BeforeDecision = "before_decision",
        Approved = "approved",
        Rejected = "rejected",
    }
}

crate::named_enum! {
    /// How far sign-up has got (Zato: `sign_up_status`). Only `final` users may log in.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum SignUpStatus {
        BeforeConfirmation = "before_confirmation",
        Final = "final",
    }
}

/// A user as stored. Holds secrets (hash, sealed TOTP key): never serialised as is, and its
/// `Debug` shows neither.
#[derive(Clone)]
pub struct User {
    pub uuid: Uuid,
    pub username: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub last_name: Option<String>,
    pub is_active: bool,
    pub is_internal: bool,
    pub is_super_user: bool,
    pub is_approval_needed: bool,
    pub approval_status: ApprovalStatus,
    pub approval_status_mod_by: String,
    pub approval_status_mod_time: OffsetDateTime,
    pub is_locked: bool,
    pub locked_time: Option<OffsetDateTime>,
    pub locked_by: Option<String>,
    pub password_hash: String,
    pub password_is_set: bool,
    pub password_must_change: bool,
    pub password_last_set: OffsetDateTime,
    pub password_expiry: OffsetDateTime,
    pub sign_up_status: SignUpStatus,
    pub sign_up_time: OffsetDateTime,
    pub is_totp_enabled: bool,
    /// The TOTP key, sealed with the server key.
    pub totp_key_sealed: String,
    pub totp_label: String,
    /// Last TOTP step accepted, so a code cannot be used twice.
    pub totp_last_step: Option<i64>,
    pub updated_at: OffsetDateTime,
}

crate::debug_redacted!(User {
    uuid, username, email, display_name, first_name, middle_name, last_name, is_active, is_internal, is_super_user,
    is_approval_needed, approval_status, approval_status_mod_by, approval_status_mod_time, is_locked, locked_time,
    locked_by, password_is_set, password_must_change, password_last_set, password_expiry, sign_up_status,
    sign_up_time, is_totp_enabled, totp_label, totp_last_step, updated_at
} redact { password_hash, totp_key_sealed });

impl User {
    pub fn user_id(&self) -> UserId {
        UserId::from_uuid(self.uuid)
    }

    /// The key under which usernames are unique and looked up (RFC 8265 UsernameCaseMapped).
    pub fn username_key(username: &str) -> String {
        super::username::key(username)
    }

    /// The key that keeps look-alike usernames apart (a TR39 confusable skeleton).
    pub fn username_skeleton(username: &str) -> String {
        super::username::skeleton(&super::username::key(username))
    }
}

/// What a caller sees of a user.
///
/// Everyone allowed to see the user gets the first group of fields (Zato's `regular_attrs`
/// plus the ids); only super-users get the rest (Zato's `super_user_attrs`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserView {
    /// Opaque id: `musr` + 26 lowercase base32 characters (the same UUID as `uuid`).
    #[schema(value_type = String, example = "musr0h7y0kc2xg6v3q9mb1y2r5t8wd")]
    pub user_id: UserId,
    pub uuid: Uuid,
    pub username: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub last_name: Option<String>,
    pub is_totp_enabled: bool,
    pub totp_label: String,
    // Documented as the (optional) fields themselves: a regular user's view has none of them.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = AdminFields)]
    pub admin: Option<AdminFields>,
}

/// Fields only super-users see: present together when a super-user reads, absent otherwise,
/// so none is `required` in the schema.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AdminFields {
    #[schema(required = false)]
    pub is_active: bool,
    #[schema(required = false)]
    pub is_internal: bool,
    #[schema(required = false)]
    pub is_super_user: bool,
    #[schema(required = false)]
    pub is_approval_needed: bool,
    #[schema(required = false)]
    pub approval_status: ApprovalStatus,
    #[schema(required = false)]
    pub approval_status_mod_by: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(required = false)]
    pub approval_status_mod_time: OffsetDateTime,
    #[schema(required = false)]
    pub is_locked: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub locked_time: Option<OffsetDateTime>,
    pub locked_by: Option<String>,
    #[schema(required = false)]
    pub password_is_set: bool,
    #[schema(required = false)]
    pub password_must_change: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(required = false)]
    pub password_last_set: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(required = false)]
    pub password_expiry: OffsetDateTime,
    #[schema(required = false)]
    pub sign_up_status: SignUpStatus,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(required = false)]
    pub sign_up_time: OffsetDateTime,
}

impl UserView {
    /// The view of `user` for a caller who is (`full`) or is not a super-user.
    pub fn of(user: &User, full: bool) -> Self {
        Self {
            user_id: user.user_id(),
            uuid: user.uuid,
            username: user.username.clone(),
            email: user.email.clone(),
            display_name: user.display_name.clone(),
            first_name: user.first_name.clone(),
            middle_name: user.middle_name.clone(),
            last_name: user.last_name.clone(),
            is_totp_enabled: user.is_totp_enabled,
            totp_label: user.totp_label.clone(),
            admin: full.then(|| AdminFields {
                is_active: user.is_active,
                is_internal: user.is_internal,
                is_super_user: user.is_super_user,
                is_approval_needed: user.is_approval_needed,
                approval_status: user.approval_status,
                approval_status_mod_by: user.approval_status_mod_by.clone(),
                approval_status_mod_time: user.approval_status_mod_time,
                is_locked: user.is_locked,
                locked_time: user.locked_time,
                locked_by: user.locked_by.clone(),
                password_is_set: user.password_is_set,
                password_must_change: user.password_must_change,
                password_last_set: user.password_last_set,
                password_expiry: user.password_expiry,
                sign_up_status: user.sign_up_status,
                sign_up_time: user.sign_up_time,
            }),
        }
    }
}
