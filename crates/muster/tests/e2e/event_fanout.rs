//! Events reach every node at once (PostgreSQL): a change made on one `serve` node reaches a
//! Server-Sent Events client on another within milliseconds (the numbering node announces it
//! with `NOTIFY`, every node `LISTEN`s), not at that node's next one-second poll; and
//! `muster worker` numbers its own steps' events, with no `serve` node running (on SQLite too).
//!
//! The events channel is shared by everything on the PostgreSQL server that uses the same
//! schema name; these tests never assume it is quiet (followers treat a notification as a
//! hint, and the tests only look for their own events).

use crate::common::{Server, WorkerProcess};
use muster_store::testing::TestDb;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Shared by every node of a test, so they read each other's sealed values.
const KEY: (&str, &str) = ("MUSTER_SECRET_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
const NO_WORKER: (&str, &str) = ("MUSTER_WORKER_CONCURRENCY", "0");
/// The catalogue's fixed product id of user groups.
const USER_GROUP: &str = "31892964-6ad1-52eb-8c09-77fba68b51b6";

/// An event as an SSE client received it: when, its kind, its subject.
struct Received {
    at: Instant,
    kind: String,
    subject: Option<String>,
}

/// Opens an SSE connection to `s`'s `stream` (from its current end) and forwards every event,
/// stamped with the time its chunk arrived.
async fn follow(s: &Server, stream: &str) -> mpsc::UnboundedReceiver<Received> {
    let mut resp = s
        .request(Method::GET, &format!("/api/events?stream={stream}"))
        .bearer_auth(&s.admin_token)
        .header("accept", "text/event-stream")
        .timeout(Duration::from_secs(3600))
        .send()
        .await
        .expect("sse request");
    assert_eq!(resp.status(), 200);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut text = String::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            let at = Instant::now();
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                let (mut kind, mut data) = (None, Value::Null);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        kind = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data = serde_json::from_str(v.trim()).unwrap_or(Value::Null);
                    }
                }
                if let Some(kind) = kind {
                    let subject = data["subject"].as_str().map(str::to_owned);
                    if tx.send(Received { at, kind, subject }).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// Waits for `user.created` about `id`; returns when it arrived.
async fn arrival(rx: &mut mpsc::UnboundedReceiver<Received>, id: &str) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = tokio::time::timeout(left, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("user.created about {id} did not arrive within 10 s"))
            .expect("the SSE stream is still open");
        if e.kind == "user.created" && e.subject.as_deref() == Some(id) {
            return e.at;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_node_reaches_sse_clients_on_another_within_200_ms() {
    let Some(db) = TestDb::postgres().await else {
        eprintln!("MUSTER_TEST_DATABASE_URL is not set: the multi-node events test needs PostgreSQL");
        return;
    };
    let url = db.url.clone();
    let a = Server::start(db, &[KEY]).await;
    let b = Server::start_on("postgres", &url, &[KEY]).await;
    let mut on_b = follow(&b, "directory").await;

    let create = |name: String| {
        let a = &a;
        async move {
            let r = a
                .post("/api/users", &a.admin_token, json!({"username": name}))
                .await
                .expect(201);
            let done = Instant::now();
            (r.body["user_id"].as_str().expect("user_id").to_owned(), done)
        }
    };
    // The first change after start (connections opening) is not measured.
    let (id, _) = create("fanout-warmup".to_owned()).await;
    arrival(&mut on_b, &id).await;

    // Changes one after another: each from A's answer to its event on B's stream.
    let mut latencies = Vec::with_capacity(100);
    for i in 0..100 {
        let (id, done) = create(format!("fanout-{i}")).await;
        latencies.push(arrival(&mut on_b, &id).await.saturating_duration_since(done));
    }
    let (p50, p99, max) = percentiles(&mut latencies);
    eprintln!("A's change to B's SSE client: p50 {p50:?}, p99 {p99:?}, max {max:?}");
    assert!(
        p99 < Duration::from_millis(200),
        "p99 {p99:?} (p50 {p50:?}, max {max:?}); B's log ends with:\n{}",
        b.log_tail(40)
    );
    assert!(
        !b.stderr().contains("events listener"),
        "B's events listener kept its connection:\n{}",
        b.stderr()
    );

    // The listeners' connections are killed: a change made meanwhile still arrives (B's
    // followers poll), B says so in its log and listens again, and changes are prompt again.
    let killed = kill_listeners(&url).await;
    assert!(killed >= 2, "A's and B's events listeners were found ({killed})");
    let (id, _) = create("fanout-gap".to_owned()).await;
    arrival(&mut on_b, &id).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    // sqlx opens the connection again at once (or, failing that, B does with backoff).
    let listens_again = |log: &str| {
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("the events listener lost its connection and opened another"))
            || log.contains("the events listener is connected again")
    };
    while !listens_again(&b.stderr()) {
        assert!(
            Instant::now() < deadline,
            "B listens again, logged at warn:\n{}",
            b.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut latencies = Vec::with_capacity(20);
    for i in 0..20 {
        let (id, done) = create(format!("fanout-again-{i}")).await;
        latencies.push(arrival(&mut on_b, &id).await.saturating_duration_since(done));
    }
    let (p50, _, max) = percentiles(&mut latencies);
    eprintln!("after the reconnect: p50 {p50:?}, max {max:?}");
    assert!(p50 < Duration::from_millis(200), "p50 {p50:?} after the reconnect");
}

/// p50, p99 and the maximum of `samples` (sorted in place).
fn percentiles(samples: &mut [Duration]) -> (Duration, Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
    (at(0.50), at(0.99), at(1.0))
}

/// Ends the PostgreSQL connections listening on the events channel of `url`'s schema; returns
/// how many.
async fn kill_listeners(url: &str) -> i64 {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .expect("postgres");
    let schema: String = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(&pool)
        .await
        .expect("schema");
    let killed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE query LIKE 'LISTEN%' AND query LIKE '%' || $1 || '%') t",
    )
    .bind(format!("muster_events_{schema}"))
    .fetch_one(&pool)
    .await
    .expect("pg_terminate_backend");
    pool.close().await;
    killed
}

/// create_user_group processes in `url`'s database that are not completed, and events without
/// a number.
async fn pending(url: &str) -> (i64, i64) {
    const OPEN: &str = "SELECT COUNT(*) FROM processes WHERE workflow_name = 'create_user_group' \
        AND last_status <> 'completed'";
    const UNNUMBERED: &str = "SELECT COUNT(*) FROM events WHERE seq IS NULL";
    if url.starts_with("sqlite:") {
        let opts = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(url)
            .expect("sqlite url")
            .read_only(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = sqlx::SqlitePool::connect_with(opts).await.expect("sqlite");
        let open: i64 = sqlx::query_scalar(OPEN).fetch_one(&pool).await.expect("processes");
        let unnumbered: i64 = sqlx::query_scalar(UNNUMBERED).fetch_one(&pool).await.expect("events");
        pool.close().await;
        (open, unnumbered)
    } else {
        let pool = sqlx::PgPool::connect(url).await.expect("postgres");
        let open: i64 = sqlx::query_scalar(OPEN).fetch_one(&pool).await.expect("processes");
        let unnumbered: i64 = sqlx::query_scalar(UNNUMBERED).fetch_one(&pool).await.expect("events");
        pool.close().await;
        (open, unnumbered)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_numbers_its_own_steps_events() {
    for db in TestDb::all().await {
        let (label, url) = (db.label, db.url.clone());
        // A node without a worker starts a workflow and stops: only `muster worker` is left.
        let mut s = Server::start(db, &[KEY, NO_WORKER]).await;
        s.post(
            "/api/processes/create_user_group",
            &s.admin_token,
            json!([{"product": USER_GROUP}, {"group_name": "Worker Numbers"}]),
        )
        .await
        .expect(201);
        s.stop().await;
        let (open, _) = pending(&url).await;
        assert_eq!(open, 1, "{label}: the process waits for a worker");

        let worker = WorkerProcess::start(&url, &[KEY]).await;
        // Its steps write events (process.updated, subscription.*); it numbers them itself,
        // with no `serve` node's sequencer to do it (on SQLite, writes number their own).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (open, unnumbered) = pending(&url).await;
            if open == 0 && unnumbered == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{label}: {open} processes open, {unnumbered} events unnumbered; the worker's log:\n{}",
                worker.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("{label}: the worker's events are numbered");
        drop(worker);
        // Kept alive until here: the database goes with it.
        drop(s);
    }
}
