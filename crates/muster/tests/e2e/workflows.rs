//! End-to-end tests of the durable workflows and subscriptions (orchestrator-core's User /
//! UserGroup example, <https://workfloworchestrator.org/orchestrator-core/>): the catalogue, the multi-page
//! form protocol (510 / 400), the workflows' steps and the subscriptions they leave, one workflow
//! per subscription at a time, unique numbers under concurrency, abort and resume, the engine's
//! pause switch, lists, `set_in_sync` and the processes / subscriptions event streams. Every test
//! runs on every database.
//!
//! Some tests need work to stay queued for a while: they talk to a node that runs no worker
//! (`MUSTER_WORKER_CONCURRENCY=0`) and start a second node on the same database, whose worker
//! runs the queue, only when they want the queue to move. Scale-out is documented for
//! PostgreSQL only; on SQLite each node has its own single writer and a step's transaction
//! begins deferred, so a write committed by the other node in the middle of a step makes that
//! step fail with "database is locked" (SQLITE_BUSY_SNAPSHOT). These tests therefore write
//! through the API node only while the worker node runs no step, and change anything while
//! steps run through the worker's own node.

use crate::common::{Resp, Server};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A password every policy accepts.
const PASSWORD: &str = "Sturdy-Kettle-42";
/// Nodes of one database share the server key (a chosen password is sealed with it between the
/// form and the step that creates the user).
const KEY: (&str, &str) = ("MUSTER_SECRET_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
/// A node that answers the API but runs no process.
const NO_WORKER: (&str, &str) = ("MUSTER_WORKER_CONCURRENCY", "0");
/// Statuses a process stays in until someone acts.
const SETTLED: &[&str] = &["completed", "failed", "aborted", "suspended"];

/// Steps in the middle of create_user.
const MID_STEPS: &[&str] = &[
    "create_subscription",
    "store_process_subscription",
    "initialize_subscription",
];

const CREATE_USER_STEPS: &[&str] = &[
    "init",
    "create_subscription",
    "store_process_subscription",
    "initialize_subscription",
    "provision_user",
    "set_status",
    "resync",
    "done",
];

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn str_of<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is not a string in {v}"))
}

/// The catalogue's product ids, read from `GET /api/products`.
struct Products {
    group: String,
    internal: String,
    external: String,
}

async fn products(s: &Server) -> Products {
    let list = s.get("/api/products", &s.admin_token).await.expect(200).body;
    let id = |name: &str| -> String {
        list.as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == name))
            .and_then(|p| p["product_id"].as_str())
            .unwrap_or_else(|| panic!("no product {name:?} in {list}"))
            .to_owned()
    };
    Products {
        group: id("User Group"),
        internal: id("User internal"),
        external: id("User external"),
    }
}

/// `POST /api/processes/{workflow}` with the form pages filled so far.
async fn start(s: &Server, workflow: &str, pages: Value) -> Resp {
    s.post(&format!("/api/processes/{workflow}"), &s.admin_token, pages)
        .await
}

/// Starts a workflow that must start; returns the process id.
async fn start_ok(s: &Server, workflow: &str, pages: Value) -> String {
    let r = start(s, workflow, pages).await;
    assert_eq!(
        r.status.as_u16(),
        201,
        "{}: starting {workflow} should work: {}",
        s.label,
        r.body
    );
    str_of(&r.body, "id").to_owned()
}

async fn process(s: &Server, pid: &str) -> Value {
    s.get(&format!("/api/processes/{pid}"), &s.admin_token)
        .await
        .expect(200)
        .body
}

/// Polls the process until its status is one of `statuses`.
async fn wait_for(s: &Server, pid: &str, statuses: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = process(s, pid).await;
        if statuses.contains(&p["last_status"].as_str().unwrap_or("")) {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "{}: process {pid} did not reach {statuses:?} in time: {p}",
            s.label
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the process settles (completed, failed, aborted or suspended).
async fn settle(s: &Server, pid: &str) -> Value {
    wait_for(s, pid, SETTLED).await
}

#[track_caller]
fn assert_status(s: &Server, p: &Value, status: &str) {
    assert_eq!(p["last_status"], status, "{}: process status: {p}", s.label);
}

/// Starts a workflow and waits for it to complete.
async fn run_ok(s: &Server, workflow: &str, pages: Value) -> Value {
    let pid = start_ok(s, workflow, pages).await;
    let p = settle(s, &pid).await;
    assert_status(s, &p, "completed");
    p
}

/// The (first) subscription a process worked on.
fn subscription_of(p: &Value) -> String {
    p["subscriptions"][0]["subscription_id"]
        .as_str()
        .unwrap_or_else(|| panic!("the process names no subscription: {p}"))
        .to_owned()
}

fn step_names(p: &Value) -> Vec<String> {
    p["steps"]
        .as_array()
        .map(|a| a.iter().map(|s| str_of(s, "name").to_owned()).collect())
        .unwrap_or_default()
}

fn step_statuses(p: &Value) -> Vec<String> {
    p["steps"]
        .as_array()
        .map(|a| a.iter().map(|s| str_of(s, "status").to_owned()).collect())
        .unwrap_or_default()
}

/// The step names of a workflow's current version (`GET /api/workflows/{name}`).
async fn definition(s: &Server, workflow: &str) -> Vec<String> {
    let w = s
        .get(&format!("/api/workflows/{workflow}"), &s.admin_token)
        .await
        .expect(200)
        .body;
    w["steps"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_else(|| panic!("{}: no steps in {w}", s.label))
}

/// Whether `core` appears in `names` in order (other steps may come between).
fn in_order(names: &[String], core: &[&str]) -> bool {
    let mut it = names.iter();
    core.iter().all(|c| it.any(|n| n == c))
}

/// A process ran exactly its workflow's steps, each once, in order, starting with `init` and
/// ending with `done`; the steps in `core` (orchestrator-core's list for the workflow) are among
/// them in that order. Steps a workflow adds later do not break this.
async fn assert_ran_steps(s: &Server, p: &Value, core: &[&str]) {
    let l = s.label;
    let names = step_names(p);
    let def = definition(s, str_of(p, "workflow_name")).await;
    assert_eq!(names, def, "{l}: the process ran its workflow's steps, each once: {p}");
    assert!(in_order(&names, core), "{l}: {core:?} in order among {names:?}");
    assert_eq!(names.first().map(String::as_str), Some("init"), "{l}");
    assert_eq!(names.last().map(String::as_str), Some("done"), "{l}");
}

/// Creates a user group; returns its subscription id.
async fn create_group(s: &Server, p: &Products, name: &str) -> String {
    let proc = run_ok(
        s,
        "create_user_group",
        json!([{"product": p.group}, {"group_name": name}]),
    )
    .await;
    subscription_of(&proc)
}

/// Creates an internal user (no password) in group `gid`; returns the subscription id.
async fn create_user(s: &Server, p: &Products, gid: &str, username: &str) -> String {
    let proc = run_ok(
        s,
        "create_user",
        json!([{"product": p.internal}, {"username": username, "user_group_ids": [gid]}]),
    )
    .await;
    subscription_of(&proc)
}

async fn terminate_group(s: &Server, gid: &str) -> Value {
    run_ok(s, "terminate_user_group", json!([{"subscription_id": gid}, {}])).await
}

/// `GET /api/subscriptions/domain-model/{id}`.
async fn model(s: &Server, sid: &str) -> Value {
    s.get(&format!("/api/subscriptions/domain-model/{sid}"), &s.admin_token)
        .await
        .expect(200)
        .body
}

/// The `ETag` of the subscription's domain model.
async fn etag(s: &Server, sid: &str) -> String {
    let r = s
        .get(&format!("/api/subscriptions/domain-model/{sid}"), &s.admin_token)
        .await
        .expect(200);
    r.headers
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("{}: no ETag", s.label))
        .to_owned()
}

/// `GET /api/subscriptions/domain-model/{id}` with `If-None-Match: {tags}`.
async fn model_if_none_match(s: &Server, sid: &str, tags: &str) -> Resp {
    let req = s
        .request(Method::GET, &format!("/api/subscriptions/domain-model/{sid}"))
        .bearer_auth(&s.admin_token)
        .header("if-none-match", tags);
    s.send(req).await
}

fn content_range(r: &Resp) -> String {
    r.headers
        .get("content-range")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no Content-Range; body {}", r.body))
        .to_owned()
}

/// A list endpoint: its items and the total from `Content-Range: kind a-b/TOTAL`.
async fn list(s: &Server, path: &str) -> (Vec<Value>, i64) {
    let r = s.get(path, &s.admin_token).await.expect(200);
    let range = content_range(&r);
    let total = range
        .rsplit('/')
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{}: bad Content-Range {range:?}", s.label));
    let items = r
        .body
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("{}: {path} is not a list: {}", s.label, r.body));
    (items, total)
}

fn ids_of(items: &[Value], field: &str) -> Vec<String> {
    items.iter().map(|i| str_of(i, field).to_owned()).collect()
}

/// The validation errors of a 400 FormValidationError, keyed by `loc` joined with dots.
fn validation_errors(s: &Server, r: &Resp) -> Vec<(String, Value)> {
    assert_eq!(r.status.as_u16(), 400, "{}: {}", s.label, r.body);
    assert_eq!(r.body["type"], "FormValidationError", "{}: {}", s.label, r.body);
    r.body["validation_errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no validation_errors in {}", s.label, r.body))
        .iter()
        .map(|e| {
            let loc: Vec<&str> = e["loc"]
                .as_array()
                .map(|l| l.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            (loc.join("."), e.clone())
        })
        .collect()
}

#[track_caller]
fn error_at<'a>(s: &Server, errors: &'a [(String, Value)], loc: &str) -> &'a Value {
    errors
        .iter()
        .find(|(l, _)| l == loc)
        .map(|(_, e)| e)
        .unwrap_or_else(|| panic!("{}: no validation error at {loc}: {errors:?}", s.label))
}

/// `PUT /api/settings/status`.
async fn set_lock(s: &Server, locked: bool) -> Value {
    s.put("/api/settings/status", &s.admin_token, json!({ "global_lock": locked }))
        .await
        .expect(200)
        .body
}

/// A second node on `s`'s database: its worker runs whatever is queued.
async fn worker(s: &Server) -> Server {
    Server::start_on(s.label, &s.db_url, &[KEY]).await
}

/// A worker node on `a`'s database with `env`, started while the engine is paused (so it claims
/// nothing while it comes up); the engine runs again when this returns.
async fn worker_from_now(a: &Server, env: &[(&str, &str)]) -> Server {
    set_lock(a, true).await;
    let w = Server::start_on(a.label, &a.db_url, env).await;
    set_lock(a, false).await;
    w
}

/// Polls until some process of `workflow` is in one of `statuses` (`a|b`).
async fn until_some(a: &Server, workflow: &str, statuses: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (found, _) = list(
            a,
            &format!("/api/processes?filter=workflow_name,{workflow},status,{statuses}"),
        )
        .await;
        if !found.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: no {workflow} became {statuses}",
            a.label
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Polls until some running process of `workflow` has just run one of `steps` (or, failing
/// that, one has completed): the moment to stop the batch in its middle.
async fn until_mid_run(a: &Server, workflow: &str, steps: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (found, _) = list(
            a,
            &format!("/api/processes?filter=workflow_name,{workflow},status,running|completed&range=0,100"),
        )
        .await;
        if found
            .iter()
            .any(|p| p["last_status"] == "completed" || steps.iter().any(|s| p["last_step"] == *s))
        {
            return;
        }
        assert!(Instant::now() < deadline, "{}: no {workflow} got going", a.label);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// `GET /api/users?username=…` as the super-user: the matching directory users.
async fn directory_users(s: &Server, username: &str) -> Vec<Value> {
    let page = s
        .get(&format!("/api/users?username={username}"), &s.admin_token)
        .await
        .expect(200)
        .body;
    page["result"].as_array().cloned().unwrap_or_default()
}

/// How many processes of `workflow` exist.
async fn count_processes(s: &Server, workflow: &str) -> i64 {
    list(s, &format!("/api/processes?filter=workflow_name,{workflow}"))
        .await
        .1
}

/// How many subscriptions of `product_type` exist.
async fn count_subscriptions(s: &Server, product_type: &str) -> i64 {
    list(s, &format!("/api/subscriptions?filter=product_type,{product_type}"))
        .await
        .1
}

/// Reads an event stream as JSON until `pred` holds for some event (sequencing is async).
async fn events_until(s: &Server, stream: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = s
            .get(
                &format!("/api/events?stream={stream}&after=0&limit=1000"),
                &s.admin_token,
            )
            .await
            .expect(200);
        let events = page.body["events"].as_array().cloned().unwrap_or_default();
        if pred(&events) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "{}: events did not appear on {stream}: {}",
            s.label,
            page.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The workflow entry `name` of `GET /api/subscriptions/workflows/{sid}`.
async fn workflow_entry(s: &Server, sid: &str, target: &str, name: &str) -> Value {
    let all = s
        .get(&format!("/api/subscriptions/workflows/{sid}"), &s.admin_token)
        .await
        .expect(200)
        .body;
    all[target]
        .as_array()
        .and_then(|a| a.iter().find(|w| w["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("{}: no {target} workflow {name} in {all}", s.label))
}

// ---------------------------------------------------------------------------------------------
// 1. The catalogue
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn catalogue_lists_products_blocks_and_workflows() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let list_body = s.get("/api/products", &s.admin_token).await.expect(200).body;
        let all = list_body.as_array().expect("a list of products");
        assert_eq!(all.len(), 3, "{l}: {list_body}");
        let product = |name: &str| {
            all.iter()
                .find(|p| p["name"] == name)
                .cloned()
                .unwrap_or_else(|| panic!("{l}: no product {name}"))
        };
        let resource_types = |p: &Value| -> Vec<String> {
            p["product_blocks"][0]["resource_types"]
                .as_array()
                .map(|a| a.iter().map(|r| str_of(r, "resource_type").to_owned()).collect())
                .unwrap_or_default()
        };
        let workflow_names = |p: &Value| -> BTreeSet<String> {
            p["workflows"]
                .as_array()
                .map(|a| a.iter().map(|w| str_of(w, "name").to_owned()).collect())
                .unwrap_or_default()
        };

        let group = product("User Group");
        assert_eq!(group["product_id"], "31892964-6ad1-52eb-8c09-77fba68b51b6", "{l}");
        assert_eq!(group["product_type"], "UserGroup", "{l}");
        assert_eq!(group["tag"], "GROUP", "{l}");
        assert_eq!(group["status"], "active", "{l}");
        assert_eq!(group["description"], "user group administration", "{l}");
        assert_eq!(group["fixed_inputs"], json!([]), "{l}");
        assert_eq!(group["product_blocks"][0]["name"], "UserGroupBlock", "{l}");
        assert_eq!(
            resource_types(&group),
            vec!["group_name", "group_id", "offerings"],
            "{l}"
        );
        assert_eq!(
            workflow_names(&group),
            [
                "create_user_group",
                "modify_user_group",
                "terminate_user_group",
                "validate_user_group"
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
            "{l}"
        );

        for (name, id, tag, affiliation) in [
            (
                "User internal",
                "091035e7-95a1-5997-8286-74a4ad1cc551",
                "USER_INT",
                "internal",
            ),
            (
                "User external",
                "df953f9e-85c7-5c26-92f1-c605c38af9ac",
                "USER_EXT",
                "external",
            ),
        ] {
            let p = product(name);
            assert_eq!(p["product_id"], id, "{l}: {name}");
            assert_eq!(p["product_type"], "User", "{l}: {name}");
            assert_eq!(p["tag"], tag, "{l}: {name}");
            assert_eq!(
                p["description"],
                format!("user administration - {affiliation}"),
                "{l}: {name}"
            );
            let fixed = p["fixed_inputs"].as_array().cloned().unwrap_or_default();
            assert_eq!(fixed.len(), 1, "{l}: {name}: {p}");
            assert_eq!(fixed[0]["name"], "affiliation", "{l}: {name}");
            assert_eq!(fixed[0]["value"], affiliation, "{l}: {name}");
            assert_eq!(p["product_blocks"][0]["name"], "UserBlock", "{l}: {name}");
            assert_eq!(resource_types(&p), vec!["username", "age", "user_id"], "{l}: {name}");
            assert_eq!(
                p["product_blocks"][0]["depends_on"][0]["name"], "UserGroupBlock",
                "{l}: {name}: a UserBlock depends on a UserGroupBlock"
            );
            assert_eq!(
                p["product_blocks"][0]["depends_on"][0]["attribute"], "group",
                "{l}: {name}"
            );
            assert_eq!(
                workflow_names(&p),
                ["create_user", "modify_user", "terminate_user", "validate_user"]
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect(),
                "{l}: {name}"
            );
            // One product by id is the list's entry.
            let one = s
                .get(&format!("/api/products/{id}"), &s.admin_token)
                .await
                .expect(200)
                .body;
            assert_eq!(one, p, "{l}: {name}");
        }

        // Filters
        let users = s
            .get("/api/products?product_type=User", &s.admin_token)
            .await
            .expect(200)
            .body;
        assert_eq!(users.as_array().map(Vec::len), Some(2), "{l}: {users}");
        let tagged = s.get("/api/products?tag=GROUP", &s.admin_token).await.expect(200).body;
        assert_eq!(tagged.as_array().map(Vec::len), Some(1), "{l}: {tagged}");
        s.get(&format!("/api/products/{}", Uuid::new_v4()), &s.admin_token)
            .await
            .expect_problem(404, "not_found");

        // Product blocks: the relation is visible from both ends.
        let blocks = s.get("/api/product_blocks", &s.admin_token).await.expect(200).body;
        let blocks = blocks.as_array().cloned().unwrap_or_default();
        assert_eq!(blocks.len(), 2, "{l}");
        let ugb = blocks
            .iter()
            .find(|b| b["name"] == "UserGroupBlock")
            .cloned()
            .expect("UserGroupBlock");
        assert_eq!(ugb["tag"], "UGB", "{l}");
        assert_eq!(ugb["in_use_by"][0]["name"], "UserBlock", "{l}: {ugb}");
        let ub = blocks
            .iter()
            .find(|b| b["name"] == "UserBlock")
            .cloned()
            .expect("UserBlock");
        assert_eq!(ub["tag"], "UB", "{l}");
        let one = s
            .get(
                &format!("/api/product_blocks/{}", str_of(&ub, "product_block_id")),
                &s.admin_token,
            )
            .await
            .expect(200)
            .body;
        assert_eq!(one, ub, "{l}");

        // Workflows: eight on subscriptions and four tasks.
        let wfs = s.get("/api/workflows", &s.admin_token).await.expect(200).body;
        let wfs = wfs.as_array().cloned().unwrap_or_default();
        let got: BTreeSet<(String, String, bool, Vec<String>)> = wfs
            .iter()
            .map(|w| {
                (
                    str_of(w, "name").to_owned(),
                    str_of(w, "target").to_owned(),
                    w["is_task"].as_bool().expect("is_task"),
                    w["product_types"]
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                        .unwrap_or_default(),
                )
            })
            .collect();
        let want: BTreeSet<(String, String, bool, Vec<String>)> = [
            ("create_user_group", "CREATE", false, "UserGroup"),
            ("modify_user_group", "MODIFY", false, "UserGroup"),
            ("terminate_user_group", "TERMINATE", false, "UserGroup"),
            ("validate_user_group", "VALIDATE", false, "UserGroup"),
            ("create_user", "CREATE", false, "User"),
            ("modify_user", "MODIFY", false, "User"),
            ("terminate_user", "TERMINATE", false, "User"),
            ("validate_user", "VALIDATE", false, "User"),
            ("task_validate_subscriptions", "SYSTEM", true, ""),
            ("task_resume_workflows", "SYSTEM", true, ""),
            ("task_clean_up_tasks", "SYSTEM", true, ""),
            ("task_clean_up_events", "SYSTEM", true, ""),
            ("task_reconcile_offering_accounts", "SYSTEM", true, ""),
        ]
        .iter()
        .map(|(n, t, task, pt)| {
            (
                (*n).to_owned(),
                (*t).to_owned(),
                *task,
                if pt.is_empty() { vec![] } else { vec![(*pt).to_owned()] },
            )
        })
        .collect();
        assert_eq!(got, want, "{l}");

        // One workflow, by name or by id, with its steps.
        let cu = s
            .get("/api/workflows/create_user", &s.admin_token)
            .await
            .expect(200)
            .body;
        let cu_steps = definition(&s, "create_user").await;
        assert!(in_order(&cu_steps, CREATE_USER_STEPS), "{l}: {cu}");
        assert_eq!(cu_steps.first().map(String::as_str), Some("init"), "{l}");
        assert_eq!(cu_steps.last().map(String::as_str), Some("done"), "{l}");
        assert_eq!(cu["version"], 1, "{l}");
        let by_id = s
            .get(
                &format!("/api/workflows/{}", str_of(&cu, "workflow_id")),
                &s.admin_token,
            )
            .await
            .expect(200)
            .body;
        assert_eq!(by_id, cu, "{l}");
        let tu = definition(&s, "terminate_user").await;
        assert!(
            in_order(
                &tu,
                &[
                    "init",
                    "store_process_subscription",
                    "unsync",
                    "deprovision_user",
                    "set_status",
                    "resync",
                    "done"
                ]
            ),
            "{l}: {tu:?}"
        );
        s.get("/api/workflows/nope", &s.admin_token)
            .await
            .expect_problem(404, "not_found");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. The form protocol
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_user_form_pages_and_validation_errors() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let p = products(&s).await;
        let alpha = create_group(&s, &p, "Form Alpha").await;
        let beta = create_group(&s, &p, "Form Beta").await;
        let gone = create_group(&s, &p, "Form Gone").await;
        terminate_group(&s, &gone).await;
        s.create_user(json!({"username": "taken-name"})).await;
        let processes_before = list(&s, "/api/processes?filter=is_task,false").await.1;
        let subscriptions_before = list(&s, "/api/subscriptions").await.1;

        // No pages yet: the product page, offering the User products only.
        let r = start(&s, "create_user", json!([])).await.expect(510);
        assert_eq!(r.body["type"], "FormNotCompleteError", "{l}: {}", r.body);
        assert_eq!(r.body["status"], 510, "{l}");
        assert_eq!(r.body["meta"], json!({"hasNext": true}), "{l}");
        let form = &r.body["form"];
        assert_eq!(form["required"], json!(["product"]), "{l}: {form}");
        assert_eq!(form["additionalProperties"], false, "{l}");
        assert_eq!(form["properties"]["product"]["format"], "productId", "{l}");
        let offered: BTreeSet<&str> = form["properties"]["product"]["enum"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert_eq!(
            offered,
            [p.internal.as_str(), p.external.as_str()].into_iter().collect(),
            "{l}: {form}"
        );

        // A product of another type is not a choice.
        let r = start(&s, "create_user", json!([{"product": p.group}])).await;
        let errors = validation_errors(&s, &r);
        assert_eq!(error_at(&s, &errors, "product")["type"], "enum", "{l}");
        let r = start(&s, "create_user", json!([{}])).await;
        let errors = validation_errors(&s, &r);
        assert_eq!(error_at(&s, &errors, "product")["type"], "missing", "{l}");

        // Page 2: the user, with exactly the active groups to choose from.
        let r = start(&s, "create_user", json!([{"product": p.internal}]))
            .await
            .expect(510);
        let form = &r.body["form"];
        assert_eq!(r.body["meta"], json!({"hasNext": false}), "{l}");
        assert_eq!(form["title"], "New user", "{l}");
        assert_eq!(form["required"], json!(["username", "user_group_ids"]), "{l}: {form}");
        let groups = &form["properties"]["user_group_ids"];
        assert_eq!(groups["type"], "array", "{l}");
        assert_eq!(groups["minItems"], 1, "{l}");
        assert_eq!(groups["maxItems"], 1, "{l}");
        let choices: BTreeSet<&str> = groups["items"]["enum"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert_eq!(
            choices,
            [alpha.as_str(), beta.as_str()].into_iter().collect(),
            "{l}: only active groups: {groups}"
        );
        assert_eq!(
            groups["items"]["options"][alpha.as_str()],
            "User Group Form Alpha",
            "{l}: labels are descriptions"
        );
        assert_eq!(form["properties"]["password"]["format"], "password", "{l}");
        assert_eq!(form["properties"]["age"]["type"], "integer", "{l}");

        // Every mistake at once; the password (too long) is never echoed.
        let secret = "Unechoed-Secret-Value-".repeat(200);
        let r = start(
            &s,
            "create_user",
            json!([{"product": p.internal}, {
                "age": "forty",
                "user_group_ids": [alpha, beta],
                "nickname": "x",
                "password": secret,
            }]),
        )
        .await;
        let errors = validation_errors(&s, &r);
        assert_eq!(r.body["title"], "Form not valid", "{l}");
        let missing = error_at(&s, &errors, "username");
        assert_eq!(missing["type"], "missing", "{l}");
        assert_eq!(missing["msg"], "Field required", "{l}");
        let age = error_at(&s, &errors, "age");
        assert_eq!(age["type"], "int_type", "{l}");
        assert_eq!(age["input"], "forty", "{l}");
        assert_eq!(error_at(&s, &errors, "nickname")["type"], "extra_forbidden", "{l}");
        let two = error_at(&s, &errors, "user_group_ids");
        assert_eq!(two["type"], "too_long", "{l}");
        assert_eq!(two["ctx"]["max_length"], 1, "{l}");
        let pw = error_at(&s, &errors, "password");
        assert_eq!(pw["type"], "string_too_long", "{l}");
        assert!(pw.get("input").is_none(), "{l}: a secret's input is not echoed: {pw}");
        assert!(
            !r.body.to_string().contains("Unechoed-Secret-Value"),
            "{l}: the password appears nowhere: {}",
            r.body
        );

        // A password the policy refuses is a form error too, and is not echoed either.
        let r = start(
            &s,
            "create_user",
            json!([{"product": p.internal}, {"username": "weakpw", "user_group_ids": [alpha], "password": "Wq-1"}]),
        )
        .await;
        let errors = validation_errors(&s, &r);
        assert_eq!(errors.len(), 1, "{l}: {errors:?}");
        assert_eq!(errors[0].0, "password", "{l}: {errors:?}");
        assert!(!r.body.to_string().contains("Wq-1"), "{l}: {}", r.body);

        // Unknown and terminated groups are not choices.
        for bad in [Uuid::new_v4().to_string(), gone.clone()] {
            let r = start(
                &s,
                "create_user",
                json!([{"product": p.internal}, {"username": "nogroup", "user_group_ids": [bad]}]),
            )
            .await;
            let errors = validation_errors(&s, &r);
            let e = error_at(&s, &errors, "user_group_ids.0");
            assert_eq!(e["type"], "enum", "{l}: {e}");
            assert_eq!(e["input"], bad.as_str(), "{l}");
            let expected = str_of(&e["ctx"], "expected");
            assert!(expected.contains(&alpha) && expected.contains(&beta), "{l}: {e}");
            assert!(!expected.contains(&gone), "{l}: {e}");
        }
        let r = start(
            &s,
            "create_user",
            json!([{"product": p.internal}, {"username": "nogroup", "user_group_ids": []}]),
        )
        .await;
        let errors = validation_errors(&s, &r);
        assert_eq!(error_at(&s, &errors, "user_group_ids")["type"], "too_short", "{l}");

        // A username the directory already has.
        let r = start(
            &s,
            "create_user",
            json!([{"product": p.internal}, {"username": "taken-name", "user_group_ids": [alpha]}]),
        )
        .await;
        let errors = validation_errors(&s, &r);
        let e = error_at(&s, &errors, "username");
        assert_eq!(e["type"], "value_error", "{l}");
        assert!(str_of(e, "msg").contains("taken"), "{l}: {e}");

        // A page that is not an object; more pages than the form has.
        let r = start(&s, "create_user", json!([{"product": p.internal}, 5])).await;
        let errors = validation_errors(&s, &r);
        assert_eq!(error_at(&s, &errors, "__root__")["type"], "model_type", "{l}");
        let r = start(
            &s,
            "create_user",
            json!([{"product": p.internal}, {"username": "overflow", "user_group_ids": [alpha]}, {}]),
        )
        .await
        .expect(400);
        assert_eq!(r.body["type"], "FormOverflowError", "{l}: {}", r.body);

        // A body that is not a list of pages; an unknown workflow; callers who may not start.
        start(&s, "create_user", json!({"product": p.internal}))
            .await
            .expect(400);
        start(&s, "no_such_workflow", json!([]))
            .await
            .expect_problem(404, "not_found");
        s.call(Method::POST, "/api/processes/create_user", None, Some(json!([])))
            .await
            .expect_problem(401, "E007001");
        let (_, regular) = s.user_with_session("form-regular", PASSWORD).await;
        s.post("/api/processes/create_user", &regular, json!([]))
            .await
            .expect_problem(403, "E005005");

        // Other forms: page 1 of modify / terminate names a subscription of the right type.
        let r = start(&s, "modify_user", json!([{"subscription_id": alpha}])).await;
        let errors = validation_errors(&s, &r);
        let e = error_at(&s, &errors, "subscription_id");
        assert!(str_of(e, "msg").contains("not a User subscription"), "{l}: {e}");
        let r = start(
            &s,
            "terminate_user_group",
            json!([{"subscription_id": Uuid::new_v4().to_string()}]),
        )
        .await;
        let errors = validation_errors(&s, &r);
        assert!(
            str_of(error_at(&s, &errors, "subscription_id"), "msg").contains("no such subscription"),
            "{l}"
        );
        let r = start(&s, "modify_user_group", json!([{"subscription_id": "short"}])).await;
        let errors = validation_errors(&s, &r);
        assert_eq!(
            error_at(&s, &errors, "subscription_id")["type"],
            "string_too_short",
            "{l}"
        );
        // The terminate form's last page is a summary asking for confirmation.
        let r = start(&s, "terminate_user_group", json!([{"subscription_id": alpha}]))
            .await
            .expect(510);
        assert_eq!(r.body["meta"], json!({"hasNext": false}), "{l}");
        let question = &r.body["form"]["properties"]["summary"]["extraProperties"]["data"]["question"];
        assert!(
            question.as_str().is_some_and(|q| q.contains("User Group Form Alpha")),
            "{l}: {}",
            r.body
        );

        // None of that started or created anything.
        assert_eq!(
            list(&s, "/api/processes?filter=is_task,false").await.1,
            processes_before,
            "{l}"
        );
        assert_eq!(list(&s, "/api/subscriptions").await.1, subscriptions_before, "{l}");
        assert_eq!(count_processes(&s, "create_user").await, 0, "{l}");
        assert_eq!(count_subscriptions(&s, "User").await, 0, "{l}");
        for name in ["nogroup", "weakpw", "overflow"] {
            assert!(directory_users(&s, name).await.is_empty(), "{l}: {name}");
        }
        let counts = s
            .get("/api/processes/status-counts", &s.admin_token)
            .await
            .expect(200)
            .body;
        assert_eq!(counts["process_counts"]["completed"], 4, "{l}: {counts}");
        assert!(counts["process_counts"].get("created").is_none(), "{l}: {counts}");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. The happy path
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_user_group_then_user_provisions_subscription_and_directory_user() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let p = products(&s).await;

        let gp = run_ok(
            &s,
            "create_user_group",
            json!([{"product": p.group}, {"group_name": "Happy Group", "customer_id": "cust-7"}]),
        )
        .await;
        assert_ran_steps(
            &s,
            &gp,
            &[
                "init",
                "create_subscription",
                "store_process_subscription",
                "initialize_subscription",
                "provision_user_group",
                "set_status",
                "resync",
                "done",
            ],
        )
        .await;
        let gid = subscription_of(&gp);
        let group = model(&s, &gid).await;
        assert_eq!(group["status"], "active", "{l}: {group}");
        assert_eq!(group["insync"], true, "{l}");
        assert_eq!(group["description"], "User Group Happy Group", "{l}");
        assert_eq!(group["customer_id"], "cust-7", "{l}");
        assert_eq!(group["product"]["name"], "User Group", "{l}");
        assert_eq!(group["user_group"]["group_name"], "Happy Group", "{l}");
        assert!(group["user_group"]["group_id"].is_i64(), "{l}: {group}");
        assert!(group["start_date"].is_string(), "{l}: {group}");

        let pid = start_ok(
            &s,
            "create_user",
            json!([{"product": p.internal}, {
                "username": "happy",
                "age": 42,
                "user_group_ids": [gid],
                "first_name": "Hap",
                "last_name": "Py",
                "email": "happy@example.com",
                "password": PASSWORD,
            }]),
        )
        .await;
        let proc = settle(&s, &pid).await;
        assert_status(&s, &proc, "completed");
        assert_eq!(proc["process_id"], pid.as_str(), "{l}");
        assert_eq!(proc["workflow_name"], "create_user", "{l}");
        assert_eq!(proc["workflow_target"], "CREATE", "{l}");
        assert_eq!(proc["is_task"], false, "{l}");
        assert_eq!(proc["last_step"], "done", "{l}");
        assert_eq!(proc["failed_reason"], Value::Null, "{l}");
        assert_ran_steps(&s, &proc, CREATE_USER_STEPS).await;
        // Every step succeeded, but for the offering-account step: skipped, as this group has
        // no offerings.
        let want: Vec<&str> = step_names(&proc)
            .iter()
            .map(|n| match n.as_str() {
                "done" => "complete",
                "request_offering_accounts" => "skipped",
                _ => "success",
            })
            .collect();
        assert_eq!(step_statuses(&proc), want, "{l}: {proc}");
        let sid = subscription_of(&proc);
        assert_eq!(proc["current_state"]["subscription_id"], sid.as_str(), "{l}");
        assert_eq!(proc["current_state"]["username"], "happy", "{l}");
        let text = proc.to_string();
        for secret in [PASSWORD, "$argon2", "password_hash"] {
            assert!(!text.contains(secret), "{l}: the process shows no {secret}: {text}");
        }

        // The subscription and its domain model.
        let user = model(&s, &sid).await;
        assert_eq!(user["status"], "active", "{l}: {user}");
        assert_eq!(user["insync"], true, "{l}");
        assert!(user["start_date"].is_string(), "{l}: {user}");
        assert_eq!(user["end_date"], Value::Null, "{l}");
        assert_eq!(
            user["description"], "User happy from group Happy Group (internal)",
            "{l}"
        );
        assert_eq!(user["affiliation"], "internal", "{l}");
        assert_eq!(user["product"]["name"], "User internal", "{l}");
        assert_eq!(user["user"]["username"], "happy", "{l}");
        assert_eq!(user["user"]["age"], 42, "{l}");
        let user_id = user["user"]["user_id"].as_i64().expect("user.user_id is an integer");
        assert_eq!(proc["current_state"]["user_id"], user_id, "{l}");
        assert_eq!(user["user"]["group"]["group_name"], "Happy Group", "{l}");
        assert_eq!(user["user"]["group"]["owner_subscription_id"], gid.as_str(), "{l}");
        assert_eq!(user["depends_on_ids"], json!([gid]), "{l}");
        assert_eq!(user["locked_by_process"], Value::Null, "{l}");
        assert_eq!(model(&s, &gid).await["in_use_by_ids"], json!([sid]), "{l}");
        assert!(!user.to_string().contains(PASSWORD), "{l}");

        // The directory user exists, with the form's fields, and the chosen password works.
        let found = directory_users(&s, "happy").await;
        assert_eq!(found.len(), 1, "{l}: {found:?}");
        assert_eq!(found[0]["first_name"], "Hap", "{l}");
        assert_eq!(found[0]["last_name"], "Py", "{l}");
        assert_eq!(found[0]["email"], "happy@example.com", "{l}");
        assert_eq!(found[0]["uuid"], user["user"]["directory_user"], "{l}");
        let token = s.login("happy", PASSWORD).await;
        let me = s.get("/api/users/me", &token).await.expect(200).body;
        assert_eq!(me["username"], "happy", "{l}");

        // What may run on it now: everything except create.
        for (target, name) in [
            ("modify", "modify_user"),
            ("terminate", "terminate_user"),
            ("validate", "validate_user"),
        ] {
            let e = workflow_entry(&s, &sid, target, name).await;
            assert!(e.get("reason").is_none(), "{l}: {e}");
        }
        let e = workflow_entry(&s, &gid, "terminate", "terminate_user_group").await;
        assert_eq!(
            e["reason"], "subscription.no_modify_subscription_in_use_by_others",
            "{l}: {e}"
        );
        let e = workflow_entry(&s, &gid, "modify", "modify_user_group").await;
        assert!(e.get("reason").is_none(), "{l}: {e}");

        // An external user says so.
        let proc = run_ok(
            &s,
            "create_user",
            json!([{"product": p.external}, {"username": "outsider", "user_group_ids": [gid]}]),
        )
        .await;
        let ext = model(&s, &subscription_of(&proc)).await;
        assert_eq!(
            ext["description"], "User outsider from group Happy Group (external)",
            "{l}"
        );
        assert_eq!(ext["affiliation"], "external", "{l}");
        assert_eq!(ext["user"]["age"], Value::Null, "{l}");
        assert_ne!(ext["user"]["user_id"].as_i64(), Some(user_id), "{l}");

        // Unknown subscriptions and processes.
        s.get(
            &format!("/api/subscriptions/domain-model/{}", Uuid::new_v4()),
            &s.admin_token,
        )
        .await
        .expect_problem(404, "not_found");
        s.get(&format!("/api/processes/{}", Uuid::new_v4()), &s.admin_token)
            .await
            .expect_problem(404, "not_found");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Choices are checked when submitted, not only when rendered
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_group_terminated_after_the_form_was_rendered_is_refused() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let p = products(&s).await;
        let doomed = create_group(&s, &p, "Doomed").await;
        let survivor = create_group(&s, &p, "Survivor").await;

        let r = start(&s, "create_user", json!([{"product": p.internal}]))
            .await
            .expect(510);
        let rendered = r.body["form"]["properties"]["user_group_ids"]["items"]["enum"].clone();
        assert!(
            rendered
                .as_array()
                .is_some_and(|a| a.iter().any(|g| g == doomed.as_str())),
            "{l}: the group is offered: {rendered}"
        );

        terminate_group(&s, &doomed).await;
        assert_eq!(model(&s, &doomed).await["status"], "terminated", "{l}");

        let r = start(
            &s,
            "create_user",
            json!([{"product": p.internal}, {"username": "late", "user_group_ids": [doomed]}]),
        )
        .await;
        let errors = validation_errors(&s, &r);
        assert_eq!(errors.len(), 1, "{l}: {errors:?}");
        let e = error_at(&s, &errors, "user_group_ids.0");
        assert_eq!(e["type"], "enum", "{l}: {e}");
        assert_eq!(
            e["ctx"]["expected"],
            format!("'{survivor}'"),
            "{l}: only the live group is expected"
        );
        assert_eq!(count_processes(&s, "create_user").await, 0, "{l}");
        assert_eq!(count_subscriptions(&s, "User").await, 0, "{l}");
        assert!(directory_users(&s, "late").await.is_empty(), "{l}");

        // The same page with the live group goes through.
        create_user(&s, &p, &survivor, "late").await;
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Unique numbers under concurrency
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn concurrent_create_users_never_share_a_user_id() {
    const N: usize = 20;
    for s in Server::all(&[]).await {
        let l = s.label;
        let p = products(&s).await;
        let gid = create_group(&s, &p, "Crowd").await;

        let mut set = tokio::task::JoinSet::new();
        for i in 0..N {
            let req = s
                .request(Method::POST, "/api/processes/create_user")
                .bearer_auth(&s.admin_token)
                .json(&json!([{"product": p.internal}, {"username": format!("crowd{i:02}"), "user_group_ids": [gid]}]));
            set.spawn(async move {
                let r = req.send().await.expect("request");
                let status = r.status().as_u16();
                let bytes = r.bytes().await.expect("body");
                (status, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null))
            });
        }
        let mut pids = Vec::new();
        while let Some(done) = set.join_next().await {
            let (status, body) = done.expect("task");
            assert_eq!(status, 201, "{l}: {body}");
            pids.push(str_of(&body, "id").to_owned());
        }

        let mut user_ids = BTreeSet::new();
        let mut subscriptions = BTreeSet::new();
        for pid in &pids {
            let proc = settle(&s, pid).await;
            assert_status(&s, &proc, "completed");
            let sid = subscription_of(&proc);
            let m = model(&s, &sid).await;
            assert_eq!(m["status"], "active", "{l}: {m}");
            user_ids.insert(m["user"]["user_id"].as_i64().expect("user_id"));
            subscriptions.insert(sid);
        }
        assert_eq!(user_ids.len(), N, "{l}: user_ids are distinct: {user_ids:?}");
        assert_eq!(subscriptions.len(), N, "{l}");
        assert_eq!(count_subscriptions(&s, "User").await, N as i64, "{l}");
        let (active, total) = list(
            &s,
            "/api/subscriptions?filter=product_type,User,status,active,insync,true&range=0,100",
        )
        .await;
        assert_eq!((active.len(), total), (N, N as i64), "{l}");
    }
}

// ---------------------------------------------------------------------------------------------
// 6 and 11. One workflow per subscription at a time; set_in_sync
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn two_concurrent_modifies_on_one_subscription_exactly_one_starts() {
    for a in Server::all(&[KEY, NO_WORKER]).await {
        let l = a.label;
        let p = products(&a).await;
        let w = worker(&a).await;
        let first = create_group(&a, &p, "Mod One").await;
        let second = create_group(&a, &p, "Mod Two").await;
        let sid = create_user(&a, &p, &first, "moddy").await;
        // From here on nothing runs until a worker is back.
        drop(w);

        // A stale optimistic version is refused with its reason.
        let version = model(&a, &sid).await["version"].as_i64().expect("version");
        let r = start(
            &a,
            "modify_user",
            json!([{"subscription_id": sid, "version": version - 1}, {"username": "moddy", "age": 1, "user_group_ids": [first]}]),
        )
        .await
        .expect_problem(409, "workflow_blocked");
        assert!(str_of(&r.body, "detail").contains("stale"), "{l}: {}", r.body);

        // Two modifies at once: one holds the subscription, the other is refused.
        let page =
            |name: &str| json!([{"subscription_id": sid}, {"username": name, "age": 30, "user_group_ids": [second]}]);
        let (r1, r2) = tokio::join!(
            start(&a, "modify_user", page("moddy-a")),
            start(&a, "modify_user", page("moddy-b"))
        );
        let mut codes = [r1.status.as_u16(), r2.status.as_u16()];
        codes.sort_unstable();
        assert_eq!(codes, [201, 409], "{l}: {} / {}", r1.body, r2.body);
        let (won, lost, winner) = if r1.status.as_u16() == 201 {
            (r1, r2, "moddy-a")
        } else {
            (r2, r1, "moddy-b")
        };
        let pid = str_of(&won.body, "id").to_owned();
        let lost = lost.expect_problem(409, "workflow_blocked");
        let detail = str_of(&lost.body, "detail");
        assert!(detail.contains("subscription.not_in_sync"), "{l}: {detail}");
        assert!(detail.contains(&pid), "{l}: names the holder: {detail}");

        // While it is held nothing else starts on it, and everyone can see why.
        for (wf, pages) in [
            ("modify_user", page("moddy-c")),
            ("terminate_user", json!([{"subscription_id": sid}, {}])),
            ("validate_user", json!([{"subscription_id": sid}])),
        ] {
            start(&a, wf, pages).await.expect_problem(409, "workflow_blocked");
        }
        for (target, name) in [
            ("modify", "modify_user"),
            ("terminate", "terminate_user"),
            ("validate", "validate_user"),
        ] {
            let e = workflow_entry(&a, &sid, target, name).await;
            assert_eq!(e["reason"], "subscription.not_in_sync", "{l}: {e}");
            assert_eq!(e["locked_by_process"], pid.as_str(), "{l}: {e}");
        }
        let held = model(&a, &sid).await;
        assert_eq!(held["insync"], false, "{l}: {held}");
        assert_eq!(held["locked_by_process"], pid.as_str(), "{l}");
        let (out_of_sync, _) = list(&a, "/api/subscriptions?filter=insync,false").await;
        assert_eq!(ids_of(&out_of_sync, "subscription_id"), vec![sid.clone()], "{l}");
        let (procs, total) = list(&a, &format!("/api/processes?filter=subscription_id,{sid}")).await;
        assert_eq!(total, 2, "{l}: the create and one modify: {procs:?}");
        assert_eq!(process(&a, &pid).await["last_status"], "created", "{l}");

        // set_in_sync is refused while a live process holds the subscription.
        a.put(
            &format!("/api/subscriptions/{sid}/set_in_sync"),
            &a.admin_token,
            json!({}),
        )
        .await
        .expect_problem(409, "workflow_blocked");
        assert_eq!(model(&a, &sid).await["insync"], false, "{l}");

        // A worker comes back: the one modify runs.
        let w = worker(&a).await;
        let proc = settle(&a, &pid).await;
        assert_status(&a, &proc, "completed");
        assert_ran_steps(
            &a,
            &proc,
            &[
                "init",
                "store_process_subscription",
                "unsync",
                "modify_user_subscription",
                "resync",
                "done",
            ],
        )
        .await;
        let m = model(&a, &sid).await;
        assert_eq!(m["insync"], true, "{l}: {m}");
        assert_eq!(m["locked_by_process"], Value::Null, "{l}");
        assert_eq!(m["user"]["username"], winner, "{l}");
        assert_eq!(m["user"]["age"], 30, "{l}");
        assert_eq!(
            m["description"],
            format!("User {winner} from group Mod Two (internal)"),
            "{l}"
        );
        assert_eq!(m["depends_on_ids"], json!([second]), "{l}");
        for g in [&first, &second] {
            assert_eq!(model(&a, g).await["insync"], true, "{l}");
        }
        assert_eq!(model(&a, &second).await["in_use_by_ids"], json!([sid]), "{l}");
        assert_eq!(model(&a, &first).await["in_use_by_ids"], json!([]), "{l}");
        // The directory user was renamed with it.
        assert_eq!(directory_users(&a, winner).await.len(), 1, "{l}");
        assert!(directory_users(&a, "moddy").await.is_empty(), "{l}");
        let e = workflow_entry(&a, &sid, "modify", "modify_user").await;
        assert!(e.get("reason").is_none(), "{l}: {e}");

        // Free again: set_in_sync is accepted (and harmless); unknown ids are 404.
        a.put(
            &format!("/api/subscriptions/{sid}/set_in_sync"),
            &a.admin_token,
            json!({}),
        )
        .await
        .expect(200);
        assert_eq!(model(&a, &sid).await["insync"], true, "{l}");
        a.put(
            &format!("/api/subscriptions/{}/set_in_sync", Uuid::new_v4()),
            &a.admin_token,
            json!({}),
        )
        .await
        .expect_problem(404, "not_found");

        // With the current version a modify starts.
        let version = model(&a, &sid).await["version"].as_i64().expect("version");
        let proc = run_ok(
            &a,
            "modify_user",
            json!([{"subscription_id": sid, "version": version}, {"username": winner, "age": 31, "user_group_ids": [second]}]),
        )
        .await;
        assert_eq!(model(&a, &sid).await["user"]["age"], 31, "{l}: {proc}");
        drop(w);
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Terminate: refused while in use; locks the directory user
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn terminate_user_group_waits_for_its_users_and_terminate_user_locks_the_account() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let p = products(&s).await;
        let gid = create_group(&s, &p, "Term Group").await;
        let pid = start_ok(
            &s,
            "create_user",
            json!([{"product": p.internal}, {"username": "leaver", "user_group_ids": [gid], "password": PASSWORD}]),
        )
        .await;
        let proc = settle(&s, &pid).await;
        assert_status(&s, &proc, "completed");
        let uid = subscription_of(&proc);
        let token = s.login("leaver", PASSWORD).await;

        // The group is in use by an active user.
        let r = start(&s, "terminate_user_group", json!([{"subscription_id": gid}, {}]))
            .await
            .expect_problem(409, "workflow_blocked");
        let detail = str_of(&r.body, "detail");
        assert!(detail.contains("in_use_by"), "{l}: {detail}");
        let e = workflow_entry(&s, &gid, "terminate", "terminate_user_group").await;
        assert_eq!(
            e["reason"], "subscription.no_modify_subscription_in_use_by_others",
            "{l}: {e}"
        );
        assert_eq!(model(&s, &gid).await["insync"], true, "{l}: a refusal holds nothing");
        assert_eq!(count_processes(&s, "terminate_user_group").await, 0, "{l}");

        // Terminate the user.
        let proc = run_ok(&s, "terminate_user", json!([{"subscription_id": uid}, {}])).await;
        assert_ran_steps(
            &s,
            &proc,
            &[
                "init",
                "store_process_subscription",
                "unsync",
                "deprovision_user",
                "set_status",
                "resync",
                "done",
            ],
        )
        .await;
        assert_eq!(proc["current_state"]["directory_user_locked"], true, "{l}: {proc}");
        let m = model(&s, &uid).await;
        assert_eq!(m["status"], "terminated", "{l}: {m}");
        assert!(m["end_date"].is_string(), "{l}: {m}");
        assert!(m["start_date"].is_string(), "{l}");
        assert_eq!(m["insync"], true, "{l}");
        let found = directory_users(&s, "leaver").await;
        assert_eq!(found.len(), 1, "{l}: the account stays for the record");
        assert_eq!(found[0]["is_locked"], true, "{l}: {found:?}");
        s.try_login(json!({"username": "leaver", "password": PASSWORD}))
            .await
            .expect_problem(403, "E005002");
        s.get("/api/users/me", &token).await.expect_problem(401, "E007001");

        // A terminated user takes no more workflows.
        for (wf, pages) in [
            (
                "modify_user",
                json!([{"subscription_id": uid}, {"username": "leaver", "age": 1, "user_group_ids": [gid]}]),
            ),
            ("terminate_user", json!([{"subscription_id": uid}, {}])),
        ] {
            start(&s, wf, pages).await.expect_problem(409, "workflow_blocked");
        }
        let e = workflow_entry(&s, &uid, "modify", "modify_user").await;
        assert_eq!(e["reason"], "subscription.no_modify_invalid_status", "{l}: {e}");

        // Now the group can go.
        let e = workflow_entry(&s, &gid, "terminate", "terminate_user_group").await;
        assert!(e.get("reason").is_none(), "{l}: {e}");
        let proc = terminate_group(&s, &gid).await;
        assert_ran_steps(
            &s,
            &proc,
            &[
                "init",
                "store_process_subscription",
                "unsync",
                "set_status",
                "resync",
                "done",
            ],
        )
        .await;
        let g = model(&s, &gid).await;
        assert_eq!(g["status"], "terminated", "{l}: {g}");
        assert!(g["end_date"].is_string(), "{l}");
        assert_eq!(g["insync"], true, "{l}");
        let r = start(&s, "create_user", json!([{"product": p.internal}]))
            .await
            .expect(510);
        assert_eq!(
            r.body["form"]["properties"]["user_group_ids"]["items"]["enum"],
            json!([]),
            "{l}: no group to choose"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 8. Failed processes: reasons, resume, abort
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_failed_create_is_aborted_without_leftovers_or_resumed_to_completion() {
    for a in Server::all(&[KEY, NO_WORKER]).await {
        let l = a.label;
        let p = products(&a).await;
        let w = worker(&a).await;
        let gid = create_group(&a, &p, "Fail Group").await;
        drop(w);

        // Two creates pass their forms and wait in the queue; meanwhile the directory gets
        // users with their names, so their step that makes the directory user fails.
        let doomed = start_ok(
            &a,
            "create_user",
            json!([{"product": p.internal}, {"username": "clash1", "user_group_ids": [gid]}]),
        )
        .await;
        let retried = start_ok(
            &a,
            "create_user",
            json!([{"product": p.internal}, {"username": "clash2", "user_group_ids": [gid], "password": PASSWORD}]),
        )
        .await;
        let squatter1 = a.create_user(json!({"username": "clash1"})).await;
        let squatter2 = a.create_user(json!({"username": "clash2"})).await;
        let w = worker(&a).await;
        for pid in [&doomed, &retried] {
            let proc = settle(&a, pid).await;
            assert_status(&a, &proc, "failed");
            assert_eq!(proc["last_step"], "initialize_subscription", "{l}: {proc}");
            assert_eq!(proc["next_step"], "initialize_subscription", "{l}");
            let reason = str_of(&proc, "failed_reason");
            assert!(reason.contains("username"), "{l}: a readable reason: {reason}");
            let steps = proc["steps"].as_array().cloned().unwrap_or_default();
            let last = steps.last().cloned().unwrap_or_default();
            assert_eq!(last["name"], "initialize_subscription", "{l}");
            assert_eq!(last["status"], "failed", "{l}");
            assert!(last["state"]["error"].is_string(), "{l}: {last}");
            // The subscription it made so far is held and initial.
            let m = model(&a, &subscription_of(&proc)).await;
            assert_eq!(m["status"], "initial", "{l}: {m}");
            assert_eq!(m["insync"], false, "{l}");
            assert_eq!(m["locked_by_process"], pid.as_str(), "{l}");
        }
        assert!(!process(&a, &retried).await.to_string().contains(PASSWORD), "{l}");

        // From here on nothing runs until a worker is back.
        drop(w);

        // Abort undoes what the create made: no subscription left; the squatter stays. Two
        // aborts at once: one wins.
        let sid = subscription_of(&process(&a, &doomed).await);
        let abort_path = format!("/api/processes/{doomed}/abort");
        let (r1, r2) = tokio::join!(
            a.put(&abort_path, &a.admin_token, json!({})),
            a.put(&abort_path, &a.admin_token, json!({}))
        );
        let mut codes = [r1.status.as_u16(), r2.status.as_u16()];
        codes.sort_unstable();
        assert_eq!(codes, [204, 409], "{l}: {} / {}", r1.body, r2.body);
        let proc = process(&a, &doomed).await;
        assert_status(&a, &proc, "aborted");
        let last = proc["steps"]
            .as_array()
            .and_then(|s| s.last())
            .cloned()
            .unwrap_or_default();
        assert_eq!(last["name"], "User Aborted", "{l}: {proc}");
        assert_eq!(last["status"], "abort", "{l}");
        a.get(&format!("/api/subscriptions/domain-model/{sid}"), &a.admin_token)
            .await
            .expect_problem(404, "not_found");
        events_until(&a, "subscriptions", |evs| {
            evs.iter()
                .any(|e| e["subject"] == sid.as_str() && e["kind"] == "subscription.deleted")
        })
        .await;
        assert_eq!(
            directory_users(&a, "clash1").await[0]["uuid"],
            squatter1["uuid"],
            "{l}: the process deletes only what it made"
        );
        // An aborted process stays aborted.
        a.put(&format!("/api/processes/{doomed}/abort"), &a.admin_token, json!({}))
            .await
            .expect_problem(409, "invalid_transition");
        a.put(&format!("/api/processes/{doomed}/resume"), &a.admin_token, json!([]))
            .await
            .expect_problem(409, "invalid_transition");

        // Resume after fixing the cause: the failed step runs again and the create completes.
        a.delete(&format!("/api/users/{}", str_of(&squatter2, "user_id")), &a.admin_token)
            .await
            .expect(204);
        // Two resumes at once: one wins, the process is queued once.
        let resume_path = format!("/api/processes/{retried}/resume");
        let (r1, r2) = tokio::join!(
            a.put(&resume_path, &a.admin_token, json!([])),
            a.put(&resume_path, &a.admin_token, json!([]))
        );
        let mut codes = [r1.status.as_u16(), r2.status.as_u16()];
        codes.sort_unstable();
        assert_eq!(codes, [204, 409], "{l}: {} / {}", r1.body, r2.body);
        assert_eq!(process(&a, &retried).await["last_status"], "resumed", "{l}");
        let w = worker(&a).await;
        let proc = settle(&a, &retried).await;
        assert_status(&a, &proc, "completed");
        assert_eq!(proc["failed_reason"], Value::Null, "{l}: {proc}");
        let names = step_names(&proc);
        assert_eq!(
            names.iter().filter(|n| *n == "initialize_subscription").count(),
            2,
            "{l}: failed once, then succeeded: {names:?}"
        );
        assert_eq!(names.last().map(String::as_str), Some("done"), "{l}");
        let m = model(&a, &subscription_of(&proc)).await;
        assert_eq!(m["status"], "active", "{l}: {m}");
        assert_eq!(m["insync"], true, "{l}");
        // The password chosen in the form survived the failure.
        a.login("clash2", PASSWORD).await;
        // A completed process can be neither aborted nor resumed.
        a.put(&format!("/api/processes/{retried}/abort"), &a.admin_token, json!({}))
            .await
            .expect_problem(409, "invalid_transition");
        a.put(&format!("/api/processes/{retried}/resume"), &a.admin_token, json!([]))
            .await
            .expect_problem(409, "invalid_transition");
        a.put(
            &format!("/api/processes/{}/abort", Uuid::new_v4()),
            &a.admin_token,
            json!({}),
        )
        .await
        .expect_problem(404, "not_found");
        drop(w);
    }
}

#[tokio::test]
async fn a_failed_validate_explains_itself_holds_the_subscription_and_resumes_or_aborts() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let p = products(&s).await;
        let gid = create_group(&s, &p, "Valid Group").await;
        let sid = create_user(&s, &p, &gid, "checked").await;
        let directory_user = model(&s, &sid).await["user"]["directory_user"]
            .as_str()
            .expect("directory_user")
            .to_owned();

        // In agreement: validate completes and releases the subscription.
        let proc = run_ok(&s, "validate_user", json!([{"subscription_id": sid}])).await;
        assert_ran_steps(
            &s,
            &proc,
            &[
                "init",
                "store_process_subscription",
                "unsync_unchecked",
                "validate_user_subscription",
                "resync",
                "done",
            ],
        )
        .await;
        assert_eq!(proc["current_state"]["validated"], true, "{l}");
        run_ok(&s, "validate_user_group", json!([{"subscription_id": gid}])).await;

        // The directory user is renamed behind the subscription's back.
        s.patch(
            &format!("/api/users/{directory_user}"),
            &s.admin_token,
            json!({"username": "renamed"}),
        )
        .await
        .expect(200);
        let pid = start_ok(&s, "validate_user", json!([{"subscription_id": sid}])).await;
        let proc = settle(&s, &pid).await;
        assert_status(&s, &proc, "failed");
        assert_eq!(proc["last_step"], "validate_user_subscription", "{l}");
        assert_eq!(
            proc["failed_reason"], "the subscription's username \"checked\" differs from the directory's \"renamed\"",
            "{l}: {proc}"
        );
        // The failed process still holds the subscription.
        let m = model(&s, &sid).await;
        assert_eq!(m["insync"], false, "{l}: {m}");
        assert_eq!(m["locked_by_process"], pid.as_str(), "{l}");
        start(
            &s,
            "modify_user",
            json!([{"subscription_id": sid}, {"username": "checked", "age": 1, "user_group_ids": [gid]}]),
        )
        .await
        .expect_problem(409, "workflow_blocked");
        let e = workflow_entry(&s, &sid, "modify", "modify_user").await;
        assert_eq!(e["reason"], "subscription.not_in_sync", "{l}: {e}");
        s.put(
            &format!("/api/subscriptions/{sid}/set_in_sync"),
            &s.admin_token,
            json!({}),
        )
        .await
        .expect_problem(409, "workflow_blocked");

        // Abort releases it.
        s.put(&format!("/api/processes/{pid}/abort"), &s.admin_token, json!({}))
            .await
            .expect(204);
        assert_status(&s, &process(&s, &pid).await, "aborted");
        let m = model(&s, &sid).await;
        assert_eq!(m["insync"], true, "{l}: {m}");
        assert_eq!(m["locked_by_process"], Value::Null, "{l}");
        assert_eq!(m["status"], "active", "{l}: abort of a validate changes nothing else");

        // Fails again; fix the directory and resume: it completes.
        let pid = start_ok(&s, "validate_user", json!([{"subscription_id": sid}])).await;
        assert_status(&s, &settle(&s, &pid).await, "failed");
        s.put(
            &format!("/api/processes/{pid}/resume"),
            &s.admin_token,
            json!([{"unexpected": 1}]),
        )
        .await
        .expect(204);
        let proc = settle(&s, &pid).await;
        assert_status(&s, &proc, "failed");
        s.patch(
            &format!("/api/users/{directory_user}"),
            &s.admin_token,
            json!({"username": "checked"}),
        )
        .await
        .expect(200);
        s.put(&format!("/api/processes/{pid}/resume"), &s.admin_token, json!([]))
            .await
            .expect(204);
        let proc = settle(&s, &pid).await;
        assert_status(&s, &proc, "completed");
        assert_eq!(proc["failed_reason"], Value::Null, "{l}: {proc}");
        let statuses: Vec<(String, String)> = step_names(&proc)
            .into_iter()
            .zip(step_statuses(&proc))
            .filter(|(n, _)| n == "validate_user_subscription")
            .collect();
        assert_eq!(
            statuses.iter().map(|(_, st)| st.as_str()).collect::<Vec<_>>(),
            vec!["failed", "failed", "success"],
            "{l}: {proc}"
        );
        let m = model(&s, &sid).await;
        assert_eq!(m["insync"], true, "{l}: {m}");
        assert_eq!(m["locked_by_process"], Value::Null, "{l}");
        let counts = s
            .get("/api/processes/status-counts", &s.admin_token)
            .await
            .expect(200)
            .body;
        assert_eq!(counts["process_counts"]["aborted"], 1, "{l}: {counts}");
        assert!(counts["process_counts"].get("failed").is_none(), "{l}: {counts}");
    }
}

// ---------------------------------------------------------------------------------------------
// 9. Pausing the engine
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_paused_engine_refuses_starts_and_holds_queued_work_until_resumed() {
    for a in Server::all(&[KEY, NO_WORKER]).await {
        let l = a.label;
        let p = products(&a).await;
        let w = worker(&a).await;
        let gid = create_group(&a, &p, "Pause Group").await;
        drop(w);

        let status = a.get("/api/settings/status", &a.admin_token).await.expect(200).body;
        assert_eq!(status["global_lock"], false, "{l}: {status}");
        assert_eq!(status["global_status"], "RUNNING", "{l}");

        // Queue two creates, then pause.
        let queued = start_ok(
            &a,
            "create_user",
            json!([{"product": p.internal}, {"username": "queued", "user_group_ids": [gid]}]),
        )
        .await;
        let dropped = start_ok(
            &a,
            "create_user",
            json!([{"product": p.internal}, {"username": "dropped", "user_group_ids": [gid]}]),
        )
        .await;
        let paused = set_lock(&a, true).await;
        assert_eq!(paused["global_lock"], true, "{l}: {paused}");
        assert!(
            paused["global_status"] == "PAUSED" || paused["global_status"] == "PAUSING",
            "{l}: {paused}"
        );

        // A worker that comes up now claims nothing.
        let w = worker(&a).await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        for pid in [&queued, &dropped] {
            assert_eq!(
                process(&a, pid).await["last_status"],
                "created",
                "{l}: not run while paused"
            );
        }
        let status = a.get("/api/settings/status", &a.admin_token).await.expect(200).body;
        assert_eq!(status["global_status"], "PAUSED", "{l}: {status}");
        assert_eq!(status["running_processes"], 0, "{l}");

        // Starts and resumes are refused while paused, on every node.
        for node in [&a, &w] {
            start(
                node,
                "create_user",
                json!([{"product": p.internal}, {"username": "refused", "user_group_ids": [gid]}]),
            )
            .await
            .expect_problem(503, "engine_paused");
        }
        a.put(&format!("/api/processes/{queued}/resume"), &a.admin_token, json!([]))
            .await
            .expect_problem(503, "engine_paused");

        // A queued process can be aborted while paused: it never runs.
        a.put(&format!("/api/processes/{dropped}/abort"), &a.admin_token, json!({}))
            .await
            .expect(204);
        assert_status(&a, &process(&a, &dropped).await, "aborted");

        // Resume: the queue moves.
        let running = set_lock(&a, false).await;
        assert_eq!(running["global_lock"], false, "{l}: {running}");
        assert_eq!(running["global_status"], "RUNNING", "{l}");
        let proc = settle(&a, &queued).await;
        assert_status(&a, &proc, "completed");
        assert_eq!(
            process(&a, &dropped).await["last_status"],
            "aborted",
            "{l}: an aborted process stays aborted"
        );
        let (users, total) = list(&a, "/api/subscriptions?filter=product_type,User").await;
        assert_eq!(total, 1, "{l}: only the queued create made a subscription: {users:?}");
        assert_eq!(
            users[0]["description"], "User queued from group Pause Group (internal)",
            "{l}"
        );
        assert!(directory_users(&a, "dropped").await.is_empty(), "{l}");
        assert_eq!(directory_users(&a, "queued").await.len(), 1, "{l}");
        // Running again: starts work.
        create_user(&a, &p, &gid, "after-pause").await;

        // Operators' acts are in the audit log.
        let log = a.audit("action=engine.set_status").await;
        let details: Vec<Value> = log["result"]
            .as_array()
            .map(|r| r.iter().map(|e| e["details"]["global_lock"].clone()).collect())
            .unwrap_or_default();
        assert_eq!(details.len(), 2, "{l}: {log}");
        assert!(
            details.contains(&json!(true)) && details.contains(&json!(false)),
            "{l}: {log}"
        );
        let log = a.audit("action=process.abort").await;
        assert_eq!(log["result"][0]["target"], dropped.as_str(), "{l}: {log}");
        let log = a.audit("action=process.start").await;
        assert!(
            log["result"].as_array().is_some_and(|r| r
                .iter()
                .any(|e| e["target"] == queued.as_str() && e["details"]["workflow"] == "create_user")),
            "{l}: {log}"
        );

        // Bad settings bodies.
        a.put("/api/settings/status", &a.admin_token, json!({"global_lock": "yes"}))
            .await
            .expect(400);
        a.put("/api/settings/status", &a.admin_token, json!({}))
            .await
            .expect(400);
        drop(w);
    }
}

// ---------------------------------------------------------------------------------------------
// 10. Lists
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn process_and_subscription_lists_filter_sort_and_page() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let p = products(&s).await;
        let g1 = create_group(&s, &p, "Lists One").await;
        let g2 = create_group(&s, &p, "Lists Two").await;
        let ann = create_user(&s, &p, &g1, "ann").await;
        let bob = subscription_of(
            &run_ok(
                &s,
                "create_user",
                json!([{"product": p.external}, {"username": "bob", "user_group_ids": [g1]}]),
            )
            .await,
        );
        let cyd = create_user(&s, &p, &g2, "cyd").await;
        run_ok(&s, "terminate_user", json!([{"subscription_id": cyd}, {}])).await;

        // ---- processes ----
        let (items, total) = list(&s, "/api/processes?filter=workflow_name,create_user&sort=started,ASC").await;
        assert_eq!(total, 3, "{l}");
        assert_eq!(
            items.iter().map(|i| i["workflow_name"].clone()).collect::<Vec<_>>(),
            vec![json!("create_user"); 3],
            "{l}"
        );
        let started: Vec<&str> = items.iter().map(|i| str_of(i, "started_at")).collect();
        let mut sorted = started.clone();
        sorted.sort_unstable();
        assert_eq!(started, sorted, "{l}: oldest first");
        assert!(items[0].get("steps").is_none(), "{l}: lists carry no steps");
        let (desc, _) = list(&s, "/api/processes?filter=workflow_name,create_user&sort=started,DESC").await;
        let mut reversed = ids_of(&desc, "process_id");
        reversed.reverse();
        assert_eq!(reversed, ids_of(&items, "process_id"), "{l}");

        // Paging and Content-Range.
        let r = s
            .get(
                "/api/processes?range=0,2&sort=started,ASC&filter=workflow_name,create_user",
                &s.admin_token,
            )
            .await
            .expect(200);
        assert_eq!(content_range(&r), "processes 0-2/3", "{l}");
        assert_eq!(
            ids_of(r.body.as_array().expect("list"), "process_id"),
            ids_of(&items[..2], "process_id"),
            "{l}"
        );
        let r = s
            .get(
                "/api/processes?range=2,4&sort=started,ASC&filter=workflow_name,create_user",
                &s.admin_token,
            )
            .await
            .expect(200);
        assert_eq!(content_range(&r), "processes 2-3/3", "{l}");
        assert_eq!(
            ids_of(r.body.as_array().expect("list"), "process_id"),
            ids_of(&items[2..], "process_id"),
            "{l}"
        );

        // Filters: status (any of), several workflows, subscription, target.
        let (_, n) = list(
            &s,
            "/api/processes?range=0,20&sort=started,DESC&filter=status,completed|failed,workflow_name,create_user",
        )
        .await;
        assert_eq!(n, 3, "{l}");
        let (_, n) = list(&s, "/api/processes?filter=status,failed").await;
        assert_eq!(n, 0, "{l}");
        let (_, n) = list(
            &s,
            "/api/processes?filter=workflow_name,create_user_group|terminate_user",
        )
        .await;
        assert_eq!(n, 3, "{l}");
        let (_, n) = list(&s, "/api/processes?filter=target,terminate").await;
        assert_eq!(n, 1, "{l}");
        let (on_cyd, n) = list(
            &s,
            &format!("/api/processes?filter=subscription_id,{cyd}&sort=started,ASC"),
        )
        .await;
        assert_eq!(n, 2, "{l}: {on_cyd:?}");
        assert_eq!(
            on_cyd.iter().map(|i| i["workflow_name"].clone()).collect::<Vec<_>>(),
            vec![json!("create_user"), json!("terminate_user")],
            "{l}"
        );
        let (_, n) = list(&s, &format!("/api/processes?filter=subscription_id,{ann}")).await;
        assert_eq!(n, 1, "{l}");
        let (_, n) = list(&s, "/api/processes?filter=is_task,false").await;
        assert_eq!(n, 6, "{l}");
        let (by_wf, _) = list(&s, "/api/processes?sort=workflow,ASC,started,ASC&filter=is_task,false").await;
        let names: Vec<&str> = by_wf.iter().map(|i| str_of(i, "workflow_name")).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted, "{l}");

        // Refusals are problem documents.
        for bad in [
            "filter=nope,1",
            "filter=status",
            "filter=status,bogus",
            "filter=subscription_id,not-a-uuid",
            "filter=is_task,maybe",
            "range=5,2",
            "range=a,b",
            "range=0",
            "range=0,5000",
            "sort=nope,ASC",
            "sort=started,UP",
            "sort=started",
            "bogus=1",
        ] {
            let r = s.get(&format!("/api/processes?{bad}"), &s.admin_token).await;
            assert_eq!(r.status.as_u16(), 400, "{l}: {bad}: {}", r.body);
            assert_eq!(
                r.headers.get("content-type").and_then(|v| v.to_str().ok()),
                Some("application/problem+json"),
                "{l}: {bad}"
            );
        }
        s.get("/api/processes?filter=nope,1", &s.admin_token)
            .await
            .expect_problem(400, "E008002");

        // ---- subscriptions ----
        let (all, total) = list(&s, "/api/subscriptions").await;
        assert_eq!((all.len(), total), (5, 5), "{l}");
        let (_, n) = list(&s, "/api/subscriptions?filter=product_type,User").await;
        assert_eq!(n, 3, "{l}");
        let (groups, n) = list(
            &s,
            "/api/subscriptions?filter=product_type,UserGroup&sort=description,ASC",
        )
        .await;
        assert_eq!(n, 2, "{l}");
        assert_eq!(ids_of(&groups, "subscription_id"), vec![g1.clone(), g2.clone()], "{l}");
        let (active, n) = list(
            &s,
            "/api/subscriptions?filter=product_type,User,status,active&sort=description,ASC",
        )
        .await;
        assert_eq!(n, 2, "{l}");
        assert_eq!(
            ids_of(&active, "subscription_id"),
            vec![ann.clone(), bob.clone()],
            "{l}"
        );
        assert_eq!(active[0]["product"]["name"], "User internal", "{l}");
        assert_eq!(active[1]["product"]["name"], "User external", "{l}");
        let (gone, n) = list(&s, "/api/subscriptions?filter=status,terminated").await;
        assert_eq!(n, 1, "{l}");
        assert_eq!(ids_of(&gone, "subscription_id"), vec![cyd.clone()], "{l}");
        assert!(gone[0]["end_date"].is_string(), "{l}");
        let (_, n) = list(&s, "/api/subscriptions?filter=status,active|terminated").await;
        assert_eq!(n, 5, "{l}");
        let (_, n) = list(&s, "/api/subscriptions?filter=insync,true").await;
        assert_eq!(n, 5, "{l}");
        let (_, n) = list(&s, "/api/subscriptions?filter=insync,false").await;
        assert_eq!(n, 0, "{l}");
        let (_, n) = list(&s, &format!("/api/subscriptions?filter=product,{}", p.external)).await;
        assert_eq!(n, 1, "{l}");
        let (_, n) = list(&s, "/api/subscriptions?filter=customer_id,default").await;
        assert_eq!(n, 2, "{l}: groups default to customer 'default'");
        // Free text: a case-insensitive substring of the description.
        let (found, n) = list(&s, "/api/subscriptions?query=user%20bob").await;
        assert_eq!(n, 1, "{l}");
        assert_eq!(ids_of(&found, "subscription_id"), vec![bob.clone()], "{l}");
        let (_, n) = list(&s, "/api/subscriptions?query=LISTS%20ONE").await;
        assert_eq!(n, 3, "{l}: the group and its two users");
        for (q, what) in [("100%25", "%"), ("_", "_"), ("%5C", "\\"), ("%27", "'")] {
            let (_, n) = list(&s, &format!("/api/subscriptions?query={q}")).await;
            assert_eq!(n, 0, "{l}: {what} is literal");
        }
        // Paging.
        let r = s
            .get("/api/subscriptions?range=1,3&sort=description,ASC", &s.admin_token)
            .await
            .expect(200);
        assert_eq!(content_range(&r), "subscriptions 1-3/5", "{l}");
        assert_eq!(r.body.as_array().map(Vec::len), Some(2), "{l}");
        for bad in [
            "filter=nope,1",
            "filter=insync,maybe",
            "filter=status,bogus",
            "filter=product,not-a-uuid",
            "filter=product_type",
            "range=3,1",
            "range=-1,5",
            "sort=bogus,ASC",
            "other=1",
        ] {
            let r = s.get(&format!("/api/subscriptions?{bad}"), &s.admin_token).await;
            assert_eq!(r.status.as_u16(), 400, "{l}: {bad}: {}", r.body);
            assert_eq!(
                r.headers.get("content-type").and_then(|v| v.to_str().ok()),
                Some("application/problem+json"),
                "{l}: {bad}"
            );
        }

        // Lists are for super-users.
        let (_, regular) = s.user_with_session("lists-regular", PASSWORD).await;
        s.get("/api/processes", &regular).await.expect_problem(403, "E005005");
        s.get("/api/subscriptions", &regular)
            .await
            .expect_problem(403, "E005005");
    }
}

// ---------------------------------------------------------------------------------------------
// 12. Events
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn processes_and_subscriptions_are_published_on_their_streams() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let p = products(&s).await;
        let gid = create_group(&s, &p, "Event Group").await;
        let pid = start_ok(
            &s,
            "create_user",
            json!([{"product": p.internal}, {"username": "evented", "user_group_ids": [gid], "password": PASSWORD}]),
        )
        .await;
        let proc = settle(&s, &pid).await;
        assert_status(&s, &proc, "completed");
        let sid = subscription_of(&proc);

        // The process stream: created, then an update per step, the last one completed.
        let events = events_until(&s, "processes", |evs| {
            evs.iter()
                .any(|e| e["subject"] == pid.as_str() && e["data"]["last_status"] == "completed")
        })
        .await;
        let seqs: Vec<i64> = events.iter().filter_map(|e| e["seq"].as_i64()).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as i64).collect::<Vec<_>>(),
            "{l}: numbered without gaps"
        );
        let mine: Vec<&Value> = events.iter().filter(|e| e["subject"] == pid.as_str()).collect();
        assert_eq!(mine[0]["kind"], "process.created", "{l}: {mine:?}");
        assert_eq!(mine[0]["stream"], "processes", "{l}");
        assert_eq!(mine[0]["data"]["workflow_name"], "create_user", "{l}");
        let updates: Vec<&str> = mine[1..]
            .iter()
            .map(|e| {
                assert_eq!(e["kind"], "process.updated", "{l}: {e}");
                str_of(&e["data"], "last_step")
            })
            .collect();
        assert_eq!(updates, definition(&s, "create_user").await, "{l}: one update per step");
        let text = serde_json::to_string(&events).expect("json");
        assert!(!text.contains(PASSWORD), "{l}: no password in process events");

        // The subscription stream: created, updated through the lifecycle, active and in sync.
        let events = events_until(&s, "subscriptions", |evs| {
            evs.iter()
                .any(|e| e["subject"] == sid.as_str() && e["data"]["status"] == "active" && e["data"]["insync"] == true)
        })
        .await;
        let mine: Vec<&Value> = events.iter().filter(|e| e["subject"] == sid.as_str()).collect();
        assert_eq!(mine[0]["kind"], "subscription.created", "{l}: {mine:?}");
        assert_eq!(mine[0]["stream"], "subscriptions", "{l}");
        assert_eq!(mine[0]["data"]["status"], "initial", "{l}");
        assert!(
            mine[1..].iter().all(|e| e["kind"] == "subscription.updated"),
            "{l}: {mine:?}"
        );
        let statuses: Vec<&str> = mine.iter().map(|e| str_of(&e["data"], "status")).collect();
        assert!(statuses.contains(&"provisioning"), "{l}: {statuses:?}");
        let last = mine.last().expect("an event");
        assert_eq!(last["data"]["status"], "active", "{l}");
        assert_eq!(last["data"]["insync"], true, "{l}");
        assert_eq!(
            last["data"]["description"], "User evented from group Event Group (internal)",
            "{l}"
        );
        let group_events = events.iter().filter(|e| e["subject"] == gid.as_str()).count();
        assert!(group_events >= 2, "{l}: the group's own events are there too");
        let text = serde_json::to_string(&events).expect("json");
        assert!(!text.contains(PASSWORD), "{l}: no password in subscription events");

        // The directory stream has the user the workflow created, without secrets.
        let events = events_until(&s, "directory", |evs| {
            evs.iter()
                .any(|e| e["kind"] == "user.created" && e["data"]["username"] == "evented")
        })
        .await;
        let text = serde_json::to_string(&events).expect("json");
        assert!(!text.contains(PASSWORD) && !text.contains("$argon2"), "{l}");

        // SSE from a cursor, resumable with Last-Event-ID.
        let first = sse(&s, "processes", None, 2).await;
        assert_eq!(first.iter().map(|e| e.0).collect::<Vec<_>>(), vec![1, 2], "{l}");
        assert_eq!(first[0].1, "process.created", "{l}: the event type is the kind");
        let resumed = sse(&s, "processes", Some(2), 1).await;
        assert_eq!(resumed[0].0, 3, "{l}: resumes after Last-Event-ID");
    }
}

/// Opens an SSE connection on `stream` (from the start, or after `last_event_id`) and returns
/// the (id, event) pairs of the first `n` events.
async fn sse(s: &Server, stream: &str, last_event_id: Option<i64>, n: usize) -> Vec<(i64, String)> {
    let query = if last_event_id.is_some() { "" } else { "&after=0" };
    let mut req = s
        .request(Method::GET, &format!("/api/events?stream={stream}{query}"))
        .bearer_auth(&s.admin_token)
        .header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id.to_string());
    }
    let mut resp = req.send().await.expect("sse request");
    assert_eq!(resp.status(), 200, "{}", s.label);
    let mut text = String::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, resp.chunk())
            .await
            .expect("events arrive in time")
            .expect("chunk")
            .expect("stream still open");
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let (mut id, mut kind) = (None, String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    kind = v.trim().to_owned();
                }
            }
            if let Some(id) = id {
                out.push((id, kind));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Races between workflows on related subscriptions
// ---------------------------------------------------------------------------------------------

/// A terminate of a group and a create of a user in it, both queued before either runs: at
/// most one of them completes, and never an active user in a terminated group.
#[tokio::test]
async fn a_group_terminate_racing_a_create_user_never_leaves_a_user_in_a_dead_group() {
    for a in Server::all(&[KEY, NO_WORKER]).await {
        let l = a.label;
        let p = products(&a).await;
        let w = worker(&a).await;
        let gid = create_group(&a, &p, "Race Group").await;
        drop(w);

        let create = start_ok(
            &a,
            "create_user",
            json!([{"product": p.internal}, {"username": "racer", "user_group_ids": [gid]}]),
        )
        .await;
        let terminate = start_ok(&a, "terminate_user_group", json!([{"subscription_id": gid}, {}])).await;
        let w = worker(&a).await;
        let c = settle(&a, &create).await;
        let t = settle(&a, &terminate).await;
        let outcome = (str_of(&c, "last_status"), str_of(&t, "last_status"));
        assert!(
            outcome == ("completed", "failed") || outcome == ("failed", "completed"),
            "{l}: exactly one wins: {outcome:?}; create {c}; terminate {t}"
        );
        let group = model(&a, &gid).await;
        let (users, _) = list(&a, "/api/subscriptions?filter=product_type,User,status,active").await;
        if group["status"] == "terminated" {
            assert!(users.is_empty(), "{l}: no active user in a terminated group: {users:?}");
            assert!(directory_users(&a, "racer").await.is_empty(), "{l}");
        } else {
            assert_eq!(users.len(), 1, "{l}");
            assert_eq!(group["status"], "active", "{l}: {group}");
            // The failed terminate still holds the group; aborting it releases the group.
            assert_eq!(group["insync"], false, "{l}");
            a.put(&format!("/api/processes/{terminate}/abort"), &a.admin_token, json!({}))
                .await
                .expect(204);
            assert_eq!(model(&a, &gid).await["insync"], true, "{l}");
        }
        drop(w);
    }
}

// ---------------------------------------------------------------------------------------------
// Durability: a worker dies mid-run
// ---------------------------------------------------------------------------------------------

/// A worker killed while it runs a batch of creates: another worker takes the processes over
/// once their leases expire; every process completes, every step is logged exactly once, and
/// nothing is allocated or created twice.
#[tokio::test]
async fn a_worker_killed_mid_run_loses_nothing_and_repeats_no_step() {
    const N: usize = 24;
    for a in Server::all(&[KEY, NO_WORKER]).await {
        let l = a.label;
        let p = products(&a).await;
        let w = worker(&a).await;
        let gid = create_group(&a, &p, "Crash Group").await;
        drop(w);

        let mut pids = Vec::new();
        for i in 0..N {
            pids.push(
                start_ok(
                    &a,
                    "create_user",
                    json!([{"product": p.internal}, {"username": format!("crash{i:02}"), "user_group_ids": [gid]}]),
                )
                .await,
            );
        }
        // A worker with short leases starts on the queue and is killed part-way.
        let mut doomed = worker_from_now(&a, &[KEY, ("MUSTER_LEASE_SECS", "2")]).await;
        until_some(&a, "create_user", "completed").await;
        doomed.kill().await;
        let (done, _) = list(
            &a,
            "/api/processes?filter=workflow_name,create_user,status,completed&range=0,100",
        )
        .await;
        eprintln!(
            "{l}: {} of {N} creates completed when the worker was killed",
            done.len()
        );

        let w = worker(&a).await;
        let mut user_ids = BTreeSet::new();
        for pid in &pids {
            let proc = settle(&a, pid).await;
            assert_status(&a, &proc, "completed");
            assert_ran_steps(&a, &proc, CREATE_USER_STEPS).await;
            let m = model(&a, &subscription_of(&proc)).await;
            assert_eq!(m["status"], "active", "{l}");
            assert_eq!(m["insync"], true, "{l}");
            user_ids.insert(m["user"]["user_id"].as_i64().expect("user_id"));
        }
        assert_eq!(user_ids.len(), N, "{l}: distinct user_ids");
        assert_eq!(count_subscriptions(&a, "User").await, N as i64, "{l}");
        for i in 0..N {
            assert_eq!(
                directory_users(&a, &format!("crash{i:02}")).await.len(),
                1,
                "{l}: one directory user each"
            );
        }
        drop(w);
    }
}

// ---------------------------------------------------------------------------------------------
// Tasks
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_validate_subscriptions_task_validates_every_active_subscription_in_sync() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let p = products(&s).await;
        let gid = create_group(&s, &p, "Task Group").await;
        let good = create_user(&s, &p, &gid, "task-good").await;
        let gone = create_user(&s, &p, &gid, "task-gone").await;
        run_ok(&s, "terminate_user", json!([{"subscription_id": gone}, {}])).await;
        // One user is held by a failed validate: the task leaves it alone.
        let held = create_user(&s, &p, &gid, "task-held").await;
        let du = model(&s, &held).await["user"]["directory_user"]
            .as_str()
            .expect("directory_user")
            .to_owned();
        s.patch(
            &format!("/api/users/{du}"),
            &s.admin_token,
            json!({"username": "task-moved"}),
        )
        .await
        .expect(200);
        let failed = start_ok(&s, "validate_user", json!([{"subscription_id": held}])).await;
        assert_status(&s, &settle(&s, &failed).await, "failed");

        // A task takes no form pages.
        let r = start(&s, "task_validate_subscriptions", json!([{}])).await.expect(400);
        assert_eq!(r.body["type"], "FormOverflowError", "{l}");
        let task = run_ok(&s, "task_validate_subscriptions", json!([])).await;
        assert_eq!(task["is_task"], true, "{l}");
        assert_eq!(task["workflow_target"], "SYSTEM", "{l}");
        assert_eq!(step_names(&task), vec!["init", "start_validations", "done"], "{l}");
        assert_eq!(task["current_state"]["validations_started"], 2, "{l}: {task}");
        assert_eq!(task["current_state"]["validations_skipped"], 0, "{l}");

        let (validations, _) = list(
            &s,
            "/api/processes?filter=workflow_name,validate_user|validate_user_group,created_by,scheduler&range=0,100",
        )
        .await;
        assert_eq!(validations.len(), 2, "{l}: {validations:?}");
        let mut validated = BTreeSet::new();
        for v in &validations {
            let proc = settle(&s, str_of(v, "process_id")).await;
            assert_status(&s, &proc, "completed");
            validated.insert(subscription_of(&proc));
        }
        assert_eq!(validated, [gid.clone(), good.clone()].into_iter().collect(), "{l}");

        // Tasks are counted apart from workflows.
        let counts = s
            .get("/api/processes/status-counts", &s.admin_token)
            .await
            .expect(200)
            .body;
        assert!(counts["task_counts"]["completed"].as_i64() >= Some(1), "{l}: {counts}");
        assert_eq!(counts["process_counts"]["failed"], 1, "{l}: {counts}");
        let (tasks, _) = list(&s, "/api/processes?filter=is_task,true&range=0,100").await;
        assert!(
            ids_of(&tasks, "process_id").contains(&str_of(&task, "process_id").to_owned()),
            "{l}: {tasks:?}"
        );
        let (_, n) = list(
            &s,
            "/api/processes?filter=is_task,false,workflow_name,task_validate_subscriptions",
        )
        .await;
        assert_eq!(n, 0, "{l}");
    }
}

// ---------------------------------------------------------------------------------------------
// More races and releases
// ---------------------------------------------------------------------------------------------

/// Several creates of one username pass their forms together: one completes, the others fail
/// with a readable reason, and aborting them leaves nothing behind.
#[tokio::test]
async fn concurrent_creates_of_one_username_make_one_user() {
    const N: usize = 6;
    for s in Server::all(&[]).await {
        let l = s.label;
        let p = products(&s).await;
        let gid = create_group(&s, &p, "Same Group").await;
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..N {
            let req = s
                .request(Method::POST, "/api/processes/create_user")
                .bearer_auth(&s.admin_token)
                .json(&json!([{"product": p.internal}, {"username": "twin", "user_group_ids": [gid]}]));
            set.spawn(async move {
                let r = req.send().await.expect("request");
                let status = r.status().as_u16();
                let bytes = r.bytes().await.expect("body");
                (status, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null))
            });
        }
        let mut pids = Vec::new();
        while let Some(done) = set.join_next().await {
            let (status, body) = done.expect("task");
            match status {
                201 => pids.push(str_of(&body, "id").to_owned()),
                // A start that came after the winner created the user is refused by the form.
                400 => assert_eq!(body["type"], "FormValidationError", "{l}: {body}"),
                other => panic!("{l}: unexpected {other}: {body}"),
            }
        }
        let mut completed = 0;
        for pid in &pids {
            let proc = settle(&s, pid).await;
            match str_of(&proc, "last_status") {
                "completed" => completed += 1,
                "failed" => {
                    assert!(
                        proc["failed_reason"]
                            .as_str()
                            .is_some_and(|r| r.starts_with("username already exists")),
                        "{l}: {proc}"
                    );
                    s.put(&format!("/api/processes/{pid}/abort"), &s.admin_token, json!({}))
                        .await
                        .expect(204);
                }
                other => panic!("{l}: {other}: {proc}"),
            }
        }
        assert_eq!(completed, 1, "{l}: one winner");
        assert_eq!(directory_users(&s, "twin").await.len(), 1, "{l}");
        assert_eq!(
            count_subscriptions(&s, "User").await,
            1,
            "{l}: the losers' subscriptions are gone"
        );
    }
}

/// Aborting a queued modify releases the subscription it held, and publishes that.
#[tokio::test]
async fn aborting_a_queued_modify_releases_its_subscription() {
    for a in Server::all(&[KEY, NO_WORKER]).await {
        let l = a.label;
        let p = products(&a).await;
        let w = worker(&a).await;
        let gid = create_group(&a, &p, "Release Group").await;
        let sid = create_user(&a, &p, &gid, "released").await;
        drop(w);

        let pid = start_ok(
            &a,
            "modify_user",
            json!([{"subscription_id": sid}, {"username": "renamed-never", "age": 5, "user_group_ids": [gid]}]),
        )
        .await;
        let held = model(&a, &sid).await;
        assert_eq!(held["insync"], false, "{l}");
        a.put(&format!("/api/processes/{pid}/abort"), &a.admin_token, json!({}))
            .await
            .expect(204);
        let proc = process(&a, &pid).await;
        assert_status(&a, &proc, "aborted");
        assert_eq!(step_names(&proc), vec!["User Aborted"], "{l}: no step ran: {proc}");
        let m = model(&a, &sid).await;
        assert_eq!(m["insync"], true, "{l}: {m}");
        assert_eq!(m["locked_by_process"], Value::Null, "{l}");
        assert_eq!(m["user"]["username"], "released", "{l}: nothing changed");
        assert_eq!(m["status"], "active", "{l}");
        // The hold and the release are on the subscriptions stream.
        events_until(&a, "subscriptions", |evs| {
            let mine: Vec<&Value> = evs.iter().filter(|e| e["subject"] == sid.as_str()).collect();
            mine.iter().any(|e| e["data"]["locked_by_process"] == pid.as_str())
                && mine.iter().any(|e| e["data"]["released_by_abort_of"] == pid.as_str())
        })
        .await;
        // A modify starts again at once.
        let w = worker(&a).await;
        run_ok(
            &a,
            "modify_user",
            json!([{"subscription_id": sid}, {"username": "released", "age": 6, "user_group_ids": [gid]}]),
        )
        .await;
        assert_eq!(model(&a, &sid).await["user"]["age"], 6, "{l}");
        drop(w);
    }
}

// ---------------------------------------------------------------------------------------------
// Bugs found by this suite, fixed since: regression tests
// ---------------------------------------------------------------------------------------------

/// docs/api.md: "Every error is application/problem+json"; a malformed path id names nothing, so
/// it is a 404 `not_found` problem like an unknown one. Found with resume, abort, callback,
/// subscription, product and product-block routes answering axum's default `Path<Uuid>`
/// rejection (400 `text/plain`); fixed in ce0badf and 7f7226d.
#[tokio::test]
async fn malformed_ids_in_paths_answer_problem_documents() {
    for s in Server::all(&[]).await {
        let l = s.label;
        // As GET /api/processes/{id} answers.
        s.get("/api/processes/not-a-uuid", &s.admin_token)
            .await
            .expect_problem(404, "not_found");
        for (method, path) in [
            (Method::PUT, "/api/processes/not-a-uuid/resume"),
            (Method::PUT, "/api/processes/not-a-uuid/abort"),
            (Method::POST, "/api/processes/not-a-uuid/callback/token"),
            (Method::GET, "/api/subscriptions/domain-model/not-a-uuid"),
            (Method::GET, "/api/subscriptions/workflows/not-a-uuid"),
            (Method::PUT, "/api/subscriptions/not-a-uuid/set_in_sync"),
            (Method::DELETE, "/api/subscriptions/not-a-uuid"),
            (Method::GET, "/api/product_blocks/not-a-uuid"),
            (Method::GET, "/api/products/not-a-uuid"),
        ] {
            let r = s
                .call(method.clone(), path, Some(&s.admin_token), Some(json!([])))
                .await;
            assert_eq!(
                (r.status.as_u16(), r.code()),
                (404, "not_found"),
                "{l}: {method} {path}: {} {:?}",
                r.body,
                r.headers.get("content-type")
            );
            r.expect_problem(404, "not_found");
        }
    }
}

/// The directory lets a user's name change case (`PATCH /api/users/{id}`), and so does
/// modify_user. (Found refused as "this username is taken": the form's case-insensitive lookup
/// found the subscription's own directory user; fixed in ce0badf.)
#[tokio::test]
async fn modify_user_can_change_the_case_of_its_own_username() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let p = products(&s).await;
        let gid = create_group(&s, &p, "Case Group").await;
        let sid = create_user(&s, &p, &gid, "casey").await;
        // The directory itself allows it.
        let other = s.create_user(json!({"username": "dora"})).await;
        s.patch(
            &format!("/api/users/{}", str_of(&other, "user_id")),
            &s.admin_token,
            json!({"username": "Dora"}),
        )
        .await
        .expect(200);

        let r = start(
            &s,
            "modify_user",
            json!([{"subscription_id": sid}, {"username": "Casey", "age": 1, "user_group_ids": [gid]}]),
        )
        .await;
        assert_eq!(r.status.as_u16(), 201, "{l}: {}", r.body);
        let proc = settle(&s, str_of(&r.body, "id")).await;
        assert_status(&s, &proc, "completed");
        assert_eq!(model(&s, &sid).await["user"]["username"], "Casey", "{l}");
    }
}

/// As in orchestrator-core (`orchestrator/services/subscriptions.py`), a workflow is blocked with `subscription.relations_not_in_sync` while a
/// subscription it depends on is out of sync. (Found never reported — `start_blocked` did not
/// return it and a modify_user started while another workflow held the user's group; fixed in
/// ce0badf.)
#[tokio::test]
async fn a_user_is_blocked_while_its_group_is_held() {
    for a in Server::all(&[KEY, NO_WORKER]).await {
        let l = a.label;
        let p = products(&a).await;
        let w = worker(&a).await;
        let gid = create_group(&a, &p, "Held Group").await;
        let sid = create_user(&a, &p, &gid, "dependent").await;
        drop(w);
        // A modify of the group is queued: it holds the group.
        start_ok(
            &a,
            "modify_user_group",
            json!([{"subscription_id": gid}, {"group_name": "Held Group 2"}]),
        )
        .await;
        assert_eq!(model(&a, &gid).await["insync"], false, "{l}");

        let e = workflow_entry(&a, &sid, "modify", "modify_user").await;
        assert_eq!(e["reason"], "subscription.relations_not_in_sync", "{l}: {e}");
        let r = start(
            &a,
            "modify_user",
            json!([{"subscription_id": sid}, {"username": "dependent", "age": 2, "user_group_ids": [gid]}]),
        )
        .await;
        assert_eq!(r.status.as_u16(), 409, "{l}: {}", r.body);
        assert!(
            str_of(&r.body, "detail").contains("relations_not_in_sync"),
            "{l}: {}",
            r.body
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Pausing mid-run; aborting a process stopped between steps
// ---------------------------------------------------------------------------------------------

/// Aborts a create_user process that stopped part-way and checks that exactly what its steps
/// made is undone: a subscription still `initial`/`provisioning` and the directory user it made
/// are removed; one that got as far as `active` stays and is released.
async fn abort_and_check_compensation(a: &Server, proc: &Value) {
    let l = a.label;
    let pid = str_of(proc, "process_id");
    let username = str_of(&proc["current_state"], "username").to_owned();
    let sid = proc["subscriptions"][0]["subscription_id"].as_str().map(str::to_owned);
    let before = match &sid {
        Some(sid) => Some(model(a, sid).await["status"].clone()),
        None => None,
    };
    let r = a
        .put(&format!("/api/processes/{pid}/abort"), &a.admin_token, json!({}))
        .await;
    assert_eq!(
        r.status.as_u16(),
        204,
        "{l}: abort of a process stopped after {}: {}",
        proc["last_step"],
        r.body
    );
    assert_status(a, &process(a, pid).await, "aborted");
    match (sid, before) {
        (Some(sid), Some(st)) if st == "active" => {
            let m = model(a, &sid).await;
            assert_eq!(m["insync"], true, "{l}: released: {m}");
            assert_eq!(directory_users(a, &username).await.len(), 1, "{l}");
        }
        (Some(sid), _) => {
            a.get(&format!("/api/subscriptions/domain-model/{sid}"), &a.admin_token)
                .await
                .expect_problem(404, "not_found");
            assert!(
                directory_users(a, &username).await.is_empty(),
                "{l}: the directory user the create made is removed"
            );
        }
        (None, _) => assert!(directory_users(a, &username).await.is_empty(), "{l}"),
    }
}

/// Queues `n` creates on a node without a worker, starts a worker node, and pauses the engine
/// as soon as the worker has claimed work; returns (worker, group, pids) once PAUSED.
async fn pause_mid_run(a: &Server, p: &Products, prefix: &str, n: usize) -> (Server, String, Vec<String>) {
    let l = a.label;
    let w = worker(a).await;
    let gid = create_group(a, p, &format!("{prefix} Group")).await;
    drop(w);
    let mut pids = Vec::new();
    for i in 0..n {
        pids.push(
            start_ok(
                a,
                "create_user",
                json!([{"product": p.internal}, {"username": format!("{prefix}{i:02}"), "user_group_ids": [gid]}]),
            )
            .await,
        );
    }
    let w = worker_from_now(a, &[KEY]).await;
    until_mid_run(a, "create_user", MID_STEPS).await;
    // Paused through the worker's node: on SQLite that node's single writer orders the switch
    // with the steps (see the module notes).
    set_lock(&w, true).await;
    // PAUSED: every worker has finished its step and let go.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = a.get("/api/settings/status", &a.admin_token).await.expect(200).body;
        if st["global_status"] == "PAUSED" {
            break;
        }
        assert_eq!(st["global_status"], "PAUSING", "{l}: {st}");
        assert!(Instant::now() < deadline, "{l}: never paused: {st}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (w, gid, pids)
}

/// The engine paused while a worker runs a batch: processes stop at a step boundary and no step
/// runs while paused; a stopped one can be aborted, undoing what it made; on resume the others
/// complete, each step logged once.
#[tokio::test]
async fn pausing_mid_run_stops_at_step_boundaries() {
    const N: usize = 32;
    for a in Server::all(&[KEY, NO_WORKER]).await {
        let l = a.label;
        let p = products(&a).await;
        let (w, _, pids) = pause_mid_run(&a, &p, "mid", N).await;
        let mut snapshot = Vec::new();
        for pid in &pids {
            snapshot.push(process(&a, pid).await);
        }
        let unfinished: Vec<String> = snapshot
            .iter()
            .filter(|p| p["last_status"] != "completed")
            .map(|p| format!("{}@{}", p["last_status"], p["last_step"]))
            .collect();
        eprintln!(
            "{l}: paused with {} of {N} unfinished: {unfinished:?}",
            unfinished.len()
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        for (pid, before) in pids.iter().zip(&snapshot) {
            let now = process(&a, pid).await;
            assert_eq!(step_names(&now), step_names(before), "{l}: no step runs while paused");
            assert_eq!(now["last_status"], before["last_status"], "{l}");
        }
        let st = a.get("/api/settings/status", &a.admin_token).await.expect(200).body;
        assert_eq!(st["running_processes"], 0, "{l}: {st}");

        // A process stopped between steps can be aborted (while paused: the worker's node runs
        // no step, so the API node may write); its compensation undoes what it made.
        let mut aborted = BTreeSet::new();
        for proc in snapshot.iter().filter(|p| p["last_status"] == "running").step_by(2) {
            abort_and_check_compensation(&a, proc).await;
            aborted.insert(str_of(proc, "process_id").to_owned());
        }

        set_lock(&a, false).await;
        let mut user_ids = BTreeSet::new();
        for pid in &pids {
            let proc = settle(&a, pid).await;
            if aborted.contains(pid) {
                assert_status(&a, &proc, "aborted");
                continue;
            }
            assert_status(&a, &proc, "completed");
            assert_ran_steps(&a, &proc, CREATE_USER_STEPS).await;
            let m = model(&a, &subscription_of(&proc)).await;
            user_ids.insert(m["user"]["user_id"].as_i64().expect("user_id"));
        }
        assert_eq!(user_ids.len(), N - aborted.len(), "{l}");
        drop(w);
    }
}

/// docs/workflows.md: "A process whose step is running (live lease) cannot be aborted until the
/// step ends": one left `running` by a dead worker (lease expired) can be, and its compensation
/// runs. (Found refused with 409 "the process is running; it cannot be aborted": `Engine::abort`
/// checked the transition table, where `running` is no source of `aborted`, before its own
/// dead-worker case; fixed in ce0badf.)
#[tokio::test]
async fn a_process_left_running_by_a_dead_worker_can_be_aborted_and_compensated() {
    const N: usize = 32;
    for a in Server::all(&[KEY, NO_WORKER]).await {
        let l = a.label;
        let p = products(&a).await;
        let w = worker(&a).await;
        let gid = create_group(&a, &p, "Dead Group").await;
        drop(w);
        let mut pids = Vec::new();
        for i in 0..N {
            pids.push(
                start_ok(
                    &a,
                    "create_user",
                    json!([{"product": p.internal}, {"username": format!("dead{i:02}"), "user_group_ids": [gid]}]),
                )
                .await,
            );
        }
        // A worker with one-second leases claims the queue and dies part-way.
        let mut doomed = worker_from_now(&a, &[KEY, ("MUSTER_LEASE_SECS", "1")]).await;
        until_mid_run(&a, "create_user", MID_STEPS).await;
        doomed.kill().await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut stopped = Vec::new();
        for pid in &pids {
            let proc = process(&a, pid).await;
            if proc["last_status"] == "running" {
                stopped.push(proc);
            }
        }
        assert!(!stopped.is_empty(), "{l}: the dead worker left processes running");
        for proc in &stopped {
            abort_and_check_compensation(&a, proc).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Modify forms and modify_user_group
// ---------------------------------------------------------------------------------------------

/// Modify forms are pre-filled from the subscription, read-only fields must keep their value,
/// and a renamed group shows through its users' domain models.
#[tokio::test]
async fn modify_forms_are_prefilled_and_a_renamed_group_shows_through_its_users() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let p = products(&s).await;
        let gid = create_group(&s, &p, "Before Rename").await;
        let proc = run_ok(
            &s,
            "create_user",
            json!([{"product": p.internal}, {"username": "member", "age": 33, "user_group_ids": [gid]}]),
        )
        .await;
        let sid = subscription_of(&proc);
        let user_id = model(&s, &sid).await["user"]["user_id"].clone();
        let user_tag = etag(&s, &sid).await;
        assert_eq!(
            model_if_none_match(&s, &sid, &user_tag).await.status.as_u16(),
            304,
            "{l}: unchanged"
        );

        // modify_user: page 2 shows the current values.
        let r = start(&s, "modify_user", json!([{"subscription_id": sid}]))
            .await
            .expect(510);
        assert_eq!(r.body["meta"], json!({"hasNext": false}), "{l}");
        let props = &r.body["form"]["properties"];
        assert_eq!(props["username"]["default"], "member", "{l}: {props}");
        assert_eq!(props["age"]["default"], 33, "{l}");
        assert_eq!(props["user_group_ids"]["default"], json!([gid]), "{l}");
        assert_eq!(props["user_id"]["const"], user_id, "{l}");
        assert_eq!(props["user_id"]["extraProperties"]["disabled"], true, "{l}");
        // A read-only field must keep its value.
        let r = start(
            &s,
            "modify_user",
            json!([{"subscription_id": sid}, {"username": "member", "user_id": 1}]),
        )
        .await;
        let errors = validation_errors(&s, &r);
        assert_eq!(error_at(&s, &errors, "user_id")["type"], "literal_error", "{l}");
        // Omitted fields keep their values.
        run_ok(
            &s,
            "modify_user",
            json!([{"subscription_id": sid}, {"username": "member"}]),
        )
        .await;
        let m = model(&s, &sid).await;
        assert_eq!(m["user"]["age"], 33, "{l}: {m}");
        assert_eq!(m["depends_on_ids"], json!([gid]), "{l}");
        assert_eq!(m["user"]["user_id"], user_id, "{l}: user_id never changes");

        // modify_user_group: group_id is read-only; the rename is seen from the user.
        let g = model(&s, &gid).await;
        let r = start(&s, "modify_user_group", json!([{"subscription_id": gid}]))
            .await
            .expect(510);
        let props = &r.body["form"]["properties"];
        assert_eq!(props["group_name"]["default"], "Before Rename", "{l}: {props}");
        assert_eq!(props["group_id"]["const"], g["user_group"]["group_id"], "{l}");
        let proc = run_ok(
            &s,
            "modify_user_group",
            json!([{"subscription_id": gid}, {"group_name": "After Rename"}]),
        )
        .await;
        assert_ran_steps(
            &s,
            &proc,
            &[
                "init",
                "store_process_subscription",
                "unsync",
                "modify_user_group_subscription",
                "resync",
                "done",
            ],
        )
        .await;
        let g2 = model(&s, &gid).await;
        assert_eq!(g2["description"], "User Group After Rename", "{l}");
        assert_eq!(g2["user_group"]["group_id"], g["user_group"]["group_id"], "{l}");
        assert!(
            g2["version"].as_i64() > g["version"].as_i64(),
            "{l}: the version moves on"
        );
        assert_eq!(
            model(&s, &sid).await["user"]["group"]["group_name"],
            "After Rename",
            "{l}: the user's group block is the group's"
        );
        // The user's own version did not move, but its model did: its ETag follows the model.
        let r = model_if_none_match(&s, &sid, &user_tag).await.expect(200);
        assert_eq!(r.body["user"]["group"]["group_name"], "After Rename", "{l}");
        let renamed_tag = etag(&s, &sid).await;
        assert_ne!(renamed_tag, user_tag, "{l}");
        let r = model_if_none_match(&s, &sid, &format!("\"stale\", W/{renamed_tag}")).await;
        assert_eq!(r.status.as_u16(), 304, "{l}: any tag of the list, weakly compared");
        assert!(
            r.body.is_null() || r.body == json!(""),
            "{l}: 304 has no body: {}",
            r.body
        );
        run_ok(&s, "validate_user_group", json!([{"subscription_id": gid}])).await;
        run_ok(&s, "validate_user", json!([{"subscription_id": sid}])).await;
    }
}

// ---------------------------------------------------------------------------------------------
// More bugs found by this suite, fixed since
// ---------------------------------------------------------------------------------------------

/// The subscription store keeps usernames UNIQUE across all User subscriptions, terminated ones
/// included. Once the (locked) directory user of a terminated User is deleted, create_user must
/// either refuse that username in its form or be able to use it. (Found accepted by the form,
/// which checked the directory only, and then failing in `initialize_subscription` with
/// "username is already taken by another subscription"; fixed in ce0badf.)
#[tokio::test]
async fn create_user_form_refuses_a_username_a_subscription_holds() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let p = products(&s).await;
        let gid = create_group(&s, &p, "Reuse Group").await;
        let sid = create_user(&s, &p, &gid, "ghost").await;
        run_ok(&s, "terminate_user", json!([{"subscription_id": sid}, {}])).await;
        let du = directory_users(&s, "ghost").await;
        s.delete(&format!("/api/users/{}", str_of(&du[0], "user_id")), &s.admin_token)
            .await
            .expect(204);

        let r = start(
            &s,
            "create_user",
            json!([{"product": p.internal}, {"username": "ghost", "user_group_ids": [gid]}]),
        )
        .await;
        if r.status.as_u16() == 400 {
            let errors = validation_errors(&s, &r);
            error_at(&s, &errors, "username");
        } else {
            assert_eq!(r.status.as_u16(), 201, "{l}: {}", r.body);
            let proc = settle(&s, str_of(&r.body, "id")).await;
            assert_eq!(
                proc["last_status"], "completed",
                "{l}: the form accepted the name, so the workflow must be able to use it: failed at {} with {}",
                proc["last_step"], proc["failed_reason"]
            );
        }
    }
}

/// `DELETE /api/subscriptions/{id}` removes `initial` and `terminated` subscriptions once nothing
/// uses or holds them, and says why otherwise; the processes keep their history, and a deleted
/// user's username can be given out again.
#[tokio::test]
async fn initial_and_terminated_subscriptions_are_deleted_once_nothing_uses_or_holds_them() {
    for a in Server::all(&[KEY, NO_WORKER]).await {
        let l = a.label;
        let p = products(&a).await;
        let w = worker(&a).await;
        let gid = create_group(&a, &p, "Deleted Group").await;
        let made = run_ok(
            &a,
            "create_user",
            json!([{"product": p.internal}, {"username": "reuser", "user_group_ids": [gid]}]),
        )
        .await;
        let made_pid = str_of(&made, "process_id").to_owned();
        let uid = subscription_of(&made);
        let del = |sid: &str| format!("/api/subscriptions/{sid}");
        let refused = |r: Resp, reason: &str| {
            let r = r.expect_problem(409, "workflow_blocked");
            let detail = str_of(&r.body, "detail");
            assert!(detail.contains(reason), "{l}: wanted {reason}: {detail}");
        };

        // Live subscriptions are terminated, not deleted.
        refused(
            a.delete(&del(&uid), &a.admin_token).await,
            "subscription.delete_invalid_status",
        );
        refused(
            a.delete(&del(&gid), &a.admin_token).await,
            "subscription.delete_invalid_status",
        );
        assert_eq!(
            model(&a, &uid).await["status"],
            "active",
            "{l}: a refusal changes nothing"
        );
        a.delete(&del(&Uuid::new_v4().to_string()), &a.admin_token)
            .await
            .expect_problem(404, "not_found");

        // A terminated group that a (terminated) user still depends on waits for that user.
        run_ok(&a, "terminate_user", json!([{"subscription_id": uid}, {}])).await;
        terminate_group(&a, &gid).await;
        refused(
            a.delete(&del(&gid), &a.admin_token).await,
            "subscription.delete_in_use_by_others",
        );
        assert_eq!(model(&a, &gid).await["status"], "terminated", "{l}");

        // The user goes, then the group; the process that made the user keeps its history.
        a.delete(&del(&uid), &a.admin_token).await.expect(204);
        a.get(&format!("/api/subscriptions/domain-model/{uid}"), &a.admin_token)
            .await
            .expect_problem(404, "not_found");
        let history = process(&a, &made_pid).await;
        assert_status(&a, &history, "completed");
        assert_eq!(step_names(&history), step_names(&made), "{l}: the step log stays");
        assert_eq!(history["subscriptions"], json!([]), "{l}: {history}");
        a.delete(&del(&gid), &a.admin_token).await.expect(204);
        a.delete(&del(&gid), &a.admin_token)
            .await
            .expect_problem(404, "not_found");
        assert_eq!(count_subscriptions(&a, "User").await, 0, "{l}");
        assert_eq!(count_subscriptions(&a, "UserGroup").await, 0, "{l}");
        let events = events_until(&a, "subscriptions", |evs| {
            evs.iter().filter(|e| e["kind"] == "subscription.deleted").count() == 2
        })
        .await;
        let deleted: Vec<&str> = events
            .iter()
            .filter(|e| e["kind"] == "subscription.deleted")
            .map(|e| str_of(e, "subject"))
            .collect();
        assert_eq!(deleted, vec![uid.as_str(), gid.as_str()], "{l}");
        let audit = a
            .get("/api/audit?action=subscription.delete", &a.admin_token)
            .await
            .expect(200)
            .body;
        let outcomes: Vec<(String, String)> = audit["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|e| {
                (
                    str_of(e, "outcome").to_owned(),
                    e["reason"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        assert_eq!(
            outcomes.iter().filter(|(o, _)| o == "success").count(),
            2,
            "{l}: {audit}"
        );
        assert!(
            outcomes.contains(&("failure".into(), "subscription.delete_in_use_by_others".into())),
            "{l}: refusals are audited: {audit}"
        );

        // With its directory account gone too, the username can be given out again.
        let du = directory_users(&a, "reuser").await;
        a.delete(&format!("/api/users/{}", str_of(&du[0], "user_id")), &a.admin_token)
            .await
            .expect(204);
        let gid = create_group(&a, &p, "Second Group").await;
        create_user(&a, &p, &gid, "reuser").await;

        // An initial subscription held by a failed create waits for that process; aborting it
        // cleans up (there is then nothing left to delete).
        drop(w);
        let doomed = start_ok(
            &a,
            "create_user",
            json!([{"product": p.internal}, {"username": "squatted", "user_group_ids": [gid]}]),
        )
        .await;
        a.create_user(json!({"username": "squatted"})).await;
        let w = worker(&a).await;
        let proc = settle(&a, &doomed).await;
        assert_status(&a, &proc, "failed");
        drop(w);
        let sid = subscription_of(&proc);
        assert_eq!(model(&a, &sid).await["status"], "initial", "{l}");
        refused(
            a.delete(&del(&sid), &a.admin_token).await,
            "subscription.delete_held_by_process",
        );
        a.put(&format!("/api/processes/{doomed}/abort"), &a.admin_token, json!({}))
            .await
            .expect(204);
        a.delete(&del(&sid), &a.admin_token)
            .await
            .expect_problem(404, "not_found");
    }
}

// ---------------------------------------------------------------------------------------------
// Access
// ---------------------------------------------------------------------------------------------

/// Processes, subscriptions and the engine switch are for super-users; the catalogue is for
/// anyone signed in; callbacks carry their credential in the path.
#[tokio::test]
async fn workflow_endpoints_are_for_super_users() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let p = products(&s).await;
        let gid = create_group(&s, &p, "Access Group").await;
        let proc = run_ok(
            &s,
            "create_user",
            json!([{"product": p.internal}, {"username": "access-user", "user_group_ids": [gid]}]),
        )
        .await;
        let pid = str_of(&proc, "process_id").to_owned();
        let sid = subscription_of(&proc);
        let (_, regular) = s.user_with_session("access-regular", PASSWORD).await;

        let guarded: Vec<(Method, String, Option<Value>)> = vec![
            (Method::GET, "/api/processes".into(), None),
            (Method::GET, format!("/api/processes/{pid}"), None),
            (Method::GET, "/api/processes/status-counts".into(), None),
            (Method::POST, "/api/processes/create_user".into(), Some(json!([]))),
            (Method::PUT, format!("/api/processes/{pid}/resume"), Some(json!([]))),
            (Method::PUT, format!("/api/processes/{pid}/abort"), None),
            (Method::GET, "/api/settings/status".into(), None),
            (
                Method::PUT,
                "/api/settings/status".into(),
                Some(json!({"global_lock": true})),
            ),
            (Method::GET, "/api/subscriptions".into(), None),
            (Method::GET, format!("/api/subscriptions/domain-model/{sid}"), None),
            (Method::GET, format!("/api/subscriptions/workflows/{sid}"), None),
            (Method::PUT, format!("/api/subscriptions/{sid}/set_in_sync"), None),
            (Method::DELETE, format!("/api/subscriptions/{sid}"), None),
            (Method::GET, "/api/events?stream=processes".into(), None),
            (Method::GET, "/api/events?stream=subscriptions".into(), None),
        ];
        for (method, path, body) in &guarded {
            s.call(method.clone(), path, Some(&regular), body.clone())
                .await
                .expect_problem(403, "E005005");
            s.call(method.clone(), path, None, body.clone())
                .await
                .expect_problem(401, "E007001");
        }
        // Nothing happened: the engine runs, the process is as it was.
        let st = s.get("/api/settings/status", &s.admin_token).await.expect(200).body;
        assert_eq!(st["global_lock"], false, "{l}");
        assert_status(&s, &process(&s, &pid).await, "completed");

        // The catalogue is readable by anyone signed in (not anonymously).
        for path in [
            "/api/products",
            "/api/product_blocks",
            "/api/workflows",
            "/api/workflows/create_user",
        ] {
            s.get(path, &regular).await.expect(200);
            s.call(Method::GET, path, None, None)
                .await
                .expect_problem(401, "E007001");
        }

        // A callback with a wrong token, or for a process that awaits none, is simply unknown.
        s.call(
            Method::POST,
            &format!("/api/processes/{pid}/callback/{}", "0".repeat(64)),
            None,
            Some(json!({"done": true})),
        )
        .await
        .expect_problem(404, "not_found");
        s.call(
            Method::POST,
            &format!("/api/processes/{}/callback/token", Uuid::new_v4()),
            None,
            Some(json!({})),
        )
        .await
        .expect_problem(404, "not_found");
    }
}

// ---------------------------------------------------------------------------------------------
// Load: tasks and workflows together
// ---------------------------------------------------------------------------------------------

/// The validate task (which starts other processes from inside its step) runs while a batch of
/// creates and modifies holds every worker slot and the small connection pool: everything
/// completes, nothing waits for a connection it cannot get.
#[tokio::test]
async fn the_validate_task_runs_alongside_a_batch_of_workflows() {
    const N: usize = 12;
    for s in Server::all(&[]).await {
        let l = s.label;
        let p = products(&s).await;
        let gid = create_group(&s, &p, "Load Group").await;
        let mut sids = Vec::new();
        for i in 0..4 {
            sids.push(create_user(&s, &p, &gid, &format!("load-base{i}")).await);
        }
        let mut set = tokio::task::JoinSet::new();
        let spawn = |set: &mut tokio::task::JoinSet<(u16, Value)>, workflow: &str, body: Value| {
            let req = s
                .request(Method::POST, &format!("/api/processes/{workflow}"))
                .bearer_auth(&s.admin_token)
                .json(&body);
            set.spawn(async move {
                let r = req.send().await.expect("request");
                let status = r.status().as_u16();
                let bytes = r.bytes().await.expect("body");
                (status, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null))
            });
        };
        spawn(&mut set, "task_validate_subscriptions", json!([]));
        for i in 0..N {
            spawn(
                &mut set,
                "create_user",
                json!([{"product": p.internal}, {"username": format!("load{i:02}"), "user_group_ids": [gid]}]),
            );
        }
        spawn(&mut set, "task_validate_subscriptions", json!([]));
        let mut pids = Vec::new();
        while let Some(done) = set.join_next().await {
            let (status, body) = done.expect("task");
            assert_eq!(status, 201, "{l}: {body}");
            pids.push(str_of(&body, "id").to_owned());
        }
        let started = Instant::now();
        for pid in &pids {
            let proc = settle(&s, pid).await;
            assert_status(&s, &proc, "completed");
        }
        // And the validations the tasks started (some may have been skipped: a subscription
        // held by the other task's validation).
        let (validations, _) = list(
            &s,
            "/api/processes?filter=workflow_name,validate_user|validate_user_group&range=0,100",
        )
        .await;
        assert!(!validations.is_empty(), "{l}");
        for v in &validations {
            let proc = settle(&s, str_of(v, "process_id")).await;
            assert_status(&s, &proc, "completed");
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{l}: took {:?}",
            started.elapsed()
        );
        for sid in &sids {
            let m = model(&s, sid).await;
            assert_eq!(m["insync"], true, "{l}: {m}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A paused engine and its queue
// ---------------------------------------------------------------------------------------------

/// How often `engine_settings` has been read (each claim attempt reads it), from PostgreSQL's
/// statistics.
async fn engine_settings_reads(pool: &sqlx::PgPool) -> i64 {
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(pool)
        .await
        .expect("clear stats snapshot");
    sqlx::query_scalar(
        "SELECT (COALESCE(seq_scan, 0) + COALESCE(idx_scan, 0))::BIGINT FROM pg_stat_user_tables \
         WHERE relname = 'engine_settings' AND schemaname = current_schema()",
    )
    .fetch_one(pool)
    .await
    .expect("engine_settings statistics")
}

/// docs/operations.md: a worker sleeps up to its poll interval (1 s) between looks at the queue,
/// also while the engine is paused with work queued. (Found polling every 20 ms then —
/// `worker::next_sleep` saw a due process and did not know the claim came back empty because of
/// the pause: ~50 claim UPDATEs a second per worker node for as long as the pause lasted; fixed
/// in 7f7226d.) PostgreSQL only: it counts the reads of `engine_settings` in
/// `pg_stat_user_tables`.
#[tokio::test]
async fn a_paused_worker_does_not_poll_its_queue_continuously() {
    let Some(db) = muster_store::testing::TestDb::postgres().await else {
        eprintln!("MUSTER_TEST_DATABASE_URL is not set: this test reads PostgreSQL's statistics");
        return;
    };
    let a = Server::start(db, &[KEY, NO_WORKER]).await;
    let p = products(&a).await;
    let w = worker(&a).await;
    let gid = create_group(&a, &p, "Idle Group").await;
    drop(w);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&a.db_url)
        .await
        .expect("connect");

    // Baseline: a worker with nothing to do looks about once a second.
    let w = worker(&a).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = engine_settings_reads(&pool).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = engine_settings_reads(&pool).await - before;
    drop(w);

    // Paused with one create queued.
    start_ok(
        &a,
        "create_user",
        json!([{"product": p.internal}, {"username": "idle", "user_group_ids": [gid]}]),
    )
    .await;
    set_lock(&a, true).await;
    let w = worker(&a).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = engine_settings_reads(&pool).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let paused = engine_settings_reads(&pool).await - before;
    eprintln!("engine_settings reads in 3 s: idle {idle}, paused with work queued {paused}");
    assert!(
        paused <= idle.max(3) * 3,
        "a paused worker looked at its queue {paused} times in 3 s (idle: {idle})"
    );
    set_lock(&a, false).await;
    drop(w);
}

/// The workflows write directory users, so they follow the directory's username rules:
/// invisible characters and look-alikes are form errors, and full-width input is stored in its
/// ordinary form by the directory and the subscription alike.
#[tokio::test]
async fn user_workflows_follow_the_username_rules() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let p = products(&s).await;
        let gid = create_group(&s, &p, "Names Group").await;
        for (name, says) in [
            ("admin\u{200b}", "not allowed"),
            ("\u{430}dmin", "looks like"),
            ("ADMIN", "looks like"),
        ] {
            let r = start(
                &s,
                "create_user",
                json!([{"product": p.internal}, {"username": name, "user_group_ids": [gid]}]),
            )
            .await;
            let errors = validation_errors(&s, &r);
            let e = error_at(&s, &errors, "username");
            assert!(str_of(e, "msg").contains(says), "{l}: {name:?}: {e}");
        }
        let sid = create_user(&s, &p, &gid, "\u{ff57}\u{ff49}\u{ff44}\u{ff45}").await;
        let m = model(&s, &sid).await;
        assert_eq!(m["user"]["username"], json!("wide"), "{l}: the subscription: {m}");
        let found = s.get("/api/users?username=WIDE", &s.admin_token).await.expect(200);
        assert_eq!(found.body["result"][0]["username"], json!("wide"), "{l}: the directory");

        for (name, says) in [("w\u{200b}ide", "not allowed"), ("\u{430}dmin", "looks like")] {
            let r = start(&s, "modify_user", json!([{"subscription_id": sid}, {"username": name}])).await;
            let errors = validation_errors(&s, &r);
            let e = error_at(&s, &errors, "username");
            assert!(str_of(e, "msg").contains(says), "{l}: {name:?}: {e}");
        }
        // One's own name in other case or width is no clash.
        run_ok(
            &s,
            "modify_user",
            json!([{"subscription_id": sid}, {"username": "\u{ff37}ide"}]),
        )
        .await;
        assert_eq!(model(&s, &sid).await["user"]["username"], json!("Wide"), "{l}");
    }
}
