//! The `offerings` scenario: offering accounts at scale.
//!
//! Setup: providers, offerings and one API token per provider are created over HTTP; then
//! `--accounts` accounts (and the people they belong to) are bulk-loaded with SQL, because
//! creating a million rows through the API would measure nothing of interest. The state mix
//! resembles a live site: most accounts OK, a few percent in each creation state.
//!
//! (a) Dashboard list: `GET /api/marketplace-offering-users/?provider_uuid=P&state=Pending
//!     additional validation&state=Pending account linking&page_size=100` by `--list-clients`
//!     concurrent clients (random provider, random page among the first five).
//! (b) Transitions: `--agents` concurrent agents, each with its provider's token, drive their
//!     own `Requested` accounts through begin_creating → set_pending_additional_validation →
//!     set_validation_complete → request_deletion → set_deleting → set_deleted.

use crate::{Args, Server, client};
use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use muster_core::offering::lifecycle::AccountState;
use rand::Rng;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const PROVIDERS: usize = 10;
const OFFERINGS_PER_PROVIDER: usize = 2;
const BASE: &str = "/api/marketplace-offering-users/";

/// The state of account number `n` (deterministic): percent buckets.
/// OK 80, Requested 5, Creating 3, Pending additional validation 3, Pending account linking 3,
/// Error creating 2, Deleted 2, Requested deletion 1, Error deleting 1.
const STATE_SQL: &str = "CASE \
    WHEN b < 80 THEN 'ok' WHEN b < 85 THEN 'requested' WHEN b < 88 THEN 'creating' \
    WHEN b < 91 THEN 'pending_additional_validation' WHEN b < 94 THEN 'pending_account_linking' \
    WHEN b < 96 THEN 'error_creating' WHEN b < 98 THEN 'deleted' WHEN b < 99 THEN 'deletion_requested' \
    ELSE 'error_deleting' END";

pub(crate) struct Site {
    pub provider: String,
    pub token: String,
}

async fn post(c: &reqwest::Client, url: String, token: &str, body: Value) -> Result<Value> {
    Ok(c.post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

pub(crate) async fn sites(c: &reqwest::Client, base: &str, admin: &str) -> Result<Vec<Site>> {
    let mut out = Vec::new();
    for p in 0..PROVIDERS {
        let provider = post(
            c,
            format!("{base}/api/marketplace-service-providers/"),
            admin,
            json!({"name": format!("Provider {p}")}),
        )
        .await?;
        let provider = provider["uuid"].as_str().context("provider uuid")?.to_owned();
        for o in 0..OFFERINGS_PER_PROVIDER {
            post(
                c,
                format!("{base}/api/marketplace-provider-offerings/"),
                admin,
                json!({"name": format!("Offering {p}-{o}"), "slug": format!("bench-{p}-{o}"), "provider_uuid": provider}),
            )
            .await?;
        }
        let token = post(
            c,
            format!("{base}/api/marketplace-service-providers/{provider}/api_tokens/"),
            admin,
            json!({"name": format!("agent-{p}")}),
        )
        .await?;
        out.push(Site {
            provider,
            token: token["key"].as_str().context("key")?.to_owned(),
        });
    }
    Ok(out)
}

/// SQL that inserts `count` approved, active users named `{prefix}1` … (`now`: SQLite's
/// microseconds; PostgreSQL uses its own clock).
fn users_sql(sqlite: bool, prefix: &str, count: usize, now: i64) -> String {
    const COLUMNS: &str = "uuid, username, username_key, email, email_key, first_name, last_name, search_names, \
         is_active, is_internal, is_super_user, is_approval_needed, approval_status, approval_status_mod_by, \
         approval_status_mod_time, is_locked, password_hash, password_is_set, password_must_change, \
         password_last_set, password_expiry, sign_up_status, sign_up_time, is_totp_enabled, totp_key_sealed, \
         totp_label, updated_at";
    if sqlite {
        format!(
            "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {count}) \
             INSERT INTO users ({COLUMNS}) \
             SELECT randomblob(16), '{prefix}' || n, '{prefix}' || n, '{prefix}' || n || '@example.org', '{prefix}' || n || '@example.org', \
             'Bench', 'User ' || n, 'bench' || char(31) || 'user ' || n, 1, 0, 0, 0, 'approved', 'bench', {now}, 0, \
             'x', 1, 0, {now}, {now} + 31536000000000, 'final', {now}, 0, '', 'bench', {now} FROM g"
        )
    } else {
        format!(
            "INSERT INTO users ({COLUMNS}) \
             SELECT gen_random_uuid(), '{prefix}' || n, '{prefix}' || n, '{prefix}' || n || '@example.org', '{prefix}' || n || '@example.org', \
             'Bench', 'User ' || n, 'bench' || chr(31) || 'user ' || n, true, false, false, false, 'approved', 'bench', \
             now(), false, 'x', true, false, now(), now() + interval '1 year', 'final', now(), false, '', 'bench', now() \
             FROM generate_series(1, {count}) n"
        )
    }
}

/// Bulk-loads `count` users named `{prefix}1` … with SQL (no accounts).
pub(crate) async fn bulk_users(url: &str, prefix: &str, count: usize) -> Result<()> {
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await?;
        sqlx::query("PRAGMA busy_timeout = 60000").execute(&pool).await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_micros() as i64;
        sqlx::query(sqlx::AssertSqlSafe(users_sql(true, prefix, count, now)))
            .execute(&pool)
            .await?;
        sqlx::query("ANALYZE").execute(&pool).await?;
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(url).await?;
        sqlx::query(sqlx::AssertSqlSafe(users_sql(false, prefix, count, 0)))
            .execute(&pool)
            .await?;
        sqlx::query("VACUUM ANALYZE users").execute(&pool).await?;
        pool.close().await;
    }
    Ok(())
}

/// Bulk-loads people and accounts with SQL: every person gets an account on every offering.
pub(crate) async fn bulk_load(url: &str, accounts: usize) -> Result<()> {
    let offerings = PROVIDERS * OFFERINGS_PER_PROVIDER;
    let people = accounts.div_ceil(offerings);
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await?;
        sqlx::query("PRAGMA busy_timeout = 60000").execute(&pool).await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_micros() as i64;
        let users = users_sql(true, "bu", people, now);
        sqlx::query(sqlx::AssertSqlSafe(users)).execute(&pool).await?;
        // A deterministic, evenly spread state bucket per (person, offering).
        let accounts = format!(
            "INSERT INTO offering_users (uuid, offering_uuid, provider_uuid, user_uuid, username, state, runtime_state, \
             is_restricted, service_provider_comment, service_provider_comment_url, version, created, modified) \
             SELECT randomblob(16), o, p, u, CASE WHEN s IN ('requested', 'creating', 'pending_additional_validation', \
             'pending_account_linking', 'error_creating') THEN '' ELSE 'l' || name END, s, 'active', 0, '', '', 1, \
             {now} - n * 1000, {now} - n * 1000 \
             FROM (SELECT o, p, u, name, n, {STATE_SQL} AS s FROM \
                   (SELECT o.uuid AS o, o.provider_uuid AS p, u.uuid AS u, u.username AS name, u.rowid AS n, \
                    (u.rowid * 37 + o.rowid * 11) % 100 AS b \
                    FROM users u CROSS JOIN offerings o WHERE u.username LIKE 'bu%'))"
        );
        sqlx::query(sqlx::AssertSqlSafe(accounts)).execute(&pool).await?;
        sqlx::query("ANALYZE").execute(&pool).await?;
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(url).await?;
        let users = users_sql(false, "bu", people, 0);
        sqlx::query(sqlx::AssertSqlSafe(users)).execute(&pool).await?;
        let accounts = format!(
            "INSERT INTO offering_users (uuid, offering_uuid, provider_uuid, user_uuid, username, state, runtime_state, \
             is_restricted, service_provider_comment, service_provider_comment_url, version, created, modified) \
             SELECT gen_random_uuid(), o, p, u, CASE WHEN s IN ('requested', 'creating', \
             'pending_additional_validation', 'pending_account_linking', 'error_creating') THEN '' ELSE 'l' || name END, \
             s, 'active', false, '', '', 1, now() - n * interval '1 ms', now() - n * interval '1 ms' \
             FROM (SELECT o, p, u, name, n, {STATE_SQL} AS s FROM \
                   (SELECT o.uuid AS o, o.provider_uuid AS p, u.uuid AS u, u.username AS name, \
                    substr(u.username, 3)::bigint AS n, abs(hashtext(u.username || o.slug)) % 100 AS b \
                    FROM users u CROSS JOIN offerings o WHERE u.username LIKE 'bu%') x) y"
        );
        sqlx::query(sqlx::AssertSqlSafe(accounts)).execute(&pool).await?;
        sqlx::query("VACUUM ANALYZE offering_users").execute(&pool).await?;
        sqlx::query("VACUUM ANALYZE users").execute(&pool).await?;
        pool.close().await;
    }
    Ok(())
}

/// Prints the plan of the dashboard query, as the server would run it.
async fn explain(url: &str, provider: &str) -> Result<()> {
    let store = muster_store::Store::connect(url, &muster_store::StoreOptions::default()).await?;
    let q = muster_store::AccountQuery {
        provider_uuids: vec![uuid::Uuid::parse_str(provider)?],
        states: vec![
            AccountState::PendingAdditionalValidation,
            AccountState::PendingAccountLinking,
        ],
        limit: 100,
        ..Default::default()
    };
    let plan = store.explain_offering_users(&q).await?;
    println!("offerings: dashboard query plan:\n{plan}");
    store.close().await;
    Ok(())
}

fn dashboard_url(base: &str, provider: &str, page: u32) -> String {
    format!(
        "{base}{BASE}?provider_uuid={provider}&state=Pending%20additional%20validation&state=Pending%20account%20linking&page_size=100&page={page}"
    )
}

async fn measure_list(args: &Args, server: &Server, sites: &Arc<Vec<Site>>) -> Result<()> {
    let c = client()?;
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..args.list_clients {
        let (c, base, sites, stop, measuring) = (
            c.clone(),
            server.base.clone(),
            sites.clone(),
            stop.clone(),
            measuring.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut errors = 0u64;
            let mut rows = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (site, page) = {
                    let mut rng = rand::thread_rng();
                    (&sites[rng.gen_range(0..sites.len())], rng.gen_range(1..=5))
                };
                let t0 = Instant::now();
                let ok = match c
                    .get(dashboard_url(&base, &site.provider, page))
                    .header("authorization", format!("Token {}", site.token))
                    .send()
                    .await
                {
                    Ok(r) if r.status().as_u16() == 200 => match r.json::<Value>().await {
                        Ok(v) => {
                            if measuring.load(Ordering::Relaxed) {
                                rows += v.as_array().map(|a| a.len() as u64).unwrap_or(0);
                            }
                            true
                        }
                        Err(_) => false,
                    },
                    _ => false,
                };
                let us = t0.elapsed().as_micros() as u64;
                if measuring.load(Ordering::Relaxed) {
                    if ok {
                        h.record(us.max(1))?;
                    } else {
                        errors += 1;
                    }
                }
            }
            Ok::<_, anyhow::Error>((h, errors, rows))
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let start = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut errors, mut rows) = (0, 0);
    for t in tasks {
        let (h, e, r) = t.await??;
        all.add(&h)?;
        errors += e;
        rows += r;
    }
    let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "offerings/list: provider + 2 states, page_size=100, {} clients: {:.0} req/s, p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {:.0} rows/page, errors {errors}",
        args.list_clients,
        all.len() as f64 / elapsed,
        ms(0.5),
        ms(0.95),
        ms(0.99),
        all.max() as f64 / 1000.0,
        rows as f64 / (all.len().max(1) as f64),
    );
    Ok(())
}

const CYCLE: [(&str, bool); 6] = [
    ("begin_creating", false),
    ("set_pending_additional_validation", true),
    ("set_validation_complete", false),
    ("request_deletion", false),
    ("set_deleting", false),
    ("set_deleted", false),
];

/// `Requested` accounts of a provider, up to `n`, as its agent lists them.
async fn requested(c: &reqwest::Client, base: &str, site: &Site, n: usize) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut page = 1;
    while out.len() < n {
        let v: Value = c
            .get(format!(
                "{base}{BASE}?provider_uuid={}&state=Requested&page_size=300&page={page}&field=uuid",
                site.provider
            ))
            .header("authorization", format!("Token {}", site.token))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let items = v.as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            break;
        }
        out.extend(items.iter().filter_map(|i| i["uuid"].as_str().map(str::to_owned)));
        page += 1;
    }
    Ok(out)
}

async fn measure_transitions(args: &Args, server: &Server, sites: &Arc<Vec<Site>>) -> Result<()> {
    let c = client()?;
    // Agents of the same provider take disjoint slices of its Requested accounts.
    let per_agent = 600;
    let mut work: Vec<(usize, Vec<String>)> = Vec::new();
    for (p, site) in sites.iter().enumerate() {
        let agents: Vec<usize> = (0..args.agents).filter(|a| a % sites.len() == p).collect();
        if agents.is_empty() {
            continue;
        }
        let list = requested(&c, &server.base, site, per_agent * agents.len()).await?;
        for (i, a) in agents.iter().enumerate() {
            let slice: Vec<String> = list.iter().skip(i).step_by(agents.len()).cloned().collect();
            work.push((*a, slice));
        }
    }
    let done = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (agent, accounts) in work {
        let site = &sites[agent % sites.len()];
        let (c, base, token) = (c.clone(), server.base.clone(), site.token.clone());
        let (done, refused, failed, stop, measuring) = (
            done.clone(),
            refused.clone(),
            failed.clone(),
            stop.clone(),
            measuring.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            'accounts: for id in accounts {
                for (action, with_comment) in CYCLE {
                    if stop.load(Ordering::Relaxed) {
                        break 'accounts;
                    }
                    let mut req = c
                        .post(format!("{base}{BASE}{id}/{action}/"))
                        .header("authorization", format!("Token {token}"));
                    if with_comment {
                        req = req.json(&json!({"comment": "Please verify your affiliation", "comment_url": "https://example.org/verify"}));
                    }
                    let t0 = Instant::now();
                    let status = req.send().await.map(|r| r.status().as_u16());
                    let us = t0.elapsed().as_micros() as u64;
                    let counting = measuring.load(Ordering::Relaxed);
                    match status {
                        Ok(200) if counting => {
                            done.fetch_add(1, Ordering::Relaxed);
                            h.record(us.max(1))?;
                        }
                        Ok(400) if counting => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(200) | Ok(400) => {}
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            Ok::<_, anyhow::Error>(h)
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let start = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    let elapsed = start.elapsed().as_secs_f64();
    let counted = done.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in tasks {
        all.add(&t.await??)?;
    }
    if failed.load(Ordering::Relaxed) > 0 {
        println!(
            "offerings/transitions: {} requests failed",
            failed.load(Ordering::Relaxed)
        );
    }
    let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "offerings/transitions: {} agents (provider tokens): {:.0} transitions/s, p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, refused {}",
        args.agents,
        counted as f64 / elapsed,
        ms(0.5),
        ms(0.95),
        ms(0.99),
        refused.load(Ordering::Relaxed),
    );
    Ok(())
}

pub async fn scenario(args: &Args, server: &Server, admin: &str) -> Result<()> {
    let c = client()?;
    let sites = Arc::new(sites(&c, &server.base, admin).await?);
    println!(
        "offerings: bulk-loading {} accounts ({PROVIDERS} providers x {OFFERINGS_PER_PROVIDER} offerings) …",
        args.accounts
    );
    let t0 = Instant::now();
    bulk_load(&server.db_url, args.accounts).await?;
    println!("offerings: loaded in {:.1} s", t0.elapsed().as_secs_f64());
    let count = c
        .head(format!("{}{BASE}", server.base))
        .bearer_auth(admin)
        .send()
        .await?
        .headers()
        .get("x-result-count")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_default();
    println!("offerings: X-Result-Count over all accounts: {count}");
    if count.parse::<usize>().unwrap_or(0) < args.accounts {
        bail!("expected at least {} accounts", args.accounts);
    }
    explain(&server.db_url, &sites[0].provider).await?;
    measure_list(args, server, &sites).await?;
    measure_transitions(args, server, &sites).await?;
    Ok(())
}
