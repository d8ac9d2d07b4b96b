//! Finding users: filters and pages for the directory's list, and the keyset-paged export.

use crate::bind::{PushValue, SqlDb, contains_pattern};
use crate::users::{USER_COLUMNS, UserRow};
use crate::{Result, Store, Ts, on_db};
use muster_core::directory::{ApprovalStatus, SignUpStatus, User};
use time::OffsetDateTime;

/// Filters for [`Store::search_users`]. Every filter present must match.
#[derive(Debug, Clone, Default)]
pub struct UserQuery {
    /// Exact, case-insensitive.
    pub username: Option<String>,
    /// Exact, case-insensitive.
    pub email: Option<String>,
    /// Substring of any name (display, first, middle, last), case-insensitive.
    pub name: Option<String>,
    pub approval_status: Option<ApprovalStatus>,
    pub sign_up_status: Option<SignUpStatus>,
    pub is_locked: Option<bool>,
    pub order: UserOrder,
    pub offset: i64,
    pub limit: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UserOrder {
    #[default]
    Username,
    SignUpTime,
    SignUpTimeDesc,
}

fn push_user_filters<DB: SqlDb>(qb: &mut sqlx::QueryBuilder<DB>, q: &UserQuery) {
    qb.push(" WHERE 1=1");
    if let Some(v) = &q.username {
        qb.push(" AND username_key = ").push_value(User::username_key(v));
    }
    if let Some(v) = &q.email {
        qb.push(" AND email_key = ").push_value(v.to_lowercase());
    }
    if let Some(v) = &q.name {
        qb.push(" AND search_names LIKE ")
            .push_value(contains_pattern(v))
            .push(" ESCAPE '\\'");
    }
    if let Some(v) = q.approval_status {
        qb.push(" AND approval_status = ").push_value(v.as_str());
    }
    if let Some(v) = q.sign_up_status {
        qb.push(" AND sign_up_status = ").push_value(v.as_str());
    }
    if let Some(v) = q.is_locked {
        qb.push(" AND is_locked = ").push_value(v);
    }
}

impl Store {
    pub async fn count_users(&self) -> Result<i64> {
        Ok(on_db!(self, read, pool => {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM users").fetch_one(pool).await?
        }))
    }

    /// Users matching `q`, one page, and how many match in all.
    pub async fn search_users(&self, q: &UserQuery) -> Result<(i64, Vec<User>)> {
        // Byte order on both databases: PostgreSQL would otherwise sort by the database's
        // collation, and the same query would order names differently on the two backends.
        let key = match self.backend() {
            crate::Backend::Sqlite => "username_key",
            crate::Backend::Postgres => "username_key COLLATE \"C\"",
        };
        let order_by = match q.order {
            UserOrder::Username => format!(" ORDER BY {key}"),
            UserOrder::SignUpTime => format!(" ORDER BY sign_up_time, {key}"),
            UserOrder::SignUpTimeDesc => format!(" ORDER BY sign_up_time DESC, {key}"),
        };
        let (total, rows): (i64, Vec<UserRow>) = on_db!(self, read, pool => {
            let mut count = sqlx::QueryBuilder::new("SELECT COUNT(*) FROM users");
            push_user_filters(&mut count, q);
            let total: i64 = count.build_query_scalar().fetch_one(pool).await?;
            let mut page = sqlx::QueryBuilder::new(format!("SELECT {USER_COLUMNS} FROM users"));
            push_user_filters(&mut page, q);
            page.push(order_by);
            page.push(" LIMIT ").push_bind(q.limit.max(0)).push(" OFFSET ").push_bind(q.offset.max(0));
            (total, page.build_query_as().fetch_all(pool).await?)
        });
        let users = rows
            .into_iter()
            .map(|r| r.into_user().map(|(u, _)| u))
            .collect::<Result<_>>()?;
        Ok((total, users))
    }
}

/// Where an export of [`Store::export_users`] goes on from: the sort key of the last row sent.
#[derive(Debug, Clone)]
pub struct UserCursor {
    sign_up_time: OffsetDateTime,
    username_key: String,
}

/// A users row with its sort key, for [`Store::export_users`].
#[derive(sqlx::FromRow)]
struct ExportRow {
    #[sqlx(flatten)]
    user: UserRow,
    cursor_key: String,
}

impl Store {
    /// The next `limit` users matching `q` after `after`, in `q.order`, and where the next
    /// page starts (None after the last). Keyset paging, without a count: an export of every
    /// user costs one index range scan in all, where OFFSET paging would rescan what it skips
    /// on every page. `q.offset` and `q.limit` are not used.
    pub async fn export_users(
        &self,
        q: &UserQuery,
        after: Option<&UserCursor>,
        limit: i64,
    ) -> Result<(Vec<User>, Option<UserCursor>)> {
        let key = match self.backend() {
            crate::Backend::Sqlite => "username_key",
            crate::Backend::Postgres => "username_key COLLATE \"C\"",
        };
        let rows: Vec<ExportRow> = on_db!(self, read, pool => {
            let mut page = sqlx::QueryBuilder::new(format!("SELECT {USER_COLUMNS}, username_key AS cursor_key FROM users"));
            push_user_filters(&mut page, q);
            if let Some(c) = after {
                match q.order {
                    UserOrder::Username => {
                        page.push(format!(" AND {key} > ")).push_bind(c.username_key.clone());
                    }
                    UserOrder::SignUpTime => {
                        page.push(" AND (sign_up_time > ").push_bind(Ts(c.sign_up_time));
                        page.push(" OR (sign_up_time = ").push_bind(Ts(c.sign_up_time));
                        page.push(format!(" AND {key} > ")).push_bind(c.username_key.clone()).push("))");
                    }
                    UserOrder::SignUpTimeDesc => {
                        page.push(" AND (sign_up_time < ").push_bind(Ts(c.sign_up_time));
                        page.push(" OR (sign_up_time = ").push_bind(Ts(c.sign_up_time));
                        page.push(format!(" AND {key} > ")).push_bind(c.username_key.clone()).push("))");
                    }
                }
            }
            page.push(match q.order {
                UserOrder::Username => format!(" ORDER BY {key}"),
                UserOrder::SignUpTime => format!(" ORDER BY sign_up_time, {key}"),
                UserOrder::SignUpTimeDesc => format!(" ORDER BY sign_up_time DESC, {key}"),
            });
            page.push(" LIMIT ").push_bind(limit.max(0));
            page.build_query_as().fetch_all(pool).await?
        });
        let full = rows.len() as i64 >= limit.max(1);
        let mut next = None;
        let mut users = Vec::with_capacity(rows.len());
        for r in rows {
            let (u, _) = r.user.into_user()?;
            next = Some(UserCursor {
                sign_up_time: u.sign_up_time,
                username_key: r.cursor_key,
            });
            users.push(u);
        }
        Ok((users, next.filter(|_| full)))
    }
}
