//! End-to-end harness: starts the real `muster` binary on a free port against a fresh database
//! (a SQLite file, or a PostgreSQL schema when MUSTER_TEST_DATABASE_URL is set) and talks to it
//! over HTTP.
#![allow(dead_code)]

pub mod smtp;

use muster_store::testing::TestDb;
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::{Value, json};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "Adm1n-t3st-s3cret";

/// A running `muster serve`.
pub struct Server {
    pub base: String,
    pub label: &'static str,
    pub db_url: String,
    pub admin_token: String,
    client: reqwest::Client,
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    _data_dir: tempfile::TempDir,
    _db: Option<TestDb>,
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Resp {
    /// The problem document's `code`.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.body);
        self
    }

    #[track_caller]
    pub fn expect_problem(self, status: u16, code: &str) -> Self {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.body);
        let ct = self
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert_eq!(ct, "application/problem+json", "problem content type");
        assert_eq!(self.code(), code, "unexpected code; body: {}", self.body);
        self
    }
}

fn drain<R: tokio::io::AsyncRead + Unpin + Send + 'static>(r: R, into: Arc<Mutex<Vec<String>>>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(mut v) = into.lock() {
                v.push(line);
            }
        }
    });
}

impl Server {
    /// Starts muster on `db` with the test admin and `env` on top of the defaults.
    pub async fn start(db: TestDb, env: &[(&str, &str)]) -> Server {
        Self::start_with(db, env, true).await
    }

    /// Like [`Server::start`]; `with_admin_password` false leaves the bootstrap to print a
    /// one-time password instead.
    pub async fn start_with(db: TestDb, env: &[(&str, &str)], with_admin_password: bool) -> Server {
        let (label, url) = (db.label, db.url.clone());
        Self::spawn(label, &url, Some(db), env, with_admin_password).await
    }

    /// Starts another node on a database that already exists (the caller keeps it alive).
    pub async fn start_on(label: &'static str, url: &str, env: &[(&str, &str)]) -> Server {
        Self::spawn(label, url, None, env, true).await
    }

    async fn spawn(
        label: &'static str,
        url: &str,
        db: Option<TestDb>,
        env: &[(&str, &str)],
        with_admin_password: bool,
    ) -> Server {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_muster"));
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("MUSTER_LISTEN", "127.0.0.1:0")
            .env("MUSTER_DATABASE_URL", url)
            .env("MUSTER_DATA_DIR", data_dir.path())
            .env("MUSTER_DB_MAX_CONNECTIONS", "4")
            .env("MUSTER_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if with_admin_password {
            cmd.env("MUSTER_ADMIN_PASSWORD", ADMIN_PASSWORD);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn muster");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        drain(child.stdout.take().expect("stdout"), stdout.clone());
        drain(child.stderr.take().expect("stderr"), stderr.clone());

        let base = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let found = stdout.lock().ok().and_then(|v| {
                    v.iter()
                        .find_map(|l| l.strip_prefix("muster listening on ").map(str::to_owned))
                });
                if let Some(base) = found {
                    return base;
                }
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "muster exited with {status}; stderr: {:?}",
                        stderr.lock().map(|v| v.join("\n"))
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("muster did not start within 60 s");

        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let mut server = Server {
            base,
            label,
            db_url: url.to_owned(),
            admin_token: String::new(),
            client,
            child,
            stdout,
            stderr,
            _data_dir: data_dir,
            _db: db,
        };
        if with_admin_password {
            server.admin_token = server.login(ADMIN, ADMIN_PASSWORD).await;
        }
        server
    }

    /// One server per database under test (SQLite, and PostgreSQL when configured).
    pub async fn all(env: &[(&str, &str)]) -> Vec<Server> {
        let mut out = Vec::new();
        for db in TestDb::all().await {
            out.push(Server::start(db, env).await);
        }
        out
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().map(|v| v.join("\n")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|v| v.join("\n")).unwrap_or_default()
    }

    /// The server's standard error once it holds `needle`, or after 10 s: lines reach the test
    /// through a pipe read by a task of its own, so a line written before a response may be
    /// read after it.
    pub async fn stderr_with(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.stderr();
            if text.contains(needle) || std::time::Instant::now() >= deadline {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last `n` lines the server wrote to standard error.
    pub fn log_tail(&self, n: usize) -> String {
        self.stderr
            .lock()
            .map(|v| v[v.len().saturating_sub(n)..].join("\n"))
            .unwrap_or_default()
    }

    /// The server's data directory (its key), for `muster user …` against the same database.
    pub fn data_dir(&self) -> &std::path::Path {
        self._data_dir.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request; `body` None sends no body.
    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req).await
    }

    /// Sends a prepared request.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => panic!(
                "request failed: {e}\nthe server's log ends with:\n{}",
                self.log_tail(60)
            ),
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Resp { status, headers, body }
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::PATCH, path, Some(token), Some(body)).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::PUT, path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// `POST /api/session` with `body` (no token).
    pub async fn try_login(&self, body: Value) -> Resp {
        self.call(Method::POST, "/api/session", None, Some(body)).await
    }

    /// Logs in and returns the token; panics on failure.
    pub async fn login(&self, username: &str, password: &str) -> String {
        let r = self
            .try_login(json!({"username": username, "password": password}))
            .await
            .expect(201);
        r.body["token"].as_str().expect("token").to_owned()
    }

    /// Creates a user as the admin; returns the enriched user.
    pub async fn create_user(&self, body: Value) -> Value {
        self.post("/api/users", &self.admin_token.clone(), body)
            .await
            .expect(201)
            .body
    }

    /// Creates a user with a password and logs them in: (user, token).
    pub async fn user_with_session(&self, username: &str, password: &str) -> (Value, String) {
        let user = self
            .create_user(json!({"username": username, "password": password}))
            .await;
        let token = self.login(username, password).await;
        (user, token)
    }

    /// The audit log as the admin sees it, filtered by `query` (e.g. "action=user.create").
    pub async fn audit(&self, query: &str) -> Value {
        self.get(&format!("/api/audit?{query}"), &self.admin_token.clone())
            .await
            .expect(200)
            .body
    }

    /// Enrols and confirms a TOTP key for the session's user (password `password`): returns the
    /// key and the step the confirmation spent.
    pub async fn enrol_totp(&self, token: &str, password: &str) -> (String, u64) {
        let started = self
            .post("/api/users/me/totp", token, json!({"password": password}))
            .await
            .expect(201);
        let key = started.body["totp_key"].as_str().expect("totp_key").to_owned();
        let step = totp_step_now();
        self.post(
            "/api/users/me/totp/confirm",
            token,
            json!({"totp_code": totp_code(&key, step)}),
        )
        .await
        .expect(200);
        (key, step)
    }

    /// Kills the server (SIGKILL).
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Stops the server as an operator would (SIGTERM) and waits for it to exit; panics if it
    /// does not exit cleanly within 30 s.
    pub async fn stop(&mut self) {
        let pid = self.child.id().expect("a running server has a pid");
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill -TERM");
        assert!(sent.success(), "kill -TERM {pid}");
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("muster did not stop within 30 s of SIGTERM")
            .expect("wait for muster");
        assert!(
            status.success(),
            "muster exited with {status}; stderr: {}",
            self.stderr()
        );
    }
}

/// The TOTP step of the current time.
pub fn totp_step_now() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    muster_core::credentials::totp::step_of(now)
}

/// The code of base32 `key` at `step`.
pub fn totp_code(key: &str, step: u64) -> String {
    use muster_core::credentials::totp::{code_at_step, decode_key};
    code_at_step(&decode_key(key).expect("base32 key"), step)
}

// ---- Engine durability helpers (tests/durability.rs): `muster worker` processes ----

/// A running `muster worker` (the engine without HTTP).
pub struct WorkerProcess {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    _data_dir: tempfile::TempDir,
}

impl WorkerProcess {
    /// Starts `muster worker` on `db_url` with `env` on top of the defaults; returns once it
    /// reports that it runs.
    pub async fn start(db_url: &str, env: &[(&str, &str)]) -> WorkerProcess {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_muster"));
        cmd.arg("worker")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("MUSTER_DATABASE_URL", db_url)
            .env("MUSTER_DATA_DIR", data_dir.path())
            .env("MUSTER_DB_MAX_CONNECTIONS", "4")
            .env("MUSTER_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn muster worker");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        drain(child.stdout.take().expect("stdout"), stdout.clone());
        drain(child.stderr.take().expect("stderr"), stderr.clone());
        tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let running = stdout
                    .lock()
                    .map(|v| v.iter().any(|l| l.starts_with("muster worker running")))
                    .unwrap_or(false);
                if running {
                    return;
                }
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "muster worker exited with {status}; stderr: {:?}",
                        stderr.lock().map(|v| v.join("\n"))
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("muster worker did not start within 60 s");
        WorkerProcess {
            child,
            stdout,
            stderr,
            _data_dir: data_dir,
        }
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().map(|v| v.join("\n")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|v| v.join("\n")).unwrap_or_default()
    }

    /// Kills the worker (SIGKILL): no shutdown, no lease given back.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

// ---- end of engine durability helpers ----

/// Runs `sql` straight on the server's database, for states the API cannot make (an expired
/// link, aged rows).
pub async fn db_exec(s: &Server, sql: &str) {
    let q = sqlx::AssertSqlSafe(sql.to_owned());
    if s.db_url.starts_with("sqlite:") {
        let opts = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&s.db_url)
            .expect("sqlite url")
            .busy_timeout(Duration::from_secs(10));
        let pool = sqlx::SqlitePool::connect_with(opts).await.expect("sqlite");
        sqlx::query(q).execute(&pool).await.expect("db_exec");
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(&s.db_url).await.expect("postgres");
        sqlx::query(q).execute(&pool).await.expect("db_exec");
        pool.close().await;
    }
}
