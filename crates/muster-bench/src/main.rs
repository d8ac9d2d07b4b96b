//! muster-bench: drives a real `muster serve` over HTTP, from a second process, the way clients
//! do, and prints the figures recorded in docs/benchmarks.md.
//!
//! Scenarios (all by default):
//! - `create`: users created with a password, against the raw argon2id rate of this machine
//!   (same parameters, same cores) measured in this process while the server is idle;
//! - `get`: `GET /api/users/{user_id}` with N users stored and C concurrent clients: latency
//!   percentiles, and the server's resident memory while under that load.
//! - `offerings`: offering accounts (not in the default set). Bulk-loads `--accounts` accounts
//!   with SQL (setup only), then measures (a) the dashboard list — one provider, two states,
//!   `page_size=100` — and (b) lifecycle transitions driven over HTTP by `--agents` concurrent
//!   agents with provider API tokens.
//! - `console`: every list and detail page of the web console with `--users` users,
//!   `--subscriptions` subscriptions (made by workflows) and `--accounts` offering accounts,
//!   and the CSV export of every user (not in the default set).

mod console;
mod offerings;

use anyhow::{Context, Result, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use muster_core::credentials::password::{Argon2Params, PasswordHasher};
use rand::Rng;
use serde_json::{Value, json};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

mod workflows;

#[derive(Parser)]
#[command(about = "Load generator for muster")]
struct Args {
    /// The muster binary to start (build it with --release).
    #[arg(long, default_value = "target/release/muster")]
    muster: String,
    /// `sqlite`, or `postgres` (a fresh schema on MUSTER_TEST_DATABASE_URL).
    #[arg(long, default_value = "sqlite")]
    db: String,
    /// Which scenarios: create, get, workflows, drain (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "create,get")]
    scenarios: Vec<String>,
    /// Seconds each measured phase runs.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Users stored before the GET phase.
    #[arg(long, default_value_t = 100_000)]
    users: usize,
    /// Concurrent clients in the GET phase.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Concurrent clients creating users with passwords.
    #[arg(long, default_value_t = 4)]
    create_clients: usize,
    /// Concurrent clients starting and awaiting create_user workflows.
    #[arg(long, default_value_t = 32)]
    workflow_clients: usize,
    /// The server's worker concurrency (`MUSTER_WORKER_CONCURRENCY`) in the workflow scenario.
    #[arg(long, default_value_t = 16)]
    worker_concurrency: usize,
    /// Processes queued at once in the drain scenario.
    #[arg(long, default_value_t = 10_000)]
    drain: u64,
    /// Offering accounts bulk-loaded for the `offerings` scenario.
    #[arg(long, default_value_t = 1_000_000)]
    accounts: usize,
    /// Concurrent clients of the dashboard list in the `offerings` scenario.
    #[arg(long, default_value_t = 4)]
    list_clients: usize,
    /// Subscriptions made by workflows in the `console` scenario (user groups included).
    #[arg(long, default_value_t = 10_000)]
    subscriptions: usize,
    /// User groups among them.
    #[arg(long, default_value_t = 100)]
    groups: usize,
    /// Concurrent clients per page in the `console` scenario (1: the server's time to render
    /// a page, without queueing behind other requests).
    #[arg(long, default_value_t = 1)]
    page_clients: usize,
    /// Requests per page in the `console` scenario.
    #[arg(long, default_value_t = 200)]
    page_requests: usize,
    /// Concurrent agents (provider tokens) driving transitions in the `offerings` scenario.
    #[arg(long, default_value_t = 16)]
    agents: usize,
}

const ADMIN_PASSWORD: &str = "bench-Adm1n-s3cret";

struct Server {
    child: tokio::process::Child,
    base: String,
    pid: u32,
    db_url: String,
    data_dir: std::path::PathBuf,
    _data: tempfile::TempDir,
    _db: muster_store::testing::TestDb,
}

async fn start_server(args: &Args) -> Result<Server> {
    // The drain scenario queues with no worker in `serve`, then starts `muster worker`.
    let worker = if args.scenarios.iter().any(|s| s == "drain") {
        "0".to_owned()
    } else {
        args.worker_concurrency.to_string()
    };
    let db = match args.db.as_str() {
        "sqlite" => muster_store::testing::TestDb::sqlite(),
        "postgres" => muster_store::testing::TestDb::postgres()
            .await
            .context("set MUSTER_TEST_DATABASE_URL")?,
        other => bail!("unknown --db {other}"),
    };
    let data = tempfile::tempdir()?;
    let mut child = tokio::process::Command::new(&args.muster)
        .arg("serve")
        .env("MUSTER_LISTEN", "127.0.0.1:0")
        .env("MUSTER_DATABASE_URL", &db.url)
        .env("MUSTER_DATA_DIR", data.path())
        .env("MUSTER_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("MUSTER_LOG", "warn")
        .env("MUSTER_WORKER_CONCURRENCY", &worker)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", args.muster))?;
    let pid = child.id().context("server pid")?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let base = loop {
        match lines.next_line().await? {
            Some(l) => {
                if let Some(b) = l.strip_prefix("muster listening on ") {
                    break b.to_owned();
                }
            }
            None => bail!("muster exited before listening"),
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Server {
        child,
        base,
        pid,
        db_url: db.url.clone(),
        data_dir: data.path().to_owned(),
        _data: data,
        _db: db,
    })
}

fn client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(60))
        .build()?)
}

async fn login(c: &reqwest::Client, base: &str) -> Result<String> {
    let r: Value = c
        .post(format!("{base}/api/session"))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(r["token"].as_str().context("token")?.to_owned())
}

/// The server's resident memory in KiB (Linux).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU time a process's live threads have used so far (the first field of each thread's
/// `/proc/<pid>/task/<tid>/schedstat`, in nanoseconds).
fn cpu_time(pid: u32) -> Option<Duration> {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path().join("schedstat");
        if let Ok(s) = std::fs::read_to_string(path) {
            ns += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Some(Duration::from_nanos(ns))
}

/// argon2id hashes per second on `threads` threads, for `secs` seconds, in this process.
fn raw_argon2_rate(threads: usize, secs: u64) -> Result<f64> {
    let hasher = PasswordHasher::new(Argon2Params::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (h, count) = (hasher.clone(), count.clone());
            s.spawn(move || {
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let _ = h.hash(&format!("raw-benchmark-password-{i}"));
                    count.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            });
        }
    });
    Ok(count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

async fn scenario_create(args: &Args, server: &Server, token: &str) -> Result<()> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    println!(
        "create: measuring raw argon2id (m=19456 KiB, t=2, p=1) on {cores} threads for {} s …",
        args.duration
    );
    let raw = tokio::task::spawn_blocking({
        let secs = args.duration;
        move || raw_argon2_rate(cores, secs)
    })
    .await??;
    println!("create: raw argon2id rate: {raw:.1} hashes/s");

    let c = client()?;
    let created = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..args.create_clients {
        let (c, base, token) = (c.clone(), server.base.clone(), token.to_owned());
        let (created, failed, stop) = (created.clone(), failed.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let body = json!({"username": format!("pw-{worker}-{i}"), "password": format!("Bench-passw0rd-{worker}-{i}-xyz")});
                match c.post(format!("{base}/api/users")).bearer_auth(&token).json(&body).send().await {
                    Ok(r) if r.status().as_u16() == 201 => created.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    let rate = created.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    println!(
        "create: {rate:.1} users/s over HTTP with passwords ({} created, {} failed, {} clients) = {:.1}% of raw argon2id",
        created.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        args.create_clients,
        100.0 * rate / raw
    );
    Ok(())
}

async fn scenario_get(args: &Args, server: &Server, token: &str) -> Result<()> {
    let c = client()?;
    println!(
        "get: seeding {} users (no password: the provisioning fast path) …",
        args.users
    );
    let seed_start = Instant::now();
    let ids = Arc::new(tokio::sync::Mutex::new(Vec::with_capacity(args.users)));
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (c, base, token, ids, next) = (
            c.clone(),
            server.base.clone(),
            token.to_owned(),
            ids.clone(),
            next.clone(),
        );
        let total = args.users as u64;
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(());
                }
                let r: Value = c
                    .post(format!("{base}/api/users"))
                    .bearer_auth(&token)
                    .json(&json!({"username": format!("user{i:07}"), "email": format!("user{i}@example.org"), "first_name": "Bench", "last_name": format!("User {i}")}))
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                ids.lock().await.push(r["user_id"].as_str().context("user_id")?.to_owned());
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let seed_secs = seed_start.elapsed().as_secs_f64();
    println!(
        "get: seeded in {seed_secs:.1} s ({:.0} users/s created without password)",
        args.users as f64 / seed_secs
    );
    let ids = Arc::new(ids.lock().await.clone());

    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let peak_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak, pid) = (stop.clone(), peak_rss.clone(), server.pid);
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Some(r) = rss_kib(pid) {
                    peak.fetch_max(r, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let (c, base, token, ids, stop, measuring) = (
            c.clone(),
            server.base.clone(),
            token.to_owned(),
            ids.clone(),
            stop.clone(),
            measuring.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = &ids[rand::thread_rng().gen_range(0..ids.len())];
                let t0 = Instant::now();
                let ok = match c.get(format!("{base}/api/users/{id}")).bearer_auth(&token).send().await {
                    Ok(r) => r.status().as_u16() == 200 && r.bytes().await.is_ok(),
                    Err(_) => false,
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
            Ok::<_, anyhow::Error>((h, errors))
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // warm-up, not measured
    let start = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    peak_rss.store(0, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await??;
        all.add(&h)?;
        errors += e;
    }
    sampler.await?;
    let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "get: {} users stored, {} clients, {:.0} req/s, p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms, errors {errors}",
        ids.len(),
        args.clients,
        all.len() as f64 / elapsed,
        ms(0.5),
        ms(0.95),
        ms(0.99),
        all.max() as f64 / 1000.0
    );
    println!(
        "get: server peak RSS under load: {:.1} MiB",
        peak_rss.load(Ordering::Relaxed) as f64 / 1024.0
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut server = start_server(&args).await?;
    let c = client()?;
    let token = login(&c, &server.base).await?;
    println!(
        "muster-bench: server {} on {} (pid {})",
        server.base, args.db, server.pid
    );
    if let Some(r) = rss_kib(server.pid) {
        println!("muster-bench: server RSS at start: {:.1} MiB", r as f64 / 1024.0);
    }
    for s in &args.scenarios {
        match s.as_str() {
            "create" => scenario_create(&args, &server, &token).await?,
            "get" => scenario_get(&args, &server, &token).await?,
            "workflows" => workflows::throughput(&server, &token, args.workflow_clients, args.duration).await?,
            "drain" => workflows::drain(&server, &token, args.drain, &args.muster).await?,
            "offerings" => offerings::scenario(&args, &server, &token).await?,
            "console" => console::scenario(&args, &server, &token).await?,
            other => bail!("unknown scenario {other}"),
        }
    }
    let _ = server.child.kill().await;
    Ok(())
}
