//! Reading users: one user (by session or by token in one round trip), super-user search with
//! Zato's paging, and the keyset-paged export.
//!
//! Nothing here writes. A regular user reads only themself (see the parent module); search
//! and export are for super-users.

use super::UserTarget;
use crate::{Auth, Directory, store_error};
use muster_core::directory::{ApprovalStatus, SignUpStatus, UserView};
use muster_core::error::DomainError;
use muster_core::ids::UserId;
use muster_store::{UserCursor, UserOrder, UserQuery};
use serde::Serialize;

/// Search criteria (Zato's `search`, with working ordering).
#[derive(Debug, Clone, Default)]
pub struct SearchInput {
    pub username: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub approval_status: Option<ApprovalStatus>,
    pub sign_up_status: Option<SignUpStatus>,
    pub is_locked: Option<bool>,
    pub order: UserOrder,
    /// 1-based.
    pub page: i64,
    pub page_size: i64,
}

impl SearchInput {
    /// The filters and order (paging is the caller's).
    fn query(self) -> UserQuery {
        UserQuery {
            username: self.username,
            email: self.email,
            name: self.name,
            approval_status: self.approval_status,
            sign_up_status: self.sign_up_status,
            is_locked: self.is_locked,
            order: self.order,
            offset: 0,
            limit: 0,
        }
    }
}

pub const DEFAULT_PAGE_SIZE: i64 = 50;

/// The most users one export batch reads.
pub const EXPORT_BATCH: i64 = 1000;

pub const MAX_PAGE_SIZE: i64 = 100;

/// One page of users, with Zato's paging metadata.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchPage {
    pub total: i64,
    pub num_pages: i64,
    pub page_size: i64,
    pub cur_page: i64,
    pub has_next_page: bool,
    pub has_prev_page: bool,
    pub next_page: Option<i64>,
    pub prev_page: Option<i64>,
    pub result: Vec<UserView>,
}

impl Directory {
    /// `GET /api/users/{id}` in one round trip: authenticates `token` and reads `id` together.
    /// The same visibility rule as [`Directory::get_user`]: a regular user sees only themself.
    pub async fn get_user_with_token(&self, token: &str, id: UserId) -> Result<UserView, DomainError> {
        let (auth, target) = self.authenticate_with(token, id.uuid()).await?;
        match target {
            Some(user) if auth.is_super_user() || user.uuid == auth.user.uuid => {
                Ok(UserView::of(&user, auth.is_super_user()))
            }
            _ => Err(DomainError::not_found("user")),
        }
    }

    pub async fn get_user(&self, auth: &Auth, target: UserTarget) -> Result<UserView, DomainError> {
        let (user, _) = self.load_target(auth, target).await?;
        Ok(UserView::of(&user, auth.is_super_user()))
    }

    /// Super-user search with filters and paging.
    pub async fn search_users(&self, auth: &Auth, input: SearchInput) -> Result<SearchPage, DomainError> {
        auth.require_super_user()?;
        let page_size = if input.page_size <= 0 {
            DEFAULT_PAGE_SIZE
        } else {
            input.page_size.min(MAX_PAGE_SIZE)
        };
        let cur_page = input.page.max(1);
        let query = UserQuery {
            offset: (cur_page - 1).saturating_mul(page_size),
            limit: page_size,
            ..input.query()
        };
        let (total, users) = self.store.search_users(&query).await.map_err(store_error)?;
        let num_pages = (total + page_size - 1) / page_size;
        Ok(SearchPage {
            total,
            num_pages,
            page_size,
            cur_page,
            has_next_page: cur_page < num_pages,
            has_prev_page: cur_page > 1,
            next_page: (cur_page < num_pages).then(|| cur_page + 1),
            prev_page: (cur_page > 1).then(|| cur_page - 1),
            result: users.iter().map(|u| UserView::of(u, true)).collect(),
        })
    }

    /// Super-user export: the next `limit` users matching `input` (its paging fields unused)
    /// after `after`, and where the next batch starts (None after the last). For streaming
    /// every match, e.g. as CSV: keyset paging, so the whole export costs one pass.
    pub async fn export_users(
        &self,
        auth: &Auth,
        input: SearchInput,
        after: Option<UserCursor>,
        limit: i64,
    ) -> Result<(Vec<UserView>, Option<UserCursor>), DomainError> {
        auth.require_super_user()?;
        let (users, next) = self
            .store
            .export_users(&input.query(), after.as_ref(), limit.clamp(1, EXPORT_BATCH))
            .await
            .map_err(store_error)?;
        Ok((users.iter().map(|u| UserView::of(u, true)).collect(), next))
    }
}
