//! The offering-account service: service providers, offerings, each person's account on each
//! offering with Waldur's ten-state lifecycle, and the provider API tokens hosting-site agents
//! use.
//!
//! It sits between the HTTP layer (which parses and authenticates) and the [`Store`] (which
//! persists). Every rule comes from `muster_core::offering::lifecycle` (the one transition
//! table); this crate adds who may do what:
//!
//! - super-users see and do everything;
//! - a provider's managers, and tokens of that provider, see the provider's accounts and may
//!   create, change and delete them — every state-changing call needs this (Waldur forgot the
//!   check on `set_ok` and the error transitions);
//! - a person sees their own accounts and changes none of them;
//! - anything else is invisible (404); visible but not allowed is 403.

mod account_changes;
mod account_input;
mod accounts;
pub mod membership;
mod naming;
mod new_account;
mod posix;
mod posix_attributes;
mod posix_reads;
mod posix_release;
mod providers;
mod views;

pub use account_changes::is_invalid_transition;
pub use account_input::{
    AccountFilter, CommentsInput, CreateAccountInput, RuntimeStateInput, TransitionInput, UsernameInput,
};
pub use posix_attributes::{PosixAttributesInput, PosixAttributesView};
pub use posix_reads::{PosixAllocationView, PosixIdentityView, PosixPoolUseView};
pub use posix_release::{ReleasePosixIdInput, ReleasedPosixIdView};
pub use providers::{
    AddManagerInput, CreateApiTokenInput, CreateOfferingInput, CreateProviderInput, UpdateOfferingInput,
    UpdateProviderInput,
};
pub use views::{ApiTokenView, CommentsView, HistoryView, NewApiToken, OfferingUserView, OfferingView, ProviderView};

use muster_core::error::{DomainError, codes};
use muster_directory::Caller;
use muster_store::{Store, StoreError, Visibility};
use uuid::Uuid;

/// The service. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Offerings {
    store: Store,
}

/// Who is acting: a caller, or muster itself (workflows requesting and retiring accounts).
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    Caller(&'a Caller),
    System,
}

impl Actor<'_> {
    fn name(&self) -> String {
        match self {
            Self::Caller(c) => c.actor(),
            Self::System => "system".to_owned(),
        }
    }
}

/// What a caller may see and manage, resolved once per call.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    super_user: bool,
    /// Providers whose accounts the caller manages.
    providers: Vec<Uuid>,
    /// The caller's own user, whose accounts they may see.
    user: Option<Uuid>,
}

impl Scope {
    fn system() -> Self {
        Self {
            super_user: true,
            providers: Vec::new(),
            user: None,
        }
    }

    pub(crate) fn is_super_user(&self) -> bool {
        self.super_user
    }

    pub(crate) fn can_see(&self, provider: Uuid, user: Uuid) -> bool {
        self.super_user || self.providers.contains(&provider) || self.user == Some(user)
    }

    pub(crate) fn can_manage(&self, provider: Uuid) -> bool {
        self.super_user || self.providers.contains(&provider)
    }

    pub(crate) fn visibility(&self) -> Visibility {
        if self.super_user {
            Visibility::All
        } else {
            Visibility::Limited {
                providers: self.providers.clone(),
                user: self.user,
            }
        }
    }
}

impl Offerings {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) async fn scope(&self, actor: Actor<'_>) -> Result<Scope, DomainError> {
        Ok(match actor {
            Actor::System => Scope::system(),
            Actor::Caller(Caller::Provider(t)) => Scope {
                super_user: false,
                providers: vec![t.provider_uuid],
                user: None,
            },
            Actor::Caller(Caller::User(auth)) if auth.is_super_user() => Scope::system(),
            Actor::Caller(Caller::User(auth)) => Scope {
                super_user: false,
                providers: self
                    .store
                    .managed_providers(auth.user.uuid)
                    .await
                    .map_err(store_error)?,
                user: Some(auth.user.uuid),
            },
        })
    }
}

/// Store errors as the domain sees them.
pub(crate) fn store_error(e: StoreError) -> DomainError {
    match e {
        StoreError::Duplicate("username") => DomainError::conflict(
            codes::CONFLICT,
            "another live account of this offering already has this username",
        ),
        StoreError::Duplicate("offering user") => {
            DomainError::invalid("not_unique", "The fields offering, user must make a unique set.")
        }
        StoreError::Duplicate(what) => DomainError::conflict(codes::CONFLICT, format!("{what} already exists")),
        other => other.into(),
    }
}

/// A 403 for a visible thing the caller may not change.
pub(crate) fn forbidden() -> DomainError {
    DomainError::forbidden(
        "permission_denied",
        "You do not have permission to perform this action.",
    )
}
