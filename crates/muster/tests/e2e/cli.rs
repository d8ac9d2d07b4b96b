//! The command line: `muster user …` acting on the database directly, `serve` on the result,
//! `migrate`, `openapi` and `--help`. Runs on every database under test.

use muster_store::testing::TestDb;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const ROOT_PASSWORD: &str = "R00t-cli-s3cret-pw";
const NEW_PASSWORD: &str = "R00t-cli-n3w-s3cret";

/// `muster` with a clean environment pointing at `url` and `data_dir`.
fn muster(url: &str, data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_muster"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("MUSTER_DATABASE_URL", url)
        .env("MUSTER_DATA_DIR", data_dir)
        .env("MUSTER_DB_MAX_CONNECTIONS", "2")
        .env("MUSTER_LOG", "warn")
        .kill_on_drop(true);
    cmd
}

/// Runs a command to completion, feeding `stdin` if given.
async fn run(mut cmd: Command, args: &[&str], stdin: Option<&str>) -> Output {
    cmd.args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn muster");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(text.as_bytes()).await.expect("write stdin");
        drop(pipe);
    }
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("muster finished within 60 s")
        .expect("muster output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn assert_success(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: exit {:?}; stdout: {}; stderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A running `muster serve`, and a client for it.
struct Serve {
    base: String,
    client: reqwest::Client,
    stdout: Arc<Mutex<Vec<String>>>,
    _child: Child,
}

impl Serve {
    async fn start(url: &str, data_dir: &Path) -> Serve {
        let mut cmd = muster(url, data_dir);
        cmd.arg("serve")
            .env("MUSTER_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn muster serve");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let base = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(mut v) = stdout.lock() {
                    v.push(line.clone());
                }
                if let Some(base) = line.strip_prefix("muster listening on ") {
                    return base.to_owned();
                }
            }
            panic!("muster serve exited before listening");
        })
        .await
        .expect("muster serve listening within 60 s");
        let keep = stdout.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(mut v) = keep.lock() {
                    v.push(line);
                }
            }
        });
        Serve {
            base,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            stdout,
            _child: child,
        }
    }

    fn stdout(&self) -> String {
        self.stdout.lock().map(|v| v.join("\n")).unwrap_or_default()
    }

    /// (status, body) of `POST /api/session`.
    async fn login(&self, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}/api/session", self.base))
            .json(&body)
            .send()
            .await
            .expect("login request");
        let status = r.status().as_u16();
        (status, r.json().await.expect("json body"))
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn super_users_come_from_the_command_line_and_the_cli_acts_on_a_live_directory() {
    for db in TestDb::all().await {
        let l = db.label;
        let dir = tempfile::tempdir().expect("temp dir");
        let (url, data) = (db.url.as_str(), dir.path());

        // Migrations apply, and applying them again is harmless.
        for round in 1..=2 {
            let out = run(muster(url, data), &["migrate"], None).await;
            let stdout = assert_success(&out, &format!("{l}: migrate #{round}"));
            assert!(stdout.contains("migrations applied"), "{l}: {stdout}");
        }

        let out = run(
            muster(url, data),
            &["user", "create-super-user", "root2", "--password-stdin"],
            Some(&format!("{ROOT_PASSWORD}\n")),
        )
        .await;
        let stdout = assert_success(&out, &format!("{l}: create-super-user"));
        assert!(stdout.contains("created super-user 'root2'"), "{l}: {stdout}");
        assert!(stdout.contains("musr"), "{l}: the user_id is shown: {stdout}");
        let all_output = format!("{stdout}{}", text(&out.stderr));
        assert!(!all_output.contains(ROOT_PASSWORD), "{l}: the password is not echoed");

        // The same name again, an unknown name, an empty password: refused.
        let out = run(
            muster(url, data),
            &["user", "create-super-user", "ROOT2", "--password-stdin"],
            Some("An0ther-s3cret-pw\n"),
        )
        .await;
        assert!(!out.status.success(), "{l}: a duplicate username is refused");
        assert!(text(&out.stderr).contains("E001002"), "{l}: {}", text(&out.stderr));
        let out = run(muster(url, data), &["user", "lock", "nobody"], None).await;
        assert!(!out.status.success(), "{l}: locking an unknown user fails");
        let out = run(
            muster(url, data),
            &["user", "create", "emptypw", "--password-stdin"],
            Some("\n"),
        )
        .await;
        assert!(!out.status.success(), "{l}: an empty password on stdin is refused");

        // Serve the directory the CLI made: no bootstrap happens, root2 is a super-user.
        let serve = Serve::start(url, data).await;
        assert!(
            !serve.stdout().contains("one-time password"),
            "{l}: no bootstrap over existing users: {}",
            serve.stdout()
        );
        let (status, _) = serve
            .login(json!({"username": "admin", "password": ROOT_PASSWORD}))
            .await;
        assert_eq!(status, 401, "{l}: no admin was bootstrapped");
        let (status, body) = serve
            .login(json!({"username": "root2", "password": ROOT_PASSWORD}))
            .await;
        assert_eq!(status, 201, "{l}: {body}");
        let token = body["token"].as_str().expect("token").to_owned();
        let (status, me) = serve.get("/api/users/me", &token).await;
        assert_eq!(status, 200, "{l}: {me}");
        assert_eq!(me["is_super_user"], json!(true), "{l}: {me}");
        assert_eq!(me["password_must_change"], json!(false), "{l}: {me}");

        // Locking from the command line, while the server runs, ends sessions and logins.
        let out = run(muster(url, data), &["user", "lock", "root2"], None).await;
        assert_success(&out, &format!("{l}: user lock"));
        let (status, body) = serve.get("/api/session", &token).await;
        assert_eq!((status, body["code"].clone()), (401, json!("E007001")), "{l}: {body}");
        let (status, body) = serve
            .login(json!({"username": "root2", "password": ROOT_PASSWORD}))
            .await;
        assert_eq!((status, body["code"].clone()), (403, json!("E005002")), "{l}: {body}");
        let out = run(muster(url, data), &["user", "unlock", "root2"], None).await;
        assert_success(&out, &format!("{l}: user unlock"));
        let (status, body) = serve
            .login(json!({"username": "root2", "password": ROOT_PASSWORD}))
            .await;
        assert_eq!(status, 201, "{l}: unlocked: {body}");

        // A password set on stdin replaces the old one; a generated one must be changed.
        let out = run(
            muster(url, data),
            &["user", "set-password", "root2", "--password-stdin"],
            Some(&format!("{NEW_PASSWORD}\n")),
        )
        .await;
        assert_success(&out, &format!("{l}: set-password"));
        let (status, _) = serve
            .login(json!({"username": "root2", "password": ROOT_PASSWORD}))
            .await;
        assert_eq!(status, 401, "{l}: the old password is gone");
        let (status, body) = serve
            .login(json!({"username": "root2", "password": NEW_PASSWORD}))
            .await;
        assert_eq!(status, 201, "{l}: {body}");
        let out = run(muster(url, data), &["user", "set-password", "root2"], None).await;
        let stdout = assert_success(&out, &format!("{l}: set-password (generated)"));
        let one_time = stdout
            .lines()
            .find_map(|line| line.split_once("': ").map(|(_, pw)| pw.trim().to_owned()))
            .unwrap_or_else(|| panic!("{l}: a one-time password is printed: {stdout}"));
        let (status, body) = serve.login(json!({"username": "root2", "password": one_time})).await;
        assert_eq!((status, body["code"].clone()), (403, json!("E003007")), "{l}: {body}");
        let (status, body) = serve
            .login(json!({"username": "root2", "password": one_time, "new_password": ROOT_PASSWORD}))
            .await;
        assert_eq!(status, 201, "{l}: {body}");
    }
}

#[tokio::test]
async fn recover_lets_a_shut_out_super_user_back_in() {
    for db in TestDb::all().await {
        let l = db.label;
        let dir = tempfile::tempdir().expect("temp dir");
        let (url, data) = (db.url.as_str(), dir.path());
        for name in ["boss", "deputy"] {
            let out = run(
                muster(url, data),
                &["user", "create-super-user", name, "--password-stdin"],
                Some(&format!("{ROOT_PASSWORD}\n")),
            )
            .await;
            assert_success(&out, &format!("{l}: create-super-user {name}"));
        }
        let serve = Serve::start(url, data).await;
        let token = |body: &Value| body["token"].as_str().expect("token").to_owned();
        let (_, body) = serve
            .login(json!({"username": "deputy", "password": ROOT_PASSWORD}))
            .await;
        let deputy = token(&body);
        let (_, body) = serve
            .login(json!({"username": "boss", "password": ROOT_PASSWORD}))
            .await;
        let boss_session = token(&body);
        let (_, me) = serve.get("/api/users/me", &boss_session).await;
        let boss_id = me["user_id"].as_str().expect("user_id").to_owned();

        // Everything that shuts a user out at once (set by another super-user: nobody may do
        // it to themselves), with TOTP on and a key the boss never saw.
        let r = serve
            .client
            .patch(format!("{}/api/users/{boss_id}", serve.base))
            .bearer_auth(&deputy)
            .json(&json!({"sign_up_status": "before_confirmation", "is_locked": true,
                          "approval_status": "rejected", "is_totp_enabled": true}))
            .send()
            .await
            .expect("patch");
        assert_eq!(r.status().as_u16(), 200, "{l}");
        let (status, body) = serve
            .login(json!({"username": "boss", "password": ROOT_PASSWORD}))
            .await;
        assert_eq!(
            (status, body["code"].clone()),
            (401, json!("E005008")),
            "{l}: shut out (a TOTP code nobody has)"
        );

        let out = run(muster(url, data), &["user", "recover", "boss"], None).await;
        let stdout = assert_success(&out, &format!("{l}: user recover"));
        assert!(stdout.contains("recovered 'boss'"), "{l}: {stdout}");
        for field in ["is_locked", "sign_up_status", "approval_status", "is_totp_enabled"] {
            assert!(stdout.contains(field), "{l}: {field} named: {stdout}");
        }
        let (status, body) = serve.get("/api/session", &boss_session).await;
        assert_eq!(
            (status, body["code"].clone()),
            (401, json!("E007001")),
            "{l}: sessions ended"
        );
        let (status, body) = serve
            .login(json!({"username": "boss", "password": ROOT_PASSWORD}))
            .await;
        assert_eq!(status, 201, "{l}: back in, with no TOTP code: {body}");
        let (_, boss) = serve.get(&format!("/api/users/{boss_id}"), &deputy).await;
        assert_eq!(
            (
                &boss["is_locked"],
                &boss["sign_up_status"],
                &boss["approval_status"],
                &boss["is_totp_enabled"]
            ),
            (&json!(false), &json!("final"), &json!("approved"), &json!(false)),
            "{l}: {boss}"
        );
        let (_, audit) = serve.get("/api/audit?action=user.recover", &deputy).await;
        assert_eq!(audit["total"], json!(1), "{l}: audited: {audit}");
        let rec = &audit["result"][0];
        assert_eq!(
            (&rec["actor"], &rec["target"], &rec["outcome"]),
            (&json!("cli"), &json!(boss_id), &json!("success")),
            "{l}: {rec}"
        );

        // Recovering someone who is fine changes nothing but still ends sessions; an unknown
        // name is refused.
        let out = run(muster(url, data), &["user", "recover", "boss"], None).await;
        let stdout = assert_success(&out, &format!("{l}: recover again"));
        assert!(stdout.contains("nothing needed undoing"), "{l}: {stdout}");
        let out = run(muster(url, data), &["user", "recover", "nobody"], None).await;
        assert!(!out.status.success(), "{l}: an unknown user");
        assert!(text(&out.stderr).contains("no such user"), "{l}: {}", text(&out.stderr));
    }
}

#[tokio::test]
async fn openapi_prints_the_document() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_muster"));
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    let out = run(cmd, &["openapi"], None).await;
    let stdout = assert_success(&out, "openapi");
    let doc: Value = serde_json::from_str(&stdout).expect("the OpenAPI document is JSON");
    assert_eq!(doc["openapi"], json!("3.1.0"));
    assert!(doc["paths"]["/api/session"]["post"].is_object(), "login is documented");
    assert!(doc["paths"]["/api/sessions"]["get"].is_object());
}

#[tokio::test]
async fn serve_help_names_the_settings_without_showing_secrets() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_muster"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("MUSTER_ADMIN_PASSWORD", "Env-adm1n-s3cret")
        .env("MUSTER_SECRET_KEY", "Env-s3cret-k3y-value");
    let out = run(cmd, &["serve", "--help"], None).await;
    let help = assert_success(&out, "serve --help");
    for setting in [
        "MUSTER_LISTEN",
        "MUSTER_DATABASE_URL",
        "MUSTER_ADMIN_PASSWORD",
        "MUSTER_SESSION_IDLE_SECS",
        "MUSTER_SESSION_ABSOLUTE_SECS",
        "MUSTER_LOGIN_FAILURES_PER_ACCOUNT",
    ] {
        assert!(help.contains(setting), "help mentions {setting}: {help}");
    }
    assert!(!help.contains("Env-adm1n-s3cret"), "help hides the admin password");
    assert!(!help.contains("Env-s3cret-k3y-value"), "help hides the server key");
}

/// `muster <args> --help` with a clean environment.
async fn help(args: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_muster"));
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    let out = run(cmd, args, None).await;
    assert_success(&out, &args.join(" "))
}

#[tokio::test]
async fn each_subcommand_lists_only_the_settings_it_uses() {
    let serve = help(&["serve", "--help"]).await;
    assert!(serve.contains("--listen"), "serve --help lists --listen: {serve}");
    let migrate = help(&["migrate", "--help"]).await;
    assert!(
        !migrate.contains("--listen"),
        "migrate --help does not list --listen: {migrate}"
    );
    assert!(!migrate.contains("--admin-password"), "nor --admin-password: {migrate}");
    assert!(
        migrate.contains("--database-url"),
        "migrate --help lists --database-url: {migrate}"
    );
    let user = help(&["user", "--help"]).await;
    assert!(
        !user.contains("--max-body-bytes"),
        "user --help does not list --max-body-bytes: {user}"
    );
    assert!(user.contains("--secret-key"), "user --help lists --secret-key: {user}");
    let worker = help(&["worker", "--help"]).await;
    assert!(
        !worker.contains("--listen"),
        "worker --help does not list --listen: {worker}"
    );
    assert!(
        worker.contains("--lease-secs"),
        "worker --help lists --lease-secs: {worker}"
    );
    let create = help(&["user", "create", "--help"]).await;
    for line in create.lines().filter(|l| l.trim_start().starts_with("--")) {
        let described = line.trim().split_once("  ").is_some_and(|(_, d)| !d.trim().is_empty());
        assert!(described, "user create --help describes every option: {line}");
    }
}

#[tokio::test]
async fn openapi_into_a_closed_pipe_exits_quietly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = muster("sqlite::memory:", dir.path());
    let mut child = cmd
        .arg("openapi")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Read one line, then hang up, as `| head -1` does.
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next_line().await.expect("read").as_deref(), Some("{"));
    drop(lines);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("exits")
        .expect("output");
    assert!(
        out.status.success(),
        "exit {:?}; stderr: {}",
        out.status,
        text(&out.stderr)
    );
    assert!(!text(&out.stderr).contains("panicked"), "{}", text(&out.stderr));
}

#[tokio::test]
async fn startup_errors_are_one_line_that_names_what_failed() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Nothing listens on this port: the answer is at once, and names host, port and cause.
    let started = std::time::Instant::now();
    let mut cmd = muster("postgres://postgres@127.0.0.1:1/test", dir.path());
    cmd.env("RUST_BACKTRACE", "1");
    let out = run(cmd, &["serve", "--listen", "127.0.0.1:0"], None).await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        err.contains("127.0.0.1:1") && err.to_lowercase().contains("connection refused"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line, no backtrace: {err}");
    // An SQLite file that cannot be created names its path.
    let out = run(
        muster("sqlite:/proc/muster-none/muster.db", dir.path()),
        &["serve", "--listen", "127.0.0.1:0"],
        None,
    )
    .await;
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("/proc/muster-none/muster.db"), "{err}");
    // A listen address must be host:port, but the host may be a name.
    let out = run(
        muster("sqlite::memory:", dir.path()),
        &["serve", "--listen", "nonsense"],
        None,
    )
    .await;
    assert!(text(&out.stderr).contains("host:port"), "{}", text(&out.stderr));
}

#[tokio::test]
async fn serve_on_a_taken_port_creates_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let db = dir.path().join("muster.db");
    let out = run(
        muster(&format!("sqlite:{}", db.display()), dir.path()),
        &["serve", "--listen", &format!("localhost:{port}")],
        None,
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!("localhost:{port}")),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !text(&out.stdout).contains("one-time password"),
        "{}",
        text(&out.stdout)
    );
    assert!(!db.exists(), "the database was created before the port was found taken");
    assert!(!dir.path().join("muster.key").exists(), "the key was created");
}
