//! Reading offering accounts: who may see which, filters, sort keys and pages, counts (from the
//! tallies where they suffice), and the provider-filtered event stream.

use crate::accounts::{ACCOUNT_SELECT, AccountRow};
use crate::bind::{PushValue, SqlDb, contains_pattern};
use crate::{Backend, Result, Store, Ts, on_db};
use muster_core::offering::lifecycle::{AccountState, RuntimeState};
use muster_core::offering::model::Account;
use time::OffsetDateTime;
use uuid::Uuid;

/// Which accounts a caller may see.
#[derive(Debug, Clone, Default)]
pub enum Visibility {
    #[default]
    All,
    /// Accounts of these providers, plus the accounts of this user.
    Limited { providers: Vec<Uuid>, user: Option<Uuid> },
}

/// A sort key for account lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountOrder {
    Created,
    Modified,
    Username,
    UserFirstName,
    UserLastName,
}

/// Filters for [`Store::list_offering_users`]; every filter present must match; lists are
/// OR-ed within themselves.
#[derive(Debug, Clone, Default)]
pub struct AccountQuery {
    pub visibility: Visibility,
    pub states: Vec<AccountState>,
    pub offering_uuids: Vec<Uuid>,
    pub provider_uuids: Vec<Uuid>,
    pub user_uuid: Option<Uuid>,
    /// Exact, case-insensitive match on the directory username.
    pub user_username: Option<String>,
    pub is_restricted: Option<bool>,
    pub runtime_states: Vec<RuntimeState>,
    /// Case-insensitive substring of offering name, local username, the person's names or
    /// directory username.
    pub query: Option<String>,
    pub created_from: Option<OffsetDateTime>,
    pub created_before: Option<OffsetDateTime>,
    pub modified_from: Option<OffsetDateTime>,
    pub modified_before: Option<OffsetDateTime>,
    /// Sort keys (descending when true); the default is username then uuid.
    pub order: Vec<(AccountOrder, bool)>,
    pub offset: i64,
    pub limit: i64,
}

impl AccountQuery {
    /// The same count as a query on `offering_user_tallies`, whose rows carry only provider,
    /// offering and state: None when `self` filters on anything else. A person's own accounts
    /// in the visibility do not matter when the provider filter keeps to visible providers.
    fn for_tallies(&self) -> Option<std::borrow::Cow<'_, AccountQuery>> {
        let other_filters = self.user_uuid.is_some()
            || self.user_username.is_some()
            || self.is_restricted.is_some()
            || !self.runtime_states.is_empty()
            || self.query.is_some()
            || self.created_from.is_some()
            || self.created_before.is_some()
            || self.modified_from.is_some()
            || self.modified_before.is_some();
        if other_filters {
            return None;
        }
        match &self.visibility {
            Visibility::All | Visibility::Limited { user: None, .. } => Some(std::borrow::Cow::Borrowed(self)),
            Visibility::Limited {
                providers,
                user: Some(_),
            } if !self.provider_uuids.is_empty() && self.provider_uuids.iter().all(|p| providers.contains(p)) => {
                Some(std::borrow::Cow::Owned(AccountQuery {
                    visibility: Visibility::All,
                    ..self.clone()
                }))
            }
            Visibility::Limited { .. } => None,
        }
    }

    /// Whether the filters need the users and offerings tables (otherwise counting reads only
    /// `offering_users` and its indexes).
    fn needs_joins(&self) -> bool {
        self.query.is_some() || self.user_username.is_some()
    }
}

fn push_account_filters<DB: SqlDb>(qb: &mut sqlx::QueryBuilder<DB>, q: &AccountQuery) {
    qb.push(" WHERE 1=1");
    if let Visibility::Limited { providers, user } = &q.visibility {
        qb.push(" AND (1=0");
        if !providers.is_empty() {
            qb.push(" OR ou.provider_uuid IN (");
            qb.push_list(providers.iter().copied());
            qb.push(")");
        }
        if let Some(u) = user {
            qb.push(" OR ou.user_uuid = ").push_value(*u);
        }
        qb.push(")");
    }
    if !q.states.is_empty() {
        qb.push(" AND ou.state IN (");
        qb.push_list(q.states.iter().map(|s| s.as_db()));
        qb.push(")");
    }
    if !q.offering_uuids.is_empty() {
        qb.push(" AND ou.offering_uuid IN (");
        qb.push_list(q.offering_uuids.iter().copied());
        qb.push(")");
    }
    if !q.provider_uuids.is_empty() {
        qb.push(" AND ou.provider_uuid IN (");
        qb.push_list(q.provider_uuids.iter().copied());
        qb.push(")");
    }
    if let Some(u) = q.user_uuid {
        qb.push(" AND ou.user_uuid = ").push_value(u);
    }
    if let Some(v) = &q.user_username {
        qb.push(" AND u.username_key = ")
            .push_value(muster_core::directory::User::username_key(v));
    }
    if let Some(v) = q.is_restricted {
        qb.push(" AND ou.is_restricted = ").push_value(v);
    }
    if !q.runtime_states.is_empty() {
        qb.push(" AND ou.runtime_state IN (");
        qb.push_list(q.runtime_states.iter().map(|s| s.as_db()));
        qb.push(")");
    }
    if let Some(v) = &q.query {
        let pattern = contains_pattern(v);
        qb.push(" AND (LOWER(o.name) LIKE ")
            .push_value(pattern.clone())
            .push(" ESCAPE '\\' OR LOWER(ou.username) LIKE ")
            .push_value(pattern.clone())
            .push(" ESCAPE '\\' OR u.search_names LIKE ")
            .push_value(pattern.clone())
            .push(" ESCAPE '\\' OR u.username_key LIKE ")
            .push_value(pattern)
            .push(" ESCAPE '\\')");
    }
    if let Some(v) = q.created_from {
        qb.push(" AND ou.created >= ").push_value(Ts(v));
    }
    if let Some(v) = q.created_before {
        qb.push(" AND ou.created < ").push_value(Ts(v));
    }
    if let Some(v) = q.modified_from {
        qb.push(" AND ou.modified >= ").push_value(Ts(v));
    }
    if let Some(v) = q.modified_before {
        qb.push(" AND ou.modified < ").push_value(Ts(v));
    }
}

/// Builds, after `prefix` (`""` or an `EXPLAIN`), the page query for `q` whose ORDER BY is
/// `order`.
///
/// When the page can be chosen from `offering_users` alone, it is: the inner query picks the
/// page's uuids from the account indexes (for the dashboard, `(provider_uuid, state, username,
/// uuid)` covers filter and order), and only those rows are joined with the offering, provider
/// and person. Joining first would look up every matching account's person and offering before
/// sorting: thousands of lookups for a page of a hundred.
fn page_query<DB: SqlDb>(prefix: &str, q: &AccountQuery, order: &str) -> sqlx::QueryBuilder<DB> {
    let mut qb = sqlx::QueryBuilder::new(prefix);
    qb.push(ACCOUNT_SELECT);
    if Store::page_from_accounts_alone(q) && q.states.len() > 1 {
        // Several states: the first `offset + limit` of each state (one ordered index range
        // each), merged. The page of the union is the page of those tops, so the database
        // never reads more than `offset + limit` entries per state however many match.
        let top = q.offset.max(0).saturating_add(q.limit.max(0));
        // Only the sort keys, so that an index holding them answers each state alone.
        let mut columns = String::from("ou.uuid, ou.username");
        for (key, _) in &q.order {
            let column = match key {
                AccountOrder::Created => ", ou.created",
                AccountOrder::Modified => ", ou.modified",
                _ => continue,
            };
            if !columns.contains(column) {
                columns.push_str(column);
            }
        }
        qb.push(" WHERE ou.uuid IN (SELECT uuid FROM (");
        for (i, state) in q.states.iter().enumerate() {
            if i > 0 {
                qb.push(" UNION ALL ");
            }
            let one = AccountQuery {
                states: vec![*state],
                ..q.clone()
            };
            qb.push(format!("SELECT * FROM (SELECT {columns} FROM offering_users ou"));
            push_account_filters(&mut qb, &one);
            qb.push(order);
            qb.push(" LIMIT ").push_value(top).push(format!(") AS s{i}"));
        }
        qb.push(") AS per_state");
        qb.push(order.replace("ou.", ""));
        qb.push(" LIMIT ")
            .push_value(q.limit.max(0))
            .push(" OFFSET ")
            .push_value(q.offset.max(0));
        qb.push(")");
        qb.push(order);
    } else if Store::page_from_accounts_alone(q) {
        qb.push(" WHERE ou.uuid IN (SELECT ou.uuid FROM offering_users ou");
        push_account_filters(&mut qb, q);
        qb.push(order);
        qb.push(" LIMIT ")
            .push_value(q.limit.max(0))
            .push(" OFFSET ")
            .push_value(q.offset.max(0));
        qb.push(")");
        qb.push(order);
    } else {
        push_account_filters(&mut qb, q);
        qb.push(order);
        qb.push(" LIMIT ")
            .push_value(q.limit.max(0))
            .push(" OFFSET ")
            .push_value(q.offset.max(0));
    }
    qb
}

impl Store {
    fn order_by(&self, order: &[(AccountOrder, bool)]) -> String {
        let mut keys: Vec<String> = order
            .iter()
            .map(|(key, desc)| {
                let column = match key {
                    AccountOrder::Created => "ou.created".to_owned(),
                    AccountOrder::Modified => "ou.modified".to_owned(),
                    AccountOrder::Username => self.binary("ou.username"),
                    AccountOrder::UserFirstName => self.binary("COALESCE(u.first_name, '')"),
                    AccountOrder::UserLastName => self.binary("COALESCE(u.last_name, '')"),
                };
                if *desc { format!("{column} DESC") } else { column }
            })
            .collect();
        if order.is_empty() {
            keys.push(self.binary("ou.username"));
        }
        // A unique last key makes pages stable. It runs the same way as the key before it, so
        // that one index, e.g. (modified, uuid), read forwards or backwards, gives the order.
        let last_desc = order.last().is_some_and(|(_, desc)| *desc);
        keys.push(if last_desc { "ou.uuid DESC" } else { "ou.uuid" }.to_owned());
        format!(" ORDER BY {}", keys.join(", "))
    }

    /// How many accounts match `q` (ignoring paging). Filters by provider, offering and state
    /// alone are answered from the tallies (`offering_user_tallies`): a few hundred rows
    /// however many accounts there are.
    pub async fn count_offering_users(&self, q: &AccountQuery) -> Result<i64> {
        if let Some(t) = q.for_tallies() {
            return Ok(on_db!(self, read, pool => {
                let mut qb = sqlx::QueryBuilder::new("SELECT COALESCE(SUM(ou.n), 0) FROM offering_user_tallies ou");
                push_account_filters(&mut qb, t.as_ref());
                qb.build_query_scalar().fetch_one(pool).await?
            }));
        }
        let from = if q.needs_joins() {
            "SELECT COUNT(*) FROM offering_users ou JOIN offerings o ON o.uuid = ou.offering_uuid \
             JOIN users u ON u.uuid = ou.user_uuid"
        } else {
            "SELECT COUNT(*) FROM offering_users ou"
        };
        Ok(on_db!(self, read, pool => {
            let mut qb = sqlx::QueryBuilder::new(from);
            push_account_filters(&mut qb, q);
            qb.build_query_scalar().fetch_one(pool).await?
        }))
    }

    /// Whether the page of `q` can be chosen from `offering_users` alone (no filter or sort key
    /// on the person or the offering).
    fn page_from_accounts_alone(q: &AccountQuery) -> bool {
        !q.needs_joins()
            && q.order
                .iter()
                .all(|(k, _)| !matches!(k, AccountOrder::UserFirstName | AccountOrder::UserLastName))
    }

    /// One page of the accounts matching `q`.
    pub async fn list_offering_users(&self, q: &AccountQuery) -> Result<Vec<Account>> {
        let order = self.order_by(&q.order);
        let rows: Vec<AccountRow> = on_db!(self, read, pool => {
            let mut qb = page_query("", q, &order);
            qb.build_query_as().fetch_all(pool).await?
        });
        rows.into_iter().map(AccountRow::into_account).collect()
    }

    /// Events of the `offering_users`-style `stream` after `after` whose data names one of
    /// `providers` (as hex `provider_uuid`), oldest first, at most `limit`.
    pub async fn events_after_for_providers(
        &self,
        stream: &str,
        providers: &[String],
        after: i64,
        limit: i64,
    ) -> Result<Vec<crate::EventRecord>> {
        let field = match self.backend() {
            Backend::Sqlite => "json_extract(data, '$.provider_uuid')",
            Backend::Postgres => "data->>'provider_uuid'",
        };
        Ok(on_db!(self, read, pool => {
            let mut qb = sqlx::QueryBuilder::new("SELECT seq, stream, kind, subject, at, cid, data FROM events WHERE stream = ");
            qb.push_bind(stream.to_owned()).push(" AND seq > ").push_bind(after).push(format!(" AND {field} IN (NULL"));
            for p in providers {
                qb.push(", ").push_bind(p.clone());
            }
            qb.push(") ORDER BY seq LIMIT ").push_bind(limit.max(0));
            qb.build_query_as().fetch_all(pool).await?
        }))
    }
}

impl Store {
    /// The query plan of the page query for `q` (PostgreSQL `EXPLAIN`, SQLite `EXPLAIN QUERY
    /// PLAN`), one line per row: for checking that list queries are answered from indexes.
    pub async fn explain_offering_users(&self, q: &AccountQuery) -> Result<String> {
        let postgres = self.backend() == Backend::Postgres;
        let prefix = if postgres { "EXPLAIN " } else { "EXPLAIN QUERY PLAN " };
        let order = self.order_by(&q.order);
        Ok(on_db!(self, read, pool => {
            let mut qb = page_query(prefix, q, &order);
            let rows = qb.build().fetch_all(pool).await?;
            let mut out = Vec::new();
            for row in rows {
                use sqlx::Row as _;
                // PostgreSQL: one text column; SQLite: (id, parent, notused, detail).
                let line: String = if postgres { row.try_get(0)? } else { row.try_get(3)? };
                out.push(line);
            }
            out.join("\n")
        }))
    }
}
