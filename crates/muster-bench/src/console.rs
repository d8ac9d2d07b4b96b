//! The `console` scenario: every list and detail page of the web console at scale, and the CSV
//! export of every user.
//!
//! Setup: 10 providers with 2 offerings each and `--accounts` offering accounts (and the
//! people they belong to) bulk-loaded with SQL as in the `offerings` scenario; more users
//! bulk-loaded until `--users` are stored; then `--groups` user groups and
//! `--subscriptions` subscriptions in all, made by real `create_user_group` and `create_user`
//! workflows over HTTP (so the processes, their steps, the subscriptions and the audit log are
//! what muster itself writes).
//!
//! Measured: each page fetched by `--page-clients` concurrent clients with a console session
//! cookie, `--page-requests` times, as a browser would (full server-side rendering, the whole
//! body read); then `GET /users.csv` (every user, streamed) with the server's resident memory
//! sampled during the download.

use crate::offerings::{Site, bulk_load, bulk_users, sites};
use crate::workflows::{USER_GROUP, USER_INTERNAL, start, wait};
use crate::{Args, Server, client, rss_kib};
use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The console's session cookie (`crates/muster-console/src/auth.rs`).
const SESSION_COOKIE: &str = "muster_session";

async fn get_json(c: &reqwest::Client, base: &str, token: &str, path: &str) -> Result<Value> {
    Ok(c.get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// `groups` user groups, then users in them until `subscriptions` subscriptions exist, by
/// `clients` concurrent clients through the workflows. Returns (a group's subscription id,
/// a user's subscription id, a create_user process id).
async fn make_subscriptions(
    server: &Server,
    token: &str,
    groups: usize,
    subscriptions: usize,
    clients: usize,
) -> Result<(String, String, String)> {
    let c = client()?;
    let base = &server.base;
    let mut group_ids = Vec::new();
    for g in 0..groups {
        let pid = start(
            &c,
            base,
            token,
            "create_user_group",
            json!([{"product": USER_GROUP}, {"group_name": format!("Console group {g}")}]),
        )
        .await?;
        let p = wait(&c, base, token, &pid, Duration::from_millis(10)).await?;
        let sid = p["current_state"]["subscription_id"].as_str().context("group id")?;
        group_ids.push(sid.to_owned());
    }
    let group_ids = Arc::new(group_ids);
    let users = subscriptions.saturating_sub(groups);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (c, base, token, next, group_ids) = (
            c.clone(),
            base.clone(),
            token.to_owned(),
            next.clone(),
            group_ids.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut last = None;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= users {
                    return Ok::<_, anyhow::Error>(last);
                }
                let pages = json!([{"product": USER_INTERNAL}, {
                    "username": format!("wu{n}"), "age": 30,
                    "user_group_ids": [group_ids[n % group_ids.len()]],
                    "first_name": "Console", "last_name": format!("Person {n}"),
                    "email": format!("wu{n}@example.org"),
                }]);
                let pid = start(&c, &base, &token, "create_user", pages).await?;
                let p = wait(&c, &base, &token, &pid, Duration::from_millis(20)).await?;
                if p["last_status"] != "completed" {
                    bail!("create_user {n}: {}", p["last_status"]);
                }
                let sid = p["current_state"]["subscription_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                last = Some((sid, pid));
            }
        }));
    }
    let mut last = None;
    for t in tasks {
        if let Some(l) = t.await?? {
            last = Some(l);
        }
    }
    let (user_sub, pid) = last.context("no user subscription was made")?;
    Ok((group_ids[0].clone(), user_sub, pid))
}

/// One page fetched `requests` times by `clients` concurrent clients; prints its latencies.
async fn measure_page(base: &str, cookie: &str, path: &str, clients: usize, requests: usize) -> Result<(f64, f64)> {
    let c = client()?;
    // Warm up: the first render of a template, the first use of a query plan.
    for _ in 0..3 {
        fetch(&c, base, cookie, path).await?;
    }
    let left = Arc::new(AtomicUsize::new(requests));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (c, base, cookie, path, left) = (
            c.clone(),
            base.to_owned(),
            cookie.to_owned(),
            path.to_owned(),
            left.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut bytes = 0usize;
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let t0 = Instant::now();
                bytes = fetch(&c, &base, &cookie, &path).await?;
                h.record((t0.elapsed().as_micros() as u64).max(1))?;
            }
            Ok::<_, anyhow::Error>((h, bytes))
        }));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut bytes = 0;
    for t in tasks {
        let (h, b) = t.await??;
        all.add(&h)?;
        bytes = bytes.max(b);
    }
    let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "console: {path:<60} p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  ({} requests, {} clients, {:.0} KiB)",
        ms(0.5),
        ms(0.99),
        all.max() as f64 / 1000.0,
        all.len(),
        clients,
        bytes as f64 / 1024.0
    );
    Ok((ms(0.5), ms(0.99)))
}

/// GETs a console page with the session cookie; fails on anything but a whole HTML page.
async fn fetch(c: &reqwest::Client, base: &str, cookie: &str, path: &str) -> Result<usize> {
    let r = c
        .get(format!("{base}{path}"))
        .header("cookie", format!("{SESSION_COOKIE}={cookie}"))
        .send()
        .await?;
    let status = r.status();
    let body = r.text().await?;
    if !status.is_success() || !body.contains("</html>") {
        bail!("GET {path}: {status}: {}", body.chars().take(300).collect::<String>());
    }
    Ok(body.len())
}

/// `GET /users.csv` (every user), with the server's resident memory sampled meanwhile.
async fn measure_csv(server: &Server, cookie: &str, users: usize) -> Result<()> {
    let c = client()?;
    let before = rss_kib(server.pid).unwrap_or(0);
    let peak = Arc::new(AtomicU64::new(before));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done, pid) = (peak.clone(), done.clone(), server.pid);
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Some(r) = rss_kib(pid) {
                    peak.fetch_max(r, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let t0 = Instant::now();
    let mut r = c
        .get(format!("{}/users.csv", server.base))
        .header("cookie", format!("{SESSION_COOKIE}={cookie}"))
        .send()
        .await?
        .error_for_status()?;
    let first_byte = t0.elapsed();
    let (mut bytes, mut lines) = (0usize, 0usize);
    while let Some(chunk) = r.chunk().await? {
        bytes += chunk.len();
        lines += chunk.iter().filter(|b| **b == b'\n').count();
    }
    let total = t0.elapsed();
    done.store(true, Ordering::Relaxed);
    sampler.await?;
    let rows = lines.saturating_sub(1);
    println!(
        "console: GET /users.csv: {rows} rows, {:.1} MiB in {:.2} s (first byte after {:.0} ms); server RSS {:.1} MiB before, peak {:.1} MiB during",
        bytes as f64 / 1048576.0,
        total.as_secs_f64(),
        first_byte.as_secs_f64() * 1000.0,
        before as f64 / 1024.0,
        peak.load(Ordering::Relaxed) as f64 / 1024.0
    );
    if rows < users {
        bail!("the export had {rows} rows, {users} users are stored");
    }
    Ok(())
}

pub async fn scenario(args: &Args, server: &Server, admin: &str) -> Result<()> {
    let c = client()?;
    let base = &server.base;
    let sites: Vec<Site> = sites(&c, base, admin).await?;
    let t0 = Instant::now();
    bulk_load(&server.db_url, args.accounts).await?;
    let people = args.accounts.div_ceil(20);
    let more = args.users.saturating_sub(people + args.subscriptions);
    bulk_users(&server.db_url, "cu", more).await?;
    let loaded = Instant::now();
    println!(
        "console: bulk-loaded {} accounts and {} users in {:.1} s",
        args.accounts,
        people + more,
        t0.elapsed().as_secs_f64()
    );
    let t0 = Instant::now();
    let (group_sub, user_sub, pid) =
        make_subscriptions(server, admin, args.groups, args.subscriptions, args.workflow_clients).await?;
    println!(
        "console: {} subscriptions made by workflows in {:.1} s",
        args.subscriptions,
        t0.elapsed().as_secs_f64()
    );
    // The server folds the account tallies every 30 s; the bulk load left a row per account.
    if let Some(left) = Duration::from_secs(31).checked_sub(loaded.elapsed()) {
        tokio::time::sleep(left).await;
    }
    // A settled PostgreSQL: autovacuum would have visited the tables the setup just filled
    // (and left full of dead row versions) before anyone measured a live system.
    if !server.db_url.starts_with("sqlite:") {
        let pool = sqlx::PgPool::connect(&server.db_url).await?;
        sqlx::query("VACUUM ANALYZE").execute(&pool).await?;
        pool.close().await;
    }
    let total_users = get_json(&c, base, admin, "/api/users?page_size=1").await?["total"]
        .as_u64()
        .unwrap_or(0);
    println!("console: {total_users} users stored");

    // Ids for the detail pages.
    let user = get_json(&c, base, admin, "/api/users?username=bu777").await?;
    let user = user["result"][0]["user_id"].as_str().context("bu777")?.to_owned();
    let provider = &sites[0].provider;
    let account = get_json(
        &c,
        base,
        admin,
        &format!("/api/marketplace-offering-users/?provider_uuid={provider}&page_size=1"),
    )
    .await?;
    let account = account[0]["uuid"].as_str().context("an account")?.to_owned();

    let cookie = admin;
    let pages = [
        "/".to_owned(),
        "/users".to_owned(),
        "/users?page=900".to_owned(),
        "/users?name=user%2077&sort=-sign_up_time".to_owned(),
        format!("/users/{user}"),
        "/subscriptions".to_owned(),
        "/subscriptions?tab=all&page=90".to_owned(),
        "/subscriptions?q=Person%207".to_owned(),
        format!("/subscriptions/{group_sub}"),
        format!("/subscriptions/{user_sub}"),
        "/processes".to_owned(),
        "/processes?page=90".to_owned(),
        format!("/processes/{pid}"),
        "/accounts".to_owned(),
        "/accounts?page=9000".to_owned(),
        format!("/accounts?provider={provider}&state=Pending%20additional%20validation&state=Error%20creating"),
        format!("/accounts/{account}"),
        "/providers".to_owned(),
        format!("/providers/{provider}"),
        "/audit".to_owned(),
        "/catalogue".to_owned(),
        "/start/create_user?product=091035e7-95a1-5997-8286-74a4ad1cc551".to_owned(),
        "/me".to_owned(),
    ];
    let mut worst = (0.0f64, 0.0f64);
    for p in &pages {
        let (p50, p99) = measure_page(base, cookie, p, args.page_clients, args.page_requests).await?;
        worst = (worst.0.max(p50), worst.1.max(p99));
    }
    println!(
        "console: slowest page: p50 {:.2} ms, p99 {:.2} ms (targets: 50 ms, 150 ms)",
        worst.0, worst.1
    );
    measure_csv(server, cookie, total_users as usize).await?;
    Ok(())
}
