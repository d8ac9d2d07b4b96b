//! Invitations: a person created without a password (over the API, from the command line, by
//! the `create_user` workflow) but with an e-mail address is mailed a single-use link to set a
//! first password. Using it sets the password (the policy applies), records the address as
//! verified and logs the person in. A super-user can issue a new one (the older link stops
//! working) and, when no mail can be sent, read the pending link (audited).

use crate::password_reset::{Refusal, link_invalid, may_use_link};
use crate::sessions::LoginOutcome;
use crate::{Auth, Directory, store_error};
use muster_core::audit::{AuditEntry, RequestCtx, actions};
use muster_core::clock;
use muster_core::credentials::token;
use muster_core::directory::User;
use muster_core::error::{DomainError, codes};
use muster_core::ids::UserId;
use muster_mail::kinds;
use muster_store::{Followups, Redemption, SessionRecord};
use serde::Serialize;
use serde_json::json;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// Prefix of invitation tokens.
pub const INVITATION_PREFIX: &str = "mit_";
/// The token purpose stored with an invitation link.
pub const INVITATION_PURPOSE: &str = "invitation";
/// The console's page that an invitation link opens.
pub const INVITATION_PATH: &str = "/invitation";

/// An invitation just issued.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IssuedInvitation {
    pub user_id: String,
    /// Where the mail goes.
    pub email: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// A pending invitation's link, for a super-user to hand over when no mail can be sent.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PendingInvitation {
    pub user_id: String,
    pub link: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl std::fmt::Debug for PendingInvitation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingInvitation")
            .field("user_id", &self.user_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Directory {
    /// The token and the mail of an invitation for `user`, and when it expires. None when the
    /// user has no address.
    pub(crate) fn invitation_followups(
        &self,
        user: &User,
        now: OffsetDateTime,
    ) -> Result<Option<(Followups, OffsetDateTime)>, DomainError> {
        let Some(email) = &user.email else {
            return Ok(None);
        };
        let (followups, expires) = self.link_mail(
            kinds::INVITATION,
            INVITATION_PREFIX,
            INVITATION_PURPOSE,
            INVITATION_PATH,
            self.mail.invitation_ttl,
            user,
            email,
            now,
        )?;
        Ok(Some((followups, expires)))
    }

    /// Issues a new invitation to user `id` (super-user): the older link stops working.
    pub async fn invite(&self, ctx: &RequestCtx, auth: &Auth, id: UserId) -> Result<IssuedInvitation, DomainError> {
        let entry = AuditEntry::new(ctx, actions::USER_INVITE, Some(auth.user_id()), Some(id.to_string()));
        let result = async {
            auth.require_super_user()?;
            let Some((user, _)) = self.store.user_by_uuid(id.uuid()).await.map_err(store_error)? else {
                return Err(DomainError::not_found("user"));
            };
            let now = clock::now();
            if !may_use_link(&user, now, &self.config) {
                return Err(DomainError::invalid(
                    codes::INVALID_OPERATION,
                    "the user cannot log in (locked, rejected, not approved or not signed up): no invitation",
                ));
            }
            let Some((followups, expires)) = self.invitation_followups(&user, now)? else {
                return Err(DomainError::invalid(
                    codes::INVALID_OPERATION,
                    "the user has no e-mail address to invite",
                ));
            };
            let entry = entry
                .clone()
                .with_details(json!({ "expires_at": expires.unix_timestamp() }));
            self.store
                .write_followups(&followups, &entry)
                .await
                .map_err(store_error)?;
            self.outbox.wake();
            Ok(IssuedInvitation {
                user_id: id.to_string(),
                email: user.email.unwrap_or_default(),
                expires_at: expires,
            })
        }
        .await;
        if let Err(e) = &result {
            self.audit_refusal(entry, e).await;
        }
        result
    }

    /// The link of user `id`'s invitation while its mail is unsent (super-user, audited): how
    /// an operator without SMTP hands it over.
    pub async fn pending_invitation(
        &self,
        ctx: &RequestCtx,
        auth: &Auth,
        id: UserId,
    ) -> Result<PendingInvitation, DomainError> {
        let entry = AuditEntry::new(
            ctx,
            actions::USER_INVITATION_READ,
            Some(auth.user_id()),
            Some(id.to_string()),
        );
        let result = async {
            auth.require_super_user()?;
            let none = || DomainError::not_found("pending invitation");
            let mail = self
                .store
                .pending_mail_of(id.uuid(), kinds::INVITATION)
                .await
                .map_err(store_error)?
                .ok_or_else(none)?;
            let link = self.outbox.open(&mail).and_then(|m| m.link).ok_or_else(none)?;
            let token = link.rsplit_once("token=").map(|(_, t)| t).ok_or_else(none)?;
            // Only a link that still works: a replaced or expired one is no use to anyone.
            let (uuid, expires) = self
                .store
                .action_token(&token::hash_token(token), INVITATION_PURPOSE)
                .await
                .map_err(store_error)?
                .ok_or_else(none)?;
            if uuid != id.uuid() || expires <= clock::now() {
                return Err(none());
            }
            self.store.insert_audit(&entry).await.map_err(store_error)?;
            Ok(PendingInvitation {
                user_id: id.to_string(),
                link,
                expires_at: expires,
            })
        }
        .await;
        if let Err(e) = &result {
            self.audit_refusal(entry, e).await;
        }
        result
    }

    /// Uses an invitation link: sets the first password, records the address as verified, and
    /// logs the person in (a session like a login's).
    pub async fn accept_invitation(
        &self,
        ctx: &RequestCtx,
        token: &str,
        password: String,
    ) -> Result<LoginOutcome, DomainError> {
        let entry = AuditEntry::new(ctx, actions::USER_INVITATION_ACCEPT, None, None);
        let result = async {
            let hash = token::hash_token(token);
            let now = clock::now();
            let Some((uuid, expires)) = self
                .store
                .action_token(&hash, INVITATION_PURPOSE)
                .await
                .map_err(store_error)?
            else {
                return Err(Refusal(link_invalid(), None));
            };
            let target = Some(UserId::from_uuid(uuid).to_string());
            if expires <= now {
                return Err(Refusal(link_invalid(), target));
            }
            let Some((mut user, version)) = self.store.user_by_uuid(uuid).await.map_err(store_error)? else {
                return Err(Refusal(link_invalid(), target));
            };
            if !may_use_link(&user, now, &self.config) {
                return Err(Refusal(DomainError::not_allowed(), target));
            }
            self.config
                .password_policy
                .check("password", &password)
                .map_err(|e| Refusal(e, target.clone()))?;
            user.password_hash = self.hashes.hash(password).await?;
            user.password_is_set = true;
            user.password_last_set = now;
            user.password_expiry = now + Duration::days(self.config.password_expiry_days);
            user.password_must_change = false;
            user.updated_at = now;
            let app = self.config.apps.first().cloned().unwrap_or_default();
            let (session_token, session_hash) = token::new_token(token::SESSION_PREFIX);
            let session = SessionRecord {
                id: Uuid::new_v4(),
                user_uuid: user.uuid,
                created_at: now,
                last_seen_at: now,
                expires_at: now + Duration::seconds(self.config.session_absolute_secs),
                current_app: Some(app),
                remote_addr: ctx.remote_addr.clone(),
                user_agent: ctx.user_agent.clone().map(|ua| ua.chars().take(512).collect()),
            };
            let by = user.user_id().to_string();
            let entry = crate::users::password_changed(
                entry
                    .clone()
                    .with_target(by.clone())
                    .with_details(json!({ "session_id": session.id, "email_verified": true })),
                &user,
                &by,
            );
            let redeemed = self
                .store
                .redeem_token(
                    &hash,
                    INVITATION_PURPOSE,
                    now,
                    Redemption {
                        user: &user,
                        version,
                        session: Some((&session, session_hash)),
                        followups: &Followups::default(),
                        verify_email: user.email.as_deref(),
                        audit: &entry,
                    },
                )
                .await
                .map_err(store_error)?;
            if !redeemed {
                return Err(Refusal(link_invalid(), target));
            }
            Ok(LoginOutcome {
                token: session_token,
                expires_at: self.effective_expiry(&session),
                absolute_expires_at: session.expires_at,
                session_id: session.id,
                user_id: by,
                warnings: vec![],
            })
        }
        .await;
        match result {
            Ok(o) => Ok(o),
            Err(Refusal(e, target)) => {
                let entry = match target {
                    Some(t) => entry.with_target(t),
                    None => entry,
                };
                self.audit_refusal(entry, &e).await;
                Err(e)
            }
        }
    }
}
