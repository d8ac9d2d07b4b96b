//! Workflow scenarios: `create_user` throughput end to end, engine overhead per step, and a
//! 10,000-process queue draining with flat memory.

use crate::{Server, cpu_time, rss_kib};
use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub(crate) const USER_INTERNAL: &str = "091035e7-95a1-5997-8286-74a4ad1cc551";
pub(crate) const USER_GROUP: &str = "31892964-6ad1-52eb-8c09-77fba68b51b6";

async fn post(c: &reqwest::Client, base: &str, token: &str, path: &str, body: Value) -> Result<(u16, Value)> {
    let r = c
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

async fn get(c: &reqwest::Client, base: &str, token: &str, path: &str) -> Result<Value> {
    Ok(c.get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

pub(crate) async fn start(c: &reqwest::Client, base: &str, token: &str, wf: &str, pages: Value) -> Result<String> {
    let (status, body) = post(c, base, token, &format!("/api/processes/{wf}"), pages).await?;
    if status != 201 {
        bail!("starting {wf}: {status} {body}");
    }
    Ok(body["id"].as_str().context("process id")?.to_owned())
}

/// Polls until the process is final; returns its last status.
pub(crate) async fn wait(c: &reqwest::Client, base: &str, token: &str, pid: &str, every: Duration) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let p = get(c, base, token, &format!("/api/processes/{pid}")).await?;
        match p["last_status"].as_str() {
            Some("completed" | "failed" | "aborted" | "suspended") => return Ok(p),
            _ if Instant::now() > deadline => bail!("process {pid} did not finish: {p}"),
            _ => tokio::time::sleep(every).await,
        }
    }
}

async fn make_group(c: &reqwest::Client, base: &str, token: &str) -> Result<String> {
    let pid = start(
        c,
        base,
        token,
        "create_user_group",
        json!([{"product": USER_GROUP}, {"group_name": "Benchmark group"}]),
    )
    .await?;
    let p = wait(c, base, token, &pid, Duration::from_millis(20)).await?;
    let sid = p["current_state"]["subscription_id"].as_str().context("group id")?;
    Ok(sid.to_owned())
}

fn user_pages(group: &str, n: u64, tag: &str) -> Value {
    json!([{"product": USER_INTERNAL}, {
        "username": format!("b{tag}{n}"), "age": 30, "user_group_ids": [group],
        "first_name": "Bench", "last_name": format!("User {n}"),
    }])
}

fn parse_ts(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// Microseconds between consecutive step completions of a finished process.
fn step_gaps_us(p: &Value) -> Vec<u64> {
    let steps = p["steps"].as_array().cloned().unwrap_or_default();
    let times: Vec<time::OffsetDateTime> = steps
        .iter()
        .filter_map(|s| s["completed"].as_str().and_then(parse_ts))
        .collect();
    times
        .windows(2)
        .map(|w| ((w[1] - w[0]).whole_microseconds().max(0)) as u64)
        .collect()
}

/// Follows `GET /api/events?stream=processes` as Server-Sent Events and hands each finished
/// process's status to whoever awaits it: how a client waits for many processes at once
/// without polling each.
#[derive(Default)]
struct Finished {
    waiting: std::sync::Mutex<std::collections::HashMap<String, tokio::sync::oneshot::Sender<String>>>,
    early: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl Finished {
    fn deliver(&self, pid: &str, status: &str) {
        let tx = self.waiting.lock().ok().and_then(|mut w| w.remove(pid));
        match tx {
            Some(tx) => {
                let _ = tx.send(status.to_owned());
            }
            None => {
                if let Ok(mut e) = self.early.lock() {
                    e.insert(pid.to_owned(), status.to_owned());
                }
            }
        }
    }

    async fn wait(&self, pid: &str) -> Result<String> {
        let rx = {
            if let Some(s) = self.early.lock().ok().and_then(|mut e| e.remove(pid)) {
                return Ok(s);
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            if let Ok(mut w) = self.waiting.lock() {
                w.insert(pid.to_owned(), tx);
            }
            // It may have finished between the two looks.
            if let Some(s) = self.early.lock().ok().and_then(|mut e| e.remove(pid)) {
                return Ok(s);
            }
            rx
        };
        Ok(tokio::time::timeout(Duration::from_secs(120), rx).await??)
    }
}

async fn follow(c: reqwest::Client, base: String, token: String, finished: Arc<Finished>) -> Result<()> {
    let mut r = c
        .get(format!("{base}/api/events?stream=processes"))
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .timeout(Duration::from_secs(3600))
        .send()
        .await?
        .error_for_status()?;
    let mut buf = String::new();
    let mut last = Instant::now();
    while let Some(chunk) = r.chunk().await? {
        let gap = last.elapsed();
        last = Instant::now();
        if gap > Duration::from_millis(300) && std::env::var_os("MUSTER_BENCH_TIMELINE").is_some() {
            eprintln!(
                "workflows: the event stream was silent for {:.0} ms",
                gap.as_secs_f64() * 1000.0
            );
        }
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find('\n') {
            let line: String = buf.drain(..=end).collect();
            let Some(data) = line.trim_end().strip_prefix("data:") else {
                continue;
            };
            let Ok(e) = serde_json::from_str::<Value>(data.trim()) else {
                continue;
            };
            let status = e["data"]["last_status"].as_str().unwrap_or("");
            if matches!(status, "completed" | "failed" | "aborted" | "suspended")
                && let Some(pid) = e["subject"].as_str()
            {
                finished.deliver(pid, status);
            }
        }
    }
    Ok(())
}

/// `create_user` (no password) started and awaited by `clients` concurrent clients.
pub async fn throughput(server: &Server, token: &str, clients: usize, secs: u64) -> Result<()> {
    let c = crate::client()?;
    let base = server.base.clone();
    let group = make_group(&c, &base, token).await?;
    // Warm up.
    for i in 0..20 {
        let pid = start(&c, &base, token, "create_user", user_pages(&group, i, "warm")).await?;
        wait(&c, &base, token, &pid, Duration::from_millis(5)).await?;
    }
    // Engine overhead per step, measured without load: one process at a time.
    let mut quiet = Histogram::<u64>::new(3)?;
    for i in 0..200 {
        let pid = start(&c, &base, token, "create_user", user_pages(&group, i, "q")).await?;
        let p = wait(&c, &base, token, &pid, Duration::from_millis(2)).await?;
        for g in step_gaps_us(&p) {
            quiet.record(g.max(1))?;
        }
    }
    println!(
        "workflows: per-step time, one process at a time (step completion to next completion, incl. its commit): p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms",
        quiet.value_at_quantile(0.5) as f64 / 1000.0,
        quiet.value_at_quantile(0.9) as f64 / 1000.0,
        quiet.value_at_quantile(0.99) as f64 / 1000.0
    );
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(secs);
    let began = Instant::now();
    let cpu_before = cpu_time(server.pid);
    let peak = Arc::new(AtomicU64::new(0));
    let pid = server.pid;
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        tokio::spawn(async move {
            // Completions per second, to show a stall (printed when MUSTER_BENCH_TIMELINE is set).
            let timeline = std::env::var_os("MUSTER_BENCH_TIMELINE").is_some();
            let (mut last, mut tick) = (0, Instant::now());
            while Instant::now() < stop {
                if let Some(r) = rss_kib(pid) {
                    peak.fetch_max(r, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
                if timeline && tick.elapsed() >= Duration::from_secs(1) {
                    let n = done.load(Ordering::Relaxed);
                    eprintln!(
                        "workflows: {:.1} s: {} completed in the last second",
                        began_at(stop, secs),
                        n - last
                    );
                    (last, tick) = (n, Instant::now());
                }
            }
        })
    };
    let finished = Arc::new(Finished::default());
    let follower = tokio::spawn(follow(c.clone(), base.clone(), token.to_owned(), finished.clone()));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (c, base, token, group) = (c.clone(), base.clone(), token.to_owned(), group.clone());
        let (done, failed, next, finished) = (done.clone(), failed.clone(), next.clone(), finished.clone());
        tasks.push(tokio::spawn(async move {
            // Each client's latencies (start request, then start to completion event), and its
            // slowest process, to show where a straggler spent its time.
            let mut lat = Latencies::new()?;
            while Instant::now() < stop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let (t0, wall0) = (Instant::now(), time::OffsetDateTime::now_utc());
                let Ok(pid) = start(&c, &base, &token, "create_user", user_pages(&group, n, "t")).await else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let posted = t0.elapsed();
                match finished.wait(&pid).await {
                    Ok(s) if s == "completed" => done.fetch_add(1, Ordering::Relaxed),
                    outcome => {
                        // Say what became of it: a lost event and a stuck process differ.
                        let p = get(&c, &base, &token, &format!("/api/processes/{pid}")).await;
                        let status = p.as_ref().map(|p| p["last_status"].clone()).unwrap_or_default();
                        eprintln!("workflows: process {pid} ended as {outcome:?}; it is now {status}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                lat.record(posted, t0.elapsed(), pid, wall0)?;
            }
            anyhow::Ok(lat)
        }));
    }
    let mut lat = Latencies::new()?;
    for t in tasks {
        lat.merge(t.await??)?;
    }
    follower.abort();
    sampler.await?;
    let elapsed = began.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    println!(
        "workflows: create_user completed end to end: {n} in {elapsed:.1} s = {:.0}/s with {clients} clients ({} failed); server peak RSS {:.1} MiB",
        n as f64 / elapsed,
        failed.load(Ordering::Relaxed),
        peak.load(Ordering::Relaxed) as f64 / 1024.0
    );
    // CPU per completed workflow: steadier than throughput on a host whose speed varies.
    if let (Some(a), Some(b)) = (cpu_before, cpu_time(server.pid))
        && n > 0
    {
        println!(
            "workflows: server CPU per completed create_user {:.2} ms ({:.1} s of CPU in {elapsed:.1} s)",
            (b - a).as_secs_f64() * 1000.0 / n as f64,
            (b - a).as_secs_f64()
        );
    }
    lat.report(&c, &base, token).await
}

/// Seconds since a run of `secs` seconds ending at `stop` began.
fn began_at(stop: Instant, secs: u64) -> f64 {
    secs as f64 - stop.saturating_duration_since(Instant::now()).as_secs_f64()
}

/// Latencies seen by the clients of `throughput`.
struct Latencies {
    /// The start request (POST, answered 201).
    post: Histogram<u64>,
    /// From sending the start request to receiving the completion event.
    total: Histogram<u64>,
    /// The slowest process: its total, id, and when its start request was sent.
    slowest: Option<(Duration, String, time::OffsetDateTime)>,
}

impl Latencies {
    fn new() -> Result<Self> {
        Ok(Self {
            post: Histogram::new(3)?,
            total: Histogram::new(3)?,
            slowest: None,
        })
    }

    fn record(&mut self, post: Duration, total: Duration, pid: String, sent: time::OffsetDateTime) -> Result<()> {
        self.post.record((post.as_micros() as u64).max(1))?;
        self.total.record((total.as_micros() as u64).max(1))?;
        if self.slowest.as_ref().is_none_or(|(d, _, _)| total > *d) {
            self.slowest = Some((total, pid, sent));
        }
        Ok(())
    }

    fn merge(&mut self, other: Latencies) -> Result<()> {
        self.post.add(&other.post)?;
        self.total.add(&other.total)?;
        if let Some(s) = other.slowest
            && self.slowest.as_ref().is_none_or(|(d, _, _)| s.0 > *d)
        {
            self.slowest = Some(s);
        }
        Ok(())
    }

    /// Prints the latencies and the slowest process's timeline (each step's completion, in ms
    /// after its start request was sent).
    async fn report(&self, c: &reqwest::Client, base: &str, token: &str) -> Result<()> {
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "workflows: start request p50 {:.1} ms, p99 {:.1} ms; start to completion event p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms(&self.post, 0.5),
            ms(&self.post, 0.99),
            ms(&self.total, 0.5),
            ms(&self.total, 0.99),
            self.total.max() as f64 / 1000.0
        );
        let Some((total, pid, sent)) = &self.slowest else {
            return Ok(());
        };
        let p = get(c, base, token, &format!("/api/processes/{pid}")).await?;
        let after = |s: &str| parse_ts(s).map(|t| (t - *sent).whole_microseconds() as f64 / 1000.0);
        let steps: Vec<String> = p["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                let at = after(s["completed"].as_str()?)?;
                Some(format!("{} {at:.1}", s["name"].as_str()?))
            })
            .collect();
        println!(
            "workflows: slowest process {pid}: {:.1} ms; created {:.1}; steps completed (ms after its start request): {}",
            total.as_secs_f64() * 1000.0,
            p["started_at"].as_str().and_then(after).unwrap_or(f64::NAN),
            steps.join(", ")
        );
        Ok(())
    }
}

/// Queues `count` processes with no worker running (the server runs with worker
/// concurrency 0), then starts one `muster worker` on the same database and times the drain,
/// sampling the worker's memory.
pub async fn drain(server: &Server, token: &str, count: u64, muster: &str) -> Result<()> {
    let c = crate::client()?;
    let base = server.base.clone();
    // A group needs a worker; make it with a short-lived one.
    let mut w = spawn_worker(server, muster)?;
    let group = make_group(&c, &base, token).await?;
    w.kill().await.ok();
    let queued = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (c, base, token, group, next) = (c.clone(), base.clone(), token.to_owned(), group.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return Ok::<_, anyhow::Error>(());
                }
                start(&c, &base, &token, "create_user", user_pages(&group, n, "d")).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    println!(
        "workflows: queued {count} create_user in {:.1} s (no worker running)",
        queued.elapsed().as_secs_f64()
    );
    let began = Instant::now();
    let mut w = spawn_worker(server, muster)?;
    let wpid = w.id().context("worker pid")?;
    let mut samples: Vec<u64> = Vec::new();
    loop {
        let counts = get(&c, &base, token, "/api/processes/status-counts").await?;
        let completed = counts["process_counts"]["completed"].as_u64().unwrap_or(0);
        let failed = counts["process_counts"]["failed"].as_u64().unwrap_or(0);
        if let Some(r) = rss_kib(wpid) {
            samples.push(r);
        }
        // +1: the group's own create process.
        if completed + failed > count {
            let n = samples.len();
            let mid = samples.get(n / 2).copied().unwrap_or(0);
            println!(
                "workflows: drained {count} in {:.1} s ({:.0}/s), failed {failed}; worker RSS: first {:.1} MiB, middle {:.1} MiB, last {:.1} MiB, peak {:.1} MiB",
                began.elapsed().as_secs_f64(),
                count as f64 / began.elapsed().as_secs_f64(),
                samples.first().copied().unwrap_or(0) as f64 / 1024.0,
                mid as f64 / 1024.0,
                samples.last().copied().unwrap_or(0) as f64 / 1024.0,
                samples.iter().max().copied().unwrap_or(0) as f64 / 1024.0,
            );
            w.kill().await.ok();
            return Ok(());
        }
        if began.elapsed() > Duration::from_secs(900) {
            bail!("drain did not finish: {counts}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn spawn_worker(server: &Server, muster: &str) -> Result<tokio::process::Child> {
    tokio::process::Command::new(muster)
        .arg("worker")
        .env("MUSTER_DATABASE_URL", &server.db_url)
        .env("MUSTER_DATA_DIR", &server.data_dir)
        .env("MUSTER_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting muster worker")
}
