//! The OpenAPI document, checked against the real server by a third-party fuzzer.
//!
//! Schemathesis reads `/api/openapi.json` from a `muster serve` on SQLite and sends generated
//! requests (schema examples, boundary values, random and invalid data) to every operation as a
//! super-user, as a regular user and without credentials. No answer may be a 5xx, and each
//! answer's status, content type and body must be ones the document declares for that
//! operation. Schemathesis is a Python tool: `.ci/run` installs the pinned version into `.venv`.

use crate::common::Server;
use muster_store::testing::TestDb;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Operations that can end the session they are called with, or lock its user out: logging
/// out, revoking sessions, and locking, rejecting, re-passwording or updating a user (the
/// fuzzer learns ids from answers, its own included). They are left out of the runs with one
/// session and fuzzed with a new session for every case, as a user made for the purpose
/// (`fuzz/fresh_session.py`).
const SESSION_ENDING: &[&str] = &[
    "logout",
    "revoke_own_sessions",
    "revoke_session",
    "revoke_user_sessions",
    "lock_user",
    "reject_user",
    "set_user_password",
    "update_user",
    "update_me",
];

/// Pausing the engine makes every start, resume and callback answer 503 `engine_paused`
/// (orchestrator-core's contract), which the fuzzer rightly counts as server errors: this
/// operation is fuzzed on its own, and the engine resumed after it.
const PAUSES_ENGINE: &str = "set_engine_status";

const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";

/// Test cases per operation and phase (the coverage phase adds its boundary cases).
const MAX_EXAMPLES: &str = "8";
/// Fewer for the runs that make a user per case.
const MAX_EXAMPLES_FRESH: &str = "5";

const PASSWORD: &str = "Fuzz-t3st-s3cret!";

fn repo_root() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir.ancestors().nth(2).unwrap_or(crate_dir).to_path_buf()
}

/// `.venv/bin/schemathesis`, installed by `.ci/run`. Missing: a failure in CI, a skip elsewhere.
fn schemathesis() -> Option<PathBuf> {
    let path = repo_root().join(".venv/bin/schemathesis");
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing: .ci/run installs it (python3 -m venv .venv; .venv/bin/pip install -r .ci/requirements-test.txt)",
        path.display()
    );
    println!(
        "skipped: {} is missing; run `bash .ci/run` to install it",
        path.display()
    );
    None
}

/// Real objects for the fuzzer to find, so that generated requests reach more than 404s: path
/// parameters take one of these half of the time.
struct Fixtures {
    /// The regular user the fuzzer runs as (a manager of the provider).
    regular_token: String,
    users: Vec<String>,
    objects: Vec<String>,
    tokens: Vec<String>,
    ids: Vec<String>,
}

async fn fixtures(s: &Server) -> Fixtures {
    let admin = s.admin_token.clone();
    let admin_id = s.get("/api/users/me", &admin).await.expect(200).body["user_id"].clone();
    let (alice, regular_token) = s.user_with_session("fuzz-alice", PASSWORD).await;
    let bob = s.create_user(json!({"username": "fuzz-bob"})).await;

    let provider = s
        .post(
            "/api/marketplace-service-providers/",
            &admin,
            json!({"name": "Fuzz site"}),
        )
        .await
        .expect(201)
        .body["uuid"]
        .clone();
    s.post(
        &format!("/api/marketplace-service-providers/{}/add_manager/", text(&provider)),
        &admin,
        json!({"user_uuid": alice["uuid"]}),
    )
    .await
    .expect(200);
    let offering = s
        .post(
            "/api/marketplace-provider-offerings/",
            &admin,
            json!({"name": "Fuzz HPC", "provider_uuid": provider, "type": "Marketplace.Slurm"}),
        )
        .await
        .expect(201)
        .body["uuid"]
        .clone();
    let token = s
        .post(
            &format!("/api/marketplace-service-providers/{}/api_tokens/", text(&provider)),
            &admin,
            json!({"name": "fuzz-agent"}),
        )
        .await
        .expect(201)
        .body["uuid"]
        .clone();
    let requested = s
        .post(
            "/api/marketplace-offering-users/",
            &admin,
            json!({"offering_uuid": offering, "user_uuid": bob["uuid"]}),
        )
        .await
        .expect(201)
        .body["uuid"]
        .clone();
    let named = s
        .post(
            "/api/marketplace-offering-users/",
            &admin,
            json!({"offering_uuid": offering, "user_uuid": alice["uuid"], "username": "alice01"}),
        )
        .await
        .expect(201)
        .body["uuid"]
        .clone();

    // A finished workflow: a process and the subscription it made.
    let products = s.get("/api/products", &admin).await.expect(200).body;
    let group_product = products
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["product_type"] == "UserGroup"))
        .map(|p| p["product_id"].clone())
        .expect("a UserGroup product");
    let process = s
        .post(
            "/api/processes/create_user_group",
            &admin,
            json!([{"product": group_product}, {"group_name": "Fuzzers"}]),
        )
        .await
        .expect(201)
        .body["id"]
        .clone();
    let subscription = settled_subscription(s, text(&process)).await;
    let workflow = s.get("/api/workflows/create_user_group", &admin).await.expect(200).body;

    Fixtures {
        regular_token,
        users: vec![text(&admin_id), text(&alice["user_id"]), text(&bob["uuid"])]
            .into_iter()
            .map(str::to_owned)
            .collect(),
        objects: [&provider, &offering, &requested, &named]
            .iter()
            .map(|v| text(v).to_owned())
            .collect(),
        tokens: vec![text(&token).to_owned()],
        ids: vec![
            text(&process).to_owned(),
            subscription,
            text(&group_product).to_owned(),
            text(&workflow["workflow_id"]).to_owned(),
            "create_user_group".to_owned(),
        ],
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("expected a string, got {v}"))
}

/// Waits for the process to complete; returns the subscription it made.
async fn settled_subscription(s: &Server, pid: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = s
            .get(&format!("/api/processes/{pid}"), &s.admin_token)
            .await
            .expect(200)
            .body;
        if p["last_status"] == "completed" {
            return text(&p["subscriptions"][0]["subscription_id"]).to_owned();
        }
        assert!(Instant::now() < deadline, "the fixture process did not complete: {p}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Schemathesis' settings file: no automatic sign-up (it would register and use its own
/// user), and the fixtures as dictionaries for the path parameters.
fn config(f: &Fixtures) -> String {
    let list = |values: &[String]| {
        let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
        format!("[{}]", quoted.join(", "))
    };
    let mut out = String::from("[auth]\nauto-signup = false\n\n");
    // orchestrator-core's form protocol answers 510 with the form's next page: declared in the
    // document, and no server error.
    out.push_str(
        "[[operations]]\ninclude-operation-id = [\"start_process\", \"resume_process\"]\n\
         checks.not_a_server_error.expected-statuses = [\"2xx\", \"3xx\", \"4xx\", \"510\"]\n\n",
    );
    for (name, values) in [
        ("users", &f.users),
        ("objects", &f.objects),
        ("tokens", &f.tokens),
        ("ids", &f.ids),
    ] {
        let _ = writeln!(out, "[dictionaries.{name}]\nvalues = {}\n", list(values));
    }
    out.push_str("[parameters]\n");
    for (param, dictionary) in [
        ("user_id", "users"),
        ("uuid", "objects"),
        ("token_uuid", "tokens"),
        ("id", "ids"),
    ] {
        let _ = writeln!(
            out,
            "\"path.{param}\" = {{ dictionary = \"{dictionary}\", probability = 0.5 }}"
        );
    }
    out
}

/// One schemathesis run.
struct Run<'a> {
    name: &'static str,
    /// `Authorization: Bearer …` for every request; None sends no credentials (unless `fresh`).
    bearer: Option<&'a str>,
    /// Only these operations (by operationId); empty: all.
    include: &'a [&'a str],
    exclude: &'a [&'a str],
    /// A new user of this role (`super` or `regular`) and session for every case.
    fresh: Option<&'static str>,
    max_examples: &'static str,
}

struct Outcome {
    name: &'static str,
    ok: bool,
    output: String,
    seconds: f64,
}

async fn run(st: &Path, s: &Server, workdir: &Path, config_file: &Path, r: &Run<'_>) -> Outcome {
    let mut args: Vec<String> = vec![
        "--config-file".into(),
        config_file.display().to_string(),
        "run".into(),
        s.url("/api/openapi.json"),
        "--checks".into(),
        CHECKS.into(),
        "--phases".into(),
        "examples,coverage,fuzzing".into(),
        "--max-examples".into(),
        r.max_examples.into(),
        // The same cases every run: no random seed, no example database.
        "--generation-deterministic".into(),
        "--workers".into(),
        "1".into(),
        // An event stream that never ends would otherwise hold the run.
        "--request-timeout".into(),
        "20".into(),
        "--no-color".into(),
        "--output-truncate".into(),
        "false".into(),
    ];
    if let Some(token) = r.bearer {
        args.push("--header".into());
        args.push(format!("Authorization: Bearer {token}"));
    }
    for op in r.include {
        args.push("--include-operation-id".into());
        args.push((*op).into());
    }
    for op in r.exclude {
        args.push("--exclude-operation-id".into());
        args.push((*op).into());
    }
    let mut cmd = tokio::process::Command::new(st);
    cmd.args(&args).current_dir(workdir).kill_on_drop(true);
    if let Some(role) = r.fresh {
        let hook = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/fuzz/fresh_session.py");
        cmd.env("SCHEMATHESIS_HOOKS", hook)
            .env("MUSTER_FUZZ_BASE", &s.base)
            .env("MUSTER_FUZZ_BIN", env!("CARGO_BIN_EXE_muster"))
            .env("MUSTER_FUZZ_DATABASE_URL", &s.db_url)
            .env("MUSTER_FUZZ_DATA_DIR", s.data_dir())
            .env("MUSTER_FUZZ_ROLE", role);
    }
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(600), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis run {} took over 10 minutes", r.name))
        .expect("run schemathesis");
    let seconds = started.elapsed().as_secs_f64();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = output
        .lines()
        .find(|l| l.contains(" generated, "))
        .map(str::trim)
        .unwrap_or("no test cases reported");
    println!(
        "schemathesis {} ({seconds:.1} s, exit {:?}): {summary}",
        r.name,
        out.status.code()
    );
    let generated = summary
        .split_whitespace()
        .next()
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    Outcome {
        name: r.name,
        ok: out.status.success() && generated > 0,
        output,
        seconds,
    }
}

/// The session still works: a run that lost its session would have tested only 401s.
async fn assert_session_alive(s: &Server, token: &str, run: &str) {
    let r = s.get("/api/session", token).await;
    assert_eq!(
        r.status.as_u16(),
        200,
        "the {run} run ended its own session: {}",
        r.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_undocumented_answer() {
    let Some(st) = schemathesis() else { return };
    let s = Server::start(TestDb::sqlite(), &[]).await;
    let f = fixtures(&s).await;
    let workdir = tempfile::tempdir().expect("temp dir");
    let config_file = workdir.path().join("schemathesis.toml");
    std::fs::write(&config_file, config(&f)).expect("write schemathesis.toml");
    let admin = s.admin_token.clone();

    let single_session: Vec<&str> = SESSION_ENDING.iter().copied().chain([PAUSES_ENGINE]).collect();
    let mut outcomes = Vec::new();
    // The regular user first: the super-user run may delete or lock them.
    let regular = Run {
        name: "regular-user",
        bearer: Some(&f.regular_token),
        include: &[],
        exclude: &single_session,
        fresh: None,
        max_examples: MAX_EXAMPLES,
    };
    outcomes.push(run(&st, &s, workdir.path(), &config_file, &regular).await);
    assert_session_alive(&s, &f.regular_token, "regular-user").await;

    let super_user = Run {
        name: "super-user",
        bearer: Some(&admin),
        include: &[],
        exclude: &single_session,
        fresh: None,
        max_examples: MAX_EXAMPLES,
    };
    let o = run(&st, &s, workdir.path(), &config_file, &super_user).await;
    assert_session_alive(&s, &admin, "super-user").await;
    assert!(
        !o.output.contains("Authentication failed"),
        "a super-user may call every operation, yet some answered only 401/403:\n{}",
        o.output
    );
    outcomes.push(o);

    let pause = Run {
        name: "engine pause",
        bearer: Some(&admin),
        include: &[PAUSES_ENGINE],
        exclude: &[],
        fresh: None,
        max_examples: MAX_EXAMPLES,
    };
    outcomes.push(run(&st, &s, workdir.path(), &config_file, &pause).await);
    s.put("/api/settings/status", &admin, json!({"global_lock": false}))
        .await
        .expect(200);

    // After everything that needs the admin's session: with the fixtures' ids, these runs may
    // end it, lock the admin or change their password.
    for (name, role) in [
        ("session-ending, fresh super-users", "super"),
        ("session-ending, fresh regular users", "regular"),
    ] {
        let r = Run {
            name,
            bearer: None,
            include: SESSION_ENDING,
            exclude: &[],
            fresh: Some(role),
            max_examples: MAX_EXAMPLES_FRESH,
        };
        outcomes.push(run(&st, &s, workdir.path(), &config_file, &r).await);
    }

    // Last: its failed logins may throttle the address everything else logs in from.
    let anonymous = Run {
        name: "no credentials",
        bearer: None,
        include: &[],
        exclude: &[],
        fresh: None,
        max_examples: MAX_EXAMPLES,
    };
    outcomes.push(run(&st, &s, workdir.path(), &config_file, &anonymous).await);

    let total: f64 = outcomes.iter().map(|o| o.seconds).sum();
    println!("schemathesis: {} runs in {total:.1} s", outcomes.len());
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.ok).collect();
    assert!(
        failed.is_empty(),
        "schemathesis found answers the OpenAPI document does not declare:\n{}",
        failed
            .iter()
            .map(|o| format!("===== {} =====\n{}", o.name, o.output))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
