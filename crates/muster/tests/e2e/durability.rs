//! The engine's durability end to end, with the real `muster` binary: a worker killed with
//! SIGKILL in the middle of work loses nothing and repeats nothing, and several workers on one
//! PostgreSQL database run every process exactly once.
//!
//! "Exactly once" is checked in the database: every create_user process completed, there is
//! one User subscription per process with its own `user_id`, the `user_id` allocator moved by
//! exactly the number of users (a rolled-back step's number is reused, a committed one never
//! handed out twice), one directory user per process, and no process logged a step as
//! successful twice (a committed step never ran again).

use crate::common;

use crate::common::{Server, WorkerProcess};
use muster_store::testing::TestDb;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// Shared by every node of a test, so they read each other's sealed values.
const KEY: (&str, &str) = ("MUSTER_SECRET_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
/// A short lease: a killed worker's processes are taken over after 2 s.
const LEASE: (&str, &str) = ("MUSTER_LEASE_SECS", "2");
const NO_WORKER: (&str, &str) = ("MUSTER_WORKER_CONCURRENCY", "0");
/// The catalogue's fixed product ids.
const USER_GROUP: &str = "31892964-6ad1-52eb-8c09-77fba68b51b6";
const USER_INTERNAL: &str = "091035e7-95a1-5997-8286-74a4ad1cc551";

/// Read-only access to the test database, for checks the API does not offer.
enum Db {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Db {
    async fn open(url: &str) -> Db {
        if url.starts_with("sqlite:") {
            let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)
                .expect("sqlite url")
                .read_only(true)
                .busy_timeout(Duration::from_secs(10));
            Db::Sqlite(
                sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(2)
                    .connect_with(opts)
                    .await
                    .expect("sqlite pool"),
            )
        } else {
            Db::Postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(2)
                    .connect(url)
                    .await
                    .expect("postgres pool"),
            )
        }
    }

    async fn i64(&self, sql: &str) -> i64 {
        let q = sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            Db::Sqlite(p) => sqlx::query_scalar(q).fetch_one(p).await,
            Db::Postgres(p) => sqlx::query_scalar(q).fetch_one(p).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn is_sqlite(&self) -> bool {
        matches!(self, Db::Sqlite(_))
    }

    async fn close(&self) {
        match self {
            Db::Sqlite(p) => p.close().await,
            Db::Postgres(p) => p.close().await,
        }
    }
}

const USERS_COMPLETED: &str =
    "SELECT COUNT(*) FROM processes WHERE workflow_name = 'create_user' AND last_status = 'completed'";
const USERS_RUNNING: &str =
    "SELECT COUNT(*) FROM processes WHERE workflow_name = 'create_user' AND last_status = 'running'";

/// Waits until `count` processes of create_user completed, at most `secs`.
async fn wait_users_completed(db: &Db, count: i64, secs: u64, logs: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let done = db.i64(USERS_COMPLETED).await;
        if done == count {
            return;
        }
        if Instant::now() >= deadline {
            let failed = db
                .i64("SELECT COUNT(*) FROM processes WHERE last_status IN ('failed', 'waiting')")
                .await;
            panic!(
                "{done} of {count} create_user processes completed after {secs} s ({failed} failed or waiting); logs:\n{}",
                logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for a process to end, through the API.
async fn wait_final(s: &Server, pid: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let view = s
            .get(&format!("/api/processes/{pid}"), &s.admin_token)
            .await
            .expect(200);
        let status = view.body["last_status"].as_str().unwrap_or("").to_owned();
        if ["completed", "failed", "aborted"].contains(&status.as_str()) {
            return view.body;
        }
        assert!(
            Instant::now() < deadline,
            "process {pid} is still {status}; stderr:\n{}",
            s.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates an active user group through its workflow (a worker must run); returns its id.
async fn create_group(s: &Server, name: &str) -> String {
    let started = s
        .post(
            "/api/processes/create_user_group",
            &s.admin_token,
            json!([{"product": USER_GROUP}, {"group_name": name}]),
        )
        .await
        .expect(201);
    let pid = started.body["id"].as_str().expect("process id").to_owned();
    let view = wait_final(s, &pid).await;
    assert_eq!(view["last_status"], "completed", "{view}");
    view["current_state"]["subscription_id"]
        .as_str()
        .expect("the group's subscription id")
        .to_owned()
}

/// Starts `n` create_user processes in group `gid`; returns their ids.
async fn start_users(s: &Server, gid: &str, prefix: &str, n: usize) -> Vec<String> {
    let mut pids = Vec::with_capacity(n);
    for i in 0..n {
        let r = s
            .post(
                "/api/processes/create_user",
                &s.admin_token,
                json!([{"product": USER_INTERNAL}, {"username": format!("{prefix}-{i}"), "user_group_ids": [gid]}]),
            )
            .await
            .expect(201);
        pids.push(r.body["id"].as_str().expect("process id").to_owned());
    }
    pids
}

/// Everything that "each process ran exactly once" means in the database, for `n` users
/// named `prefix-…`.
async fn assert_exactly_once(db: &Db, n: i64, prefix: &str, label: &str) {
    assert_eq!(
        db.i64("SELECT COUNT(*) FROM processes WHERE workflow_name = 'create_user'")
            .await,
        n,
        "{label}"
    );
    assert_eq!(db.i64(USERS_COMPLETED).await, n, "{label}: every process completed");
    assert_eq!(
        db.i64("SELECT COUNT(*) FROM user_blocks").await,
        n,
        "{label}: one User subscription per process"
    );
    assert_eq!(
        db.i64(
            "SELECT COUNT(*) FROM subscriptions s JOIN user_blocks u ON u.subscription_id = s.subscription_id \
             WHERE s.status = 'active' AND s.insync AND s.locked_by_process IS NULL"
        )
        .await,
        n,
        "{label}: every User subscription is active, in sync and released"
    );
    assert_eq!(
        db.i64("SELECT COUNT(DISTINCT user_id) FROM user_blocks WHERE user_id IS NOT NULL")
            .await,
        n,
        "{label}: user_ids are distinct"
    );
    let counter_row = db
        .i64(if db.is_sqlite() {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'id_allocators'"
        } else {
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() \
             AND table_name = 'id_allocators'"
        })
        .await
        > 0;
    if counter_row {
        // A counter row reuses a rolled-back number; a sequence would leave gaps instead.
        assert_eq!(
            db.i64("SELECT next_value FROM id_allocators WHERE name = 'user_id'")
                .await,
            10_000 + n,
            "{label}: the user_id allocator moved once per user"
        );
    }
    assert_eq!(
        db.i64(&format!("SELECT COUNT(*) FROM users WHERE username LIKE '{prefix}-%'"))
            .await,
        n,
        "{label}: one directory user per process"
    );
    assert_eq!(
        db.i64(
            "SELECT COUNT(*) FROM (SELECT process_id, name FROM process_steps WHERE status = 'success' \
             GROUP BY process_id, name HAVING COUNT(*) > 1) twice"
        )
        .await,
        0,
        "{label}: a committed step ran again"
    );
    assert_eq!(
        db.i64(
            "SELECT COUNT(*) FROM process_steps ps JOIN processes p ON p.process_id = ps.process_id \
             WHERE p.workflow_name = 'create_user' AND ps.status = 'complete'"
        )
        .await,
        n,
        "{label}: each process completed once"
    );
    assert_eq!(
        db.i64("SELECT COUNT(*) FROM process_steps WHERE status IN ('failed', 'waiting')")
            .await,
        0,
        "{label}: no step failed"
    );
}

/// The step log through the API: no step is logged successful twice.
async fn assert_logs_once(s: &Server, pids: &[String]) {
    for pid in pids {
        let view = s
            .get(&format!("/api/processes/{pid}"), &s.admin_token)
            .await
            .expect(200);
        assert_eq!(view.body["last_status"], "completed", "{}", view.body);
        let steps = view.body["steps"].as_array().expect("steps");
        let mut seen = HashSet::new();
        for step in steps.iter().filter(|st| st["status"] == "success") {
            let name = step["name"].as_str().expect("step name");
            assert!(
                seen.insert(name.to_owned()),
                "process {pid} logged {name} twice: {steps:?}"
            );
        }
        for name in [
            "create_subscription",
            "initialize_subscription",
            "provision_user",
            "resync",
        ] {
            assert!(seen.contains(name), "process {pid} never logged {name}: {steps:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_flight_loses_and_repeats_nothing() {
    for db in TestDb::all().await {
        kill_worker_mid_flight(db).await;
    }
}

async fn kill_worker_mid_flight(db: TestDb) {
    const N: usize = 300;
    let (label, url) = (db.label, db.url.clone());

    // A node with a worker makes the group, then goes away.
    let mut a = Server::start(db, &[KEY, LEASE]).await;
    let gid = create_group(&a, "durable").await;
    a.kill().await;

    // An HTTP-only node queues the users; nothing runs them.
    let mut b = Server::start_on(label, &url, &[KEY, LEASE, NO_WORKER]).await;
    let pids = start_users(&b, &gid, "durable", N).await;
    let checks = Db::open(&url).await;
    assert_eq!(
        checks
            .i64("SELECT COUNT(*) FROM processes WHERE workflow_name = 'create_user' AND last_status = 'created'")
            .await,
        N as i64,
        "{label}: the users wait for a worker"
    );
    b.kill().await;

    // A worker takes them on and is killed while many are in flight: claimed under its lease,
    // their steps running in a transaction that the kill discards (consecutive steps of a
    // process commit together, so "in flight" is claimed-and-uncommitted, not half-logged).
    let mut c = WorkerProcess::start(&url, &[KEY, LEASE, ("MUSTER_WORKER_CONCURRENCY", "8")]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = checks.i64(USERS_COMPLETED).await;
        let running = checks.i64(USERS_RUNNING).await;
        if done >= (N / 5) as i64 && running >= 3 {
            break;
        }
        assert!(
            done < N as i64,
            "{label}: the worker finished before it could be killed"
        );
        assert!(
            Instant::now() < deadline,
            "{label}: the worker made no progress; stderr:\n{}",
            c.stderr()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    c.kill().await;
    // A commit the worker sent just before it died may still land (PostgreSQL finishes a
    // COMMIT it received); nothing else can, and nobody claims before the lease runs out.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let in_flight = checks.i64(USERS_RUNNING).await;
    let done_at_kill = checks.i64(USERS_COMPLETED).await;
    eprintln!("{label}: killed the worker with {done_at_kill} completed and {in_flight} in flight");
    assert!(in_flight > 0, "{label}: nothing was in flight at the kill");
    assert!(done_at_kill < N as i64);

    // A new node on the same database carries on: the dead worker's processes once their
    // leases ran out, the queued ones at once.
    let d = Server::start_on(label, &url, &[KEY, LEASE]).await;
    wait_users_completed(&checks, N as i64, 120, || d.stderr()).await;
    assert!(
        checks
            .i64("SELECT COUNT(*) FROM processes WHERE workflow_name = 'create_user' AND attempt >= 2")
            .await
            >= in_flight,
        "{label}: the processes in flight at the kill were claimed again"
    );
    // Whether some process had committed part of its steps before the kill depends on where the
    // engine cut its chain of steps (consecutive steps commit together); carrying on from
    // committed steps is tested deterministically in muster-engine's tests. Here: nothing was
    // lost and nothing ran twice.
    assert_exactly_once(&checks, N as i64, "durable", label).await;
    assert_logs_once(&d, &pids).await;
    let listed = d
        .get(
            "/api/subscriptions?filter=product_type,User&range=0,1000",
            &d.admin_token,
        )
        .await
        .expect(200);
    assert_eq!(listed.body.as_array().map(Vec::len), Some(N), "{label}");
    checks.close().await;
    drop(d);
    drop(b);
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_on_postgres_run_each_process_once() {
    let Some(db) = TestDb::postgres().await else {
        eprintln!("MUSTER_TEST_DATABASE_URL is not set: this test needs PostgreSQL");
        return;
    };
    const N: usize = 200;
    let url = db.url.clone();
    let s = Server::start(db, &[KEY, LEASE, NO_WORKER]).await;
    let debug = ("MUSTER_LOG", "info,muster_engine=debug");
    let concurrency = ("MUSTER_WORKER_CONCURRENCY", "8");
    let w1 = WorkerProcess::start(&url, &[KEY, LEASE, debug, concurrency]).await;
    let w2 = WorkerProcess::start(&url, &[KEY, LEASE, debug, concurrency]).await;
    let checks = Db::open(&url).await;

    let gid = create_group(&s, "pair").await;
    let pids = start_users(&s, &gid, "pair", N).await;
    wait_users_completed(&checks, N as i64, 120, || {
        format!("{}\n---\n{}", w1.stderr(), w2.stderr())
    })
    .await;

    assert_exactly_once(&checks, N as i64, "pair", "postgres").await;
    assert_logs_once(&s, &pids).await;
    for w in [&w1, &w2] {
        assert!(w.stderr().contains("worker started"), "{}", w.stderr());
    }
    // Each process completed on exactly one of the two workers, and both worked.
    let c1 = w1.stderr().matches("process completed").count();
    let c2 = w2.stderr().matches("process completed").count();
    eprintln!("worker 1 completed {c1} processes, worker 2 {c2}");
    assert_eq!(c1 + c2, N + 1, "the users and the group, each completed once");
    assert!(c1 > 0 && c2 > 0, "both workers worked: {c1} and {c2}");
    checks.close().await;
}

#[tokio::test]
async fn a_start_with_no_worker_anywhere_says_so_until_one_runs() {
    for db in TestDb::all().await {
        let url = db.url.clone();
        let s = Server::start_on(db.label, &url, &[KEY, NO_WORKER]).await;
        let form = json!([{"product": USER_GROUP}, {"group_name": "Nobody Runs"}]);
        let r = s
            .post("/api/processes/create_user_group", &s.admin_token, form.clone())
            .await
            .expect(201);
        let warning = r.body["warning"].as_str().unwrap_or_default();
        assert!(warning.contains("no workflow worker"), "{}: {}", db.label, r.body);
        assert!(
            s.stderr_with("no worker runs").await.contains("no worker runs"),
            "{}: logged",
            db.label
        );
        // A worker starts elsewhere: it records its heartbeat before it says it runs, and
        // starts stop warning.
        let _worker = WorkerProcess::start(&url, &[KEY]).await;
        let form = json!([{"product": USER_GROUP}, {"group_name": "Someone Runs"}]);
        let r = s
            .post("/api/processes/create_user_group", &s.admin_token, form)
            .await
            .expect(201);
        assert!(r.body.get("warning").is_none(), "{}: {}", db.label, r.body);
        drop(db);
    }
}

#[tokio::test]
async fn a_node_with_another_server_key_refuses_to_start() {
    for db in TestDb::all().await {
        let url = db.url.clone();
        let _first = Server::start_on(db.label, &url, &[KEY]).await;
        let other = ("MUSTER_SECRET_KEY", "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=");
        let data_dir = tempfile::tempdir().expect("temp dir");
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_muster"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("MUSTER_LISTEN", "127.0.0.1:0")
            .env("MUSTER_DATABASE_URL", &url)
            .env("MUSTER_DATA_DIR", data_dir.path())
            .env(other.0, other.1)
            .env("MUSTER_ADMIN_PASSWORD", common::ADMIN_PASSWORD)
            .output()
            .await
            .expect("run muster");
        assert!(!out.status.success(), "{}: started with another key", db.label);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("server key") && err.contains("MUSTER_SECRET_KEY"),
            "{}: {err}",
            db.label
        );
        drop(db);
    }
}
