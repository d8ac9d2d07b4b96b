//! When the database fails under a running muster, nothing acknowledged is lost and nothing
//! refused is half done, and muster recovers by itself once the database is back:
//!
//! - SQLite runs out of room (its size limit, the same `SQLITE_FULL` as a full disk): writes
//!   are refused with 507 `storage_full`, reads go on, the health check says the database does
//!   not take writes, and once space is freed everything goes on without a restart;
//! - PostgreSQL connections are killed mid-run: requests get 503s or succeed, never a 500 and
//!   never a lost or repeated change, and processes go on within seconds, not after a lease;
//! - a clean stop logs no warning.

use crate::common::{ADMIN, ADMIN_PASSWORD, Resp, Server};
use muster_store::testing::TestDb;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Shared by every start of a test's server, so it reads what it sealed before.
const KEY: (&str, &str) = ("MUSTER_SECRET_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
/// The catalogue's fixed UserGroup product id.
const USER_GROUP: &str = "31892964-6ad1-52eb-8c09-77fba68b51b6";
/// The size limit of the SQLite test: the test's own filler table takes all of it but a little.
const CAP_MIB: u64 = 4;

/// A user the test tried to create: its name, what the server said, its id when created.
type Attempt = (String, Outcome, Option<String>);

/// What one write attempt got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done,
    Refused,
}

/// Sorts an answer to a write: 2xx is done; 507/503 with the database's codes is refused
/// (nothing written); anything else fails the test.
fn outcome(r: &Resp, what: &str) -> Outcome {
    match r.status.as_u16() {
        200..=299 => Outcome::Done,
        507 => {
            assert_eq!(r.code(), "storage_full", "{what}: {}", r.body);
            assert!(r.headers.contains_key("retry-after"), "{what}: Retry-After");
            Outcome::Refused
        }
        503 => {
            assert_eq!(r.code(), "database_unavailable", "{what}: {}", r.body);
            Outcome::Refused
        }
        s => panic!("{what}: unexpected {s}: {}", r.body),
    }
}

async fn sqlite_rw(url: &str) -> sqlx::SqlitePool {
    let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)
        .expect("sqlite url")
        .busy_timeout(Duration::from_secs(30));
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .expect("sqlite pool")
}

async fn page_count(pool: &sqlx::SqlitePool) -> i64 {
    sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(pool)
        .await
        .expect("page_count")
}

/// Waits until the process `id` completes; panics after `limit`.
async fn completes(s: &Server, id: &str, limit: Duration) {
    let started = Instant::now();
    loop {
        let p = s.get(&format!("/api/processes/{id}"), &s.admin_token).await;
        if p.status == 200 && p.body["last_status"] == "completed" {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "process {id} did not complete within {limit:?}: {}",
            p.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every acknowledged user is there, and no refused one.
async fn check_users(s: &Server, users: &[Attempt]) {
    check_users_by_name(s, users).await;
    for (_, _, id) in users {
        if let Some(id) = id {
            s.get(&format!("/api/users/{id}"), &s.admin_token).await.expect(200);
        }
    }
}

/// Every acknowledged user is found by name, and no refused one.
async fn check_users_by_name(s: &Server, users: &[Attempt]) {
    for (name, o, _) in users {
        let found = s
            .get(&format!("/api/users?username={name}"), &s.admin_token)
            .await
            .expect(200);
        let n = found.body["result"].as_array().expect("a page of users").len();
        match o {
            Outcome::Done => assert_eq!(n, 1, "acknowledged user {name} is missing"),
            Outcome::Refused => assert_eq!(n, 0, "refused user {name} exists"),
        }
    }
}

fn group_form(name: &str) -> Value {
    json!([{"product": USER_GROUP}, {"group_name": name}])
}

#[tokio::test]
async fn a_full_sqlite_database_refuses_writes_loses_nothing_and_recovers_without_a_restart() {
    let db = TestDb::sqlite();
    let url = db.url.clone();
    // A first start creates the schema and the admin.
    Server::start_on("sqlite", &url, &[KEY]).await.stop().await;

    // The test's own table fills the file up to a little below the limit.
    let pool = sqlite_rw(&url).await;
    sqlx::query("CREATE TABLE filler (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        .execute(&pool)
        .await
        .expect("filler table");
    let cap_pages = (CAP_MIB * 1024 * 1024 / 4096) as i64;
    while page_count(&pool).await < cap_pages - 80 {
        sqlx::query("INSERT INTO filler (data) VALUES (zeroblob(16384))")
            .execute(&pool)
            .await
            .expect("fill");
    }
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await
        .expect("checkpoint");

    let cap = CAP_MIB.to_string();
    let env = [KEY, ("MUSTER_SQLITE_MAX_SIZE_MIB", cap.as_str())];
    let s_ref = Arc::new(Server::start_on("sqlite", &url, &env).await);

    // Writers of every kind until the database has refused thirty in a row.
    let users: Arc<std::sync::Mutex<Vec<Attempt>>> = Arc::default();
    let processes: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let refused_in_a_row = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..6 {
        let (s, users, processes, row) = (
            s_ref.clone(),
            users.clone(),
            processes.clone(),
            refused_in_a_row.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for i in 0..2000 {
                if row.load(std::sync::atomic::Ordering::SeqCst) >= 30 {
                    return;
                }
                let kind = i % 5;
                let refused = if kind == 4 {
                    // A workflow start: accepted ones must complete later.
                    let r = s
                        .post(
                            "/api/processes/create_user_group",
                            &s.admin_token,
                            group_form(&format!("g{t}x{i}")),
                        )
                        .await;
                    let o = outcome(&r, "workflow start");
                    if o == Outcome::Done {
                        processes
                            .lock()
                            .expect("lock")
                            .push(r.body["id"].as_str().expect("id").to_owned());
                    }
                    o == Outcome::Refused
                } else if kind == 3 {
                    // A login writes a session.
                    let r = s
                        .try_login(json!({"username": ADMIN, "password": ADMIN_PASSWORD}))
                        .await;
                    if r.status == 429 {
                        // Concurrent logins of one account may be slowed down: that also
                        // writes nothing, and says nothing about the database.
                        continue;
                    }
                    outcome(&r, "login") == Outcome::Refused
                } else {
                    let name = format!("fill{t}x{i}");
                    let r = s
                        .post(
                            "/api/users",
                            &s.admin_token,
                            json!({"username": name, "email": format!("{name}@example.org")}),
                        )
                        .await;
                    if r.status == 500 {
                        panic!("create user: 500: {}\nserver log:\n{}", r.body, s.log_tail(40));
                    }
                    let o = outcome(&r, "create user");
                    let id = r.body["user_id"].as_str().map(str::to_owned);
                    users.lock().expect("lock").push((name, o, id));
                    o == Outcome::Refused
                };
                if refused {
                    row.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                } else {
                    row.store(0, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer task");
    }
    let mut s = Arc::into_inner(s_ref).expect("the only reference");
    let tally = users.lock().expect("lock").iter().fold((0, 0), |(d, r), u| match u.1 {
        Outcome::Done => (d + 1, r),
        Outcome::Refused => (d, r + 1),
    });
    eprintln!("users created {}, refused {}", tally.0, tally.1);
    assert!(
        refused_in_a_row.load(std::sync::atomic::Ordering::SeqCst) >= 30,
        "the database never filled up"
    );
    let users = std::mem::take(&mut *users.lock().expect("lock"));
    let accepted: Vec<_> = users.iter().filter(|u| u.1 == Outcome::Done).collect();
    assert!(
        !accepted.is_empty(),
        "some users were created before the database filled up"
    );

    // Full: reads go on; the health check says so, quickly.
    let t0 = Instant::now();
    let h = s.call(Method::GET, "/api/health", None, None).await;
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "health answered in {:?}",
        t0.elapsed()
    );
    assert_eq!(h.status, 503, "{}", h.body);
    assert_eq!(h.body["writable"], false);
    assert_eq!(h.body["reachable"], true);
    assert_eq!(h.body["problem"], "storage_full");
    s.get("/api/users?page_size=5", &s.admin_token).await.expect(200);
    // A start refused while full leaves nothing behind.
    let r = s
        .post(
            "/api/processes/create_user_group",
            &s.admin_token,
            group_form("while-full"),
        )
        .await;
    assert_eq!(outcome(&r, "start while full"), Outcome::Refused);

    // Someone frees space: muster writes again, without a restart.
    sqlx::query("DELETE FROM filler")
        .execute(&pool)
        .await
        .expect("free space");
    let t0 = Instant::now();
    loop {
        let h = s.call(Method::GET, "/api/health", None, None).await;
        if h.status == 200 {
            assert_eq!(h.body["writable"], true);
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "still not writable: {}", h.body);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    s.create_user(json!({"username": "after-full"})).await;
    // Every accepted workflow completes: those queued, and those whose steps hit the full disk.
    let processes = std::mem::take(&mut *processes.lock().expect("lock"));
    assert!(!processes.is_empty(), "some workflows were accepted");
    for id in &processes {
        completes(&s, id, Duration::from_secs(90)).await;
    }

    // What was acknowledged is there, what was refused left nothing; after a restart too.
    check_users(&s, &users).await;
    // Exactly the accepted starts made processes (a refused one left no process behind).
    let started = s
        .get(
            "/api/processes?filter=workflow_name,create_user_group&range=0,1000",
            &s.admin_token,
        )
        .await
        .expect(200);
    let ids: HashSet<&str> = started
        .body
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|p| p["process_id"].as_str())
        .collect();
    let accepted: HashSet<&str> = processes.iter().map(String::as_str).collect();
    for extra in ids.difference(&accepted) {
        let p = s.get(&format!("/api/processes/{extra}"), &s.admin_token).await;
        eprintln!("DEBUG extra process {extra}: {}", p.body);
        eprintln!("DEBUG server log:\n{}", s.stderr());
    }
    assert_eq!(ids, accepted, "processes are exactly the accepted starts");
    s.stop().await;
    let s = Server::start_on("sqlite", &url, &env).await;
    check_users(&s, &users).await;
    let ok: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&pool)
        .await
        .expect("integrity_check");
    assert_eq!(ok, "ok");
    drop(db);
}

/// The URL of `db` with an application name of its own, so that the test can find (and
/// kill) exactly this test's connections among everything else on the server.
fn tagged(db: &TestDb, tag: &str) -> String {
    let sep = if db.url.contains('?') { '&' } else { '?' };
    format!("{}{sep}application_name={tag}", db.url)
}

#[tokio::test]
async fn killed_postgres_connections_give_503s_or_successes_and_processes_go_on_within_seconds() {
    let Some(db) = TestDb::postgres().await else {
        eprintln!("skipped: MUSTER_TEST_DATABASE_URL is not set (CI sets it)");
        return;
    };
    let tag = format!("muster_kill_{}", uuid::Uuid::new_v4().simple());
    let url = tagged(&db, &tag);
    // The default 30 s lease: a process that waited for its lease would show.
    let s = Arc::new(Server::start_on("postgres", &url, &[KEY]).await);
    let admin_url = std::env::var(muster_store::testing::PG_ENV).expect("set when postgres() is Some");
    let killer = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&admin_url)
        .await
        .expect("admin connection");

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let users: Arc<std::sync::Mutex<Vec<(String, Outcome)>>> = Arc::default();
    let unknown: Arc<std::sync::Mutex<Vec<(String, String)>>> = Arc::default();
    let processes: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for t in 0..4 {
        let (s, stop, users, unknown, processes) = (
            s.clone(),
            stop.clone(),
            users.clone(),
            unknown.clone(),
            processes.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                i += 1;
                if i % 3 == 0 {
                    let r = s
                        .post(
                            "/api/processes/create_user_group",
                            &s.admin_token,
                            group_form(&format!("k{t}x{i}")),
                        )
                        .await;
                    if r.status == 503 && r.code() == "outcome_unknown" {
                        continue;
                    }
                    if r.status == 500 {
                        panic!("workflow start: 500: {}\nserver log:\n{}", r.body, s.log_tail(40));
                    }
                    if outcome(&r, "workflow start") == Outcome::Done {
                        processes
                            .lock()
                            .expect("lock")
                            .push(r.body["id"].as_str().expect("id").to_owned());
                    }
                } else {
                    let name = format!("kill{t}x{i}");
                    let r = s.post("/api/users", &s.admin_token, json!({"username": name})).await;
                    if r.status == 503 && r.code() == "outcome_unknown" {
                        // It may or may not exist: the audit log tells, by the request id.
                        let cid = r.headers["x-request-id"].to_str().expect("request id").to_owned();
                        unknown.lock().expect("lock").push((cid, name));
                        continue;
                    }
                    if r.status == 500 {
                        panic!("create user: 500: {}\nserver log:\n{}", r.body, s.log_tail(40));
                    }
                    let o = outcome(&r, "create user");
                    users.lock().expect("lock").push((name, o));
                }
            }
        }));
    }
    // Kill every connection of this node, again and again, while the clients write.
    let mut killed = 0i64;
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let n: i64 = sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
        )
        .bind(&tag)
        .fetch_one(&killer)
        .await
        .expect("terminate");
        killed += n;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in tasks {
        t.await.expect("client task");
    }
    let s = Arc::into_inner(s).expect("the only reference");
    assert!(killed > 0, "the test killed no connection");
    let users = std::mem::take(&mut *users.lock().expect("lock"));
    let done = users.iter().filter(|u| u.1 == Outcome::Done).count();
    let refused = users.len() - done;
    eprintln!("killed {killed} connections; users created {done}, refused {refused}");
    assert!(done > 0, "some writes succeeded");

    // Acknowledged writes are there, refused ones are not; an unknown outcome is one or the
    // other, and the audit log says which.
    let users_with_ids: Vec<_> = users.iter().map(|(n, o)| (n.clone(), *o, None)).collect();
    check_users_by_name(&s, &users_with_ids).await;
    let unknown = std::mem::take(&mut *unknown.lock().expect("lock"));
    for (cid, name) in &unknown {
        let a = s.audit(&format!("cid={cid}&outcome=success")).await;
        let committed = a["total"].as_i64().expect("total") > 0;
        let found = s
            .get(&format!("/api/users?username={name}"), &s.admin_token)
            .await
            .expect(200);
        let exists = !found.body["result"].as_array().expect("a page").is_empty();
        assert_eq!(committed, exists, "the audit log tells what became of {name} ({cid})");
    }
    // Every accepted workflow completes within seconds, not after a 30 s lease.
    let processes = std::mem::take(&mut *processes.lock().expect("lock"));
    assert!(!processes.is_empty(), "some workflows were accepted");
    for id in &processes {
        completes(&s, id, Duration::from_secs(15)).await;
    }
    drop(s);
    drop(db);
}

#[tokio::test]
async fn health_answers_within_two_seconds_while_the_database_does_not() {
    let db = TestDb::sqlite();
    let s = Server::start_on("sqlite", &db.url, &[KEY]).await;
    // Another process holds SQLite's write lock: muster's writes wait (for up to its busy
    // timeout), and so would a health check that did not have its own.
    let mut holder = {
        use sqlx::Connection;
        sqlx::SqliteConnection::connect(&db.url).await.expect("connect")
    };
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .expect("take the write lock");
    let t0 = Instant::now();
    let h = s.call(Method::GET, "/api/health", None, None).await;
    assert!(t0.elapsed() < Duration::from_secs(2), "health took {:?}", t0.elapsed());
    assert_eq!(h.status, 503, "{}", h.body);
    assert_eq!(h.body["status"], "read_only");
    assert_eq!(h.body["reachable"], true);
    assert_eq!(h.body["writable"], false);
    assert_eq!(h.body["problem"], "timeout");
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("release the write lock");
    let t0 = Instant::now();
    loop {
        let h = s.call(Method::GET, "/api/health", None, None).await;
        if h.status == 200 {
            assert_eq!(h.body["status"], "ok");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "health never recovered: {}",
            h.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_clean_stop_logs_no_warning() {
    for db in TestDb::all().await {
        let mut s = Server::start_on(db.label, &db.url, &[KEY]).await;
        // Some work first: a workflow, so that the worker, its listener and the sequencer ran.
        let r = s
            .post("/api/processes/create_user_group", &s.admin_token, group_form("stop"))
            .await
            .expect(201);
        completes(&s, r.body["id"].as_str().expect("id"), Duration::from_secs(30)).await;
        s.stop().await;
        let log = s.stderr();
        let noisy: Vec<&str> = log
            .lines()
            .skip_while(|l| !l.contains("shutting down"))
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        assert!(noisy.is_empty(), "{}: a clean stop logged: {noisy:#?}", db.label);
    }
}
