//! The offering-account domain: providers, offerings, accounts and their history, as plain data.
//!
//! Identifiers are newtypes so that a provider's UUID cannot be passed where an offering's is
//! expected. On the wire they are written as Waldur writes UUIDs: 32 hex digits without hyphens
//! (both forms are accepted on input).

use super::lifecycle::{AccountState, RuntimeState};
use std::fmt;
use time::OffsetDateTime;
use uuid::Uuid;

macro_rules! uuid_newtype {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new_random() -> Self {
                Self(Uuid::new_v4())
            }

            /// Parses Waldur's hex form or the hyphenated form.
            pub fn parse(text: &str) -> Option<Self> {
                Uuid::parse_str(text.trim()).ok().map(Self)
            }
        }

        impl fmt::Display for $name {
            /// Waldur's form: hex without hyphens.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.simple(), f)
            }
        }
    };
}

uuid_newtype!(
    /// A service provider (the organisation hosting offerings).
    ProviderUuid
);
uuid_newtype!(
    /// A hosting offering.
    OfferingUuid
);
uuid_newtype!(
    /// One person's account on one offering.
    OfferingUserUuid
);
uuid_newtype!(
    /// A provider API token's public identifier (not the key).
    ApiTokenUuid
);

/// Writes a UUID the way Waldur does: 32 hex digits, no hyphens.
pub fn hex(uuid: Uuid) -> String {
    uuid.simple().to_string()
}

crate::named_enum! {
    /// Who names the local account.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum UsernamePolicy {
        /// The hosting site's agent names the account (PATCH of `username`); Waldur's default.
        #[default]
        ServiceProvider = "service_provider",
        /// The account takes the person's directory username when it is requested.
        WaldurUsername = "waldur_username",
        /// The offering's prefix and a zero-padded counter (`walduruser_00001`).
        Anonymized = "anonymized",
        /// `first_last` in ASCII, with `_01` … when taken.
        FullName = "full_name",
        /// An attribute of the directory user ([`IdentityClaim`]), lower-cased.
        IdentityClaim = "identity_claim",
    }
}

crate::named_enum! {
    /// Whose Unix identity pool an offering's accounts draw from.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum PosixPool {
        /// The offering's own `posix_settings`: each account gets numbers of its own.
        #[default]
        Offering = "offering",
        /// The provider's pool, shared by its offerings: a person has one uid and primary gid on
        /// every offering of the provider (so offerings sharing one directory at a site cannot
        /// give one uid to two people), allocated once and kept for ever.
        Provider = "provider",
    }
}

crate::named_enum! {
    /// The attribute of the directory user the `identity_claim` policy names accounts after
    /// (Waldur reads `site_username` from the identity provider's claims; muster's directory
    /// holds these).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum IdentityClaim {
        /// The directory username.
        #[default]
        Username = "username",
        /// The local part of the e-mail address (before the `@`).
        EmailLocalPart = "email_local_part",
        FirstName = "first_name",
        LastName = "last_name",
        DisplayName = "display_name",
    }
}

impl IdentityClaim {
    /// The claim's value for `user`, if it has one.
    pub fn value_of(self, user: &crate::directory::User) -> Option<String> {
        match self {
            Self::Username => Some(user.username.clone()),
            Self::EmailLocalPart => user
                .email
                .as_deref()
                .and_then(|e| e.split_once('@'))
                .map(|(local, _)| local.to_owned()),
            Self::FirstName => user.first_name.clone(),
            Self::LastName => user.last_name.clone(),
            Self::DisplayName => user.display_name.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub uuid: ProviderUuid,
    pub name: String,
    /// The pool shared by the provider's offerings whose `posix_pool` is `provider`.
    pub posix: Option<PosixSettings>,
    pub created: OffsetDateTime,
    pub modified: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offering {
    pub uuid: OfferingUuid,
    pub provider_uuid: ProviderUuid,
    pub name: String,
    pub slug: String,
    /// Waldur's offering type, e.g. `Marketplace.Slurm`.
    pub kind: String,
    /// Waldur's `service_provider_can_create_offering_user`.
    pub provider_can_create: bool,
    pub username_policy: UsernamePolicy,
    /// The `anonymized` policy's prefix.
    pub username_prefix: String,
    /// The `identity_claim` policy's attribute.
    pub username_claim: IdentityClaim,
    /// Whose pool the accounts draw from.
    pub posix_pool: PosixPool,
    /// The settings of the pool the offering's accounts draw from (the provider's when
    /// `posix_pool` is `provider`); None: accounts get no Unix identity.
    pub posix: Option<PosixSettings>,
    pub created: OffsetDateTime,
    pub modified: OffsetDateTime,
}

/// An offering's POSIX settings (Waldur's offering plugin options `homedir_prefix`,
/// `login_shell` and its uid/gid pools): every account created on the offering gets a uid
/// (and a primary gid) from them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct PosixSettings {
    pub uid_min: i64,
    pub uid_max: i64,
    /// The pool of per-user primary groups (unused when `shared_gid` is set).
    pub gid_min: i64,
    pub gid_max: i64,
    /// Ends with `/`; the home directory is this and the username.
    pub home_prefix: String,
    pub login_shell: String,
    /// One primary group shared by every account, instead of one group per user.
    pub shared_gid: Option<i64>,
}

/// An account's Unix identity, allocated when the account is created and kept for its life
/// (across deletion and restore).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PosixIdentity {
    pub uid: i64,
    pub gid: i64,
    pub login_shell: String,
    /// The offering's home prefix when the account was created.
    pub home_prefix: String,
    /// A home directory set explicitly; None: derived from the prefix and the username, so it
    /// follows a rename (as Waldur re-derives `homeDir` while it still has the derived value).
    pub home_override: Option<String>,
}

impl PosixIdentity {
    /// The home directory of an account named `username`; None while it has no name.
    pub fn home_directory(&self, username: &str) -> Option<String> {
        match &self.home_override {
            Some(h) => Some(h.clone()),
            None if username.is_empty() => None,
            None => Some(format!("{}{username}", self.home_prefix)),
        }
    }
}

/// An offering account with the denormalised fields Waldur's API returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub uuid: OfferingUserUuid,
    pub offering_uuid: OfferingUuid,
    pub offering_name: String,
    pub provider_uuid: ProviderUuid,
    pub provider_name: String,
    pub user_uuid: Uuid,
    pub user_username: String,
    pub user_full_name: String,
    pub user_email: Option<String>,
    /// The local account name at the site; empty until named.
    pub username: String,
    pub state: AccountState,
    pub runtime_state: RuntimeState,
    pub is_restricted: bool,
    pub comment: String,
    pub comment_url: String,
    /// Bumped by every change.
    pub version: i64,
    pub created: OffsetDateTime,
    pub modified: OffsetDateTime,
    pub posix: Option<PosixIdentity>,
}

/// The mutable part of an account: what a change writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountFields {
    pub username: String,
    pub state: AccountState,
    pub runtime_state: RuntimeState,
    pub is_restricted: bool,
    pub comment: String,
    pub comment_url: String,
}

impl Account {
    pub fn fields(&self) -> AccountFields {
        AccountFields {
            username: self.username.clone(),
            state: self.state,
            runtime_state: self.runtime_state,
            is_restricted: self.is_restricted,
            comment: self.comment.clone(),
            comment_url: self.comment_url.clone(),
        }
    }

    /// This account with `fields` applied, as of `at`.
    pub fn with(&self, fields: &AccountFields, at: OffsetDateTime) -> Account {
        Account {
            username: fields.username.clone(),
            state: fields.state,
            runtime_state: fields.runtime_state,
            is_restricted: fields.is_restricted,
            comment: fields.comment.clone(),
            comment_url: fields.comment_url.clone(),
            version: self.version + 1,
            modified: at,
            ..self.clone()
        }
    }
}

impl AccountFields {
    /// The names of the fields that differ from `other`, in Waldur's field names.
    pub fn changed_from(&self, other: &AccountFields) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.username != other.username {
            out.push("username");
        }
        if self.state != other.state {
            out.push("state");
        }
        if self.runtime_state != other.runtime_state {
            out.push("runtime_state");
        }
        if self.is_restricted != other.is_restricted {
            out.push("is_restricted");
        }
        if self.comment != other.comment {
            out.push("service_provider_comment");
        }
        if self.comment_url != other.comment_url {
            out.push("service_provider_comment_url");
        }
        out
    }
}

/// One entry of an account's history: who moved it, when, from where to where, and what the
/// site told the person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub at: OffsetDateTime,
    /// The actor: a user's `user_id`, `token:<uuid>` for a provider token, or `system`.
    pub actor: Option<String>,
    /// The API action or change (`begin_creating`, `create`, `set_username`, …).
    pub action: String,
    pub from_state: Option<AccountState>,
    pub to_state: AccountState,
    pub comment: String,
    pub comment_url: String,
    pub cid: String,
}

/// A provider API token as stored: never the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub uuid: ApiTokenUuid,
    pub provider_uuid: ProviderUuid,
    pub name: String,
    pub created_by: String,
    pub created: OffsetDateTime,
}
