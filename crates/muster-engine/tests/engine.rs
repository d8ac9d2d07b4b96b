//! The engine's durability and step semantics, against a real database: SQLite always,
//! PostgreSQL too when `MUSTER_TEST_DATABASE_URL` is set.
//!
//! Every test drives the real [`Engine`], the real [`Store`] and the real worker loop
//! ([`worker::run`]) with small workflows defined here. Their steps record each execution in
//! the engine's dependencies ([`Deps`]), so a test can tell a step that ran from a step that
//! committed.

use muster_core::audit::RequestCtx;
use muster_core::clock;
use muster_core::error::ErrorKind;
use muster_core::workflow::form::{Field, FormRun, FormStop, Page};
use muster_core::workflow::product::{Block, UserGroupBlock};
use muster_core::workflow::{ProcessStatus, StepStatus, SubscriptionStatus, Target};
use muster_engine::{
    Engine, EngineConfig, FormFuture, StartError, State, Step, StepCtx, StepError, StepFuture, StepOutcome, Workflow,
    scheduler, worker,
};
use muster_store::testing::TestDb;
use muster_store::{Fence, ProcessRow, ProcessUpdate, StepLog, StepRow, Store, StoreOptions, StoreTx, Subscription};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Dependencies: what the test workflows' steps record and obey.
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Deps {
    /// Every step execution, committed or not: (step label, process).
    runs: Mutex<Vec<(&'static str, Uuid)>>,
    /// Labels of the steps that fail (with an error) while listed.
    failing: Mutex<HashSet<&'static str>>,
    /// How many more times the retry step fails.
    flaky_failures: AtomicUsize,
    /// Callback routes handed to callback actions, by process.
    routes: Mutex<HashMap<Uuid, String>>,
    /// Numbers the allocating step got, in order (committed or not).
    allocated: Mutex<Vec<i64>>,
    /// Processes whose compensation ran.
    compensated: Mutex<Vec<Uuid>>,
    /// Makes the compensation fail (after it wrote).
    compensation_fails: AtomicBool,
    /// The engine itself, for a step that calls back into it.
    engine: std::sync::OnceLock<Engine<Deps>>,
    /// What the engine answered callbacks made from inside a callback action.
    early_answers: Mutex<Vec<String>>,
}

impl Deps {
    fn ran(&self, label: &'static str, pid: Uuid) {
        self.runs.lock().expect("runs lock").push((label, pid));
    }

    fn count(&self, label: &str) -> usize {
        self.runs
            .lock()
            .expect("runs lock")
            .iter()
            .filter(|(l, _)| *l == label)
            .count()
    }

    fn count_for(&self, label: &str, pid: Uuid) -> usize {
        self.runs
            .lock()
            .expect("runs lock")
            .iter()
            .filter(|(l, p)| *l == label && *p == pid)
            .count()
    }

    fn fails(&self, label: &str) -> bool {
        self.failing.lock().expect("failing lock").contains(label)
    }

    fn set_failing(&self, label: &'static str, on: bool) {
        let mut f = self.failing.lock().expect("failing lock");
        if on {
            f.insert(label);
        } else {
            f.remove(label);
        }
    }

    fn route(&self, pid: Uuid) -> Option<String> {
        self.routes.lock().expect("routes lock").get(&pid).cloned()
    }
}

// ---------------------------------------------------------------------------------------------
// Steps
// ---------------------------------------------------------------------------------------------

macro_rules! step {
    ($name:ident, |$ctx:ident| $body:block) => {
        fn $name($ctx: &mut StepCtx<Deps>) -> StepFuture<'_> {
            Box::pin(async move { $body })
        }
    };
}

/// A step that records its execution, fails while its label is listed as failing, and
/// otherwise merges `ran_<label>: true`.
macro_rules! counting_step {
    ($name:ident, $label:literal) => {
        step!($name, |ctx| {
            ctx.deps.ran($label, ctx.process_id);
            if ctx.deps.fails($label) {
                return Err(StepError::new(concat!($label, " failed on purpose")));
            }
            Ok(StepOutcome::merge([(concat!("ran_", $label), json!(true))]))
        });
    };
}

counting_step!(step_a, "a");
counting_step!(step_b, "b");
counting_step!(step_c, "c");
counting_step!(step_first, "first");
counting_step!(step_inserted, "inserted");
counting_step!(step_last, "last");
counting_step!(step_maybe, "maybe");

/// The User Group product (seeded by migration, fixed id).
const USER_GROUP_PRODUCT: &str = "31892964-6ad1-52eb-8c09-77fba68b51b6";

/// An `initial` UserGroup subscription whose id is the process id.
fn subscription_of(pid: Uuid, now: time::OffsetDateTime) -> Subscription {
    Subscription {
        subscription_id: pid,
        description: format!("made by process {pid}"),
        status: SubscriptionStatus::Initial,
        product_id: USER_GROUP_PRODUCT.parse().expect("product uuid"),
        customer_id: "engine-tests".into(),
        insync: false,
        start_date: None,
        end_date: None,
        note: None,
        locked_by_process: Some(pid),
        version: 1,
        created_at: now,
        updated_at: now,
        block: Block::UserGroup(UserGroupBlock {
            subscription_instance_id: Uuid::new_v4(),
            group_name: Some(format!("group-{pid}")),
            group_id: None,
            offerings: vec![],
        }),
    }
}

// Writes in its transaction (an allocated number and a subscription), then fails while
// "allocate" is listed as failing.
step!(step_allocate, |ctx| {
    let (pid, now, deps) = (ctx.process_id, ctx.now(), ctx.deps.clone());
    deps.ran("allocate", pid);
    let tx = ctx.tx().await?;
    let id = tx.allocate("user_id").await?;
    tx.insert_subscription(&subscription_of(pid, now)).await?;
    deps.allocated.lock().expect("allocated lock").push(id);
    if deps.fails("allocate") {
        return Err(StepError::new("allocate failed on purpose").with_details(json!({ "allocated": id })));
    }
    Ok(StepOutcome::merge([("user_id", json!(id))]))
});

// Inserts the process's subscription (for compensation to remove).
step!(step_make, |ctx| {
    let (pid, now, deps) = (ctx.process_id, ctx.now(), ctx.deps.clone());
    deps.ran("make", pid);
    ctx.tx().await?.insert_subscription(&subscription_of(pid, now)).await?;
    Ok(StepOutcome::merge([("subscription_id", json!(pid))]))
});

step!(step_flaky, |ctx| {
    ctx.deps.ran("flaky", ctx.process_id);
    let failed = ctx
        .deps
        .flaky_failures
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failed {
        return Err(StepError::new("flaky is not ready yet"));
    }
    Ok(StepOutcome::merge([("flaky_done", json!(true))]))
});

step!(step_call_out, |ctx| {
    ctx.deps.ran("call_out", ctx.process_id);
    let route = ctx
        .callback_route
        .clone()
        .ok_or_else(|| StepError::new("a callback action must get its route"))?;
    ctx.deps
        .routes
        .lock()
        .expect("routes lock")
        .insert(ctx.process_id, route);
    Ok(StepOutcome::merge([("called", json!(true))]))
});

// A callback action whose outside system answers at once, before the action has returned.
step!(step_call_back_at_once, |ctx| {
    let pid = ctx.process_id;
    ctx.deps.ran("call_back_at_once", pid);
    let route = ctx
        .callback_route
        .clone()
        .ok_or_else(|| StepError::new("a callback action must get its route"))?;
    let token = route.rsplit('/').next().unwrap_or_default().to_owned();
    let engine = ctx
        .deps
        .engine
        .get()
        .cloned()
        .ok_or_else(|| StepError::new("no engine"))?;
    let answer = engine
        .callback(&RequestCtx::default(), pid, &token, json!({"early": true}))
        .await;
    ctx.deps.early_answers.lock().expect("lock").push(format!("{answer:?}"));
    Ok(StepOutcome::merge([("called", json!(true))]))
});

step!(step_echo, |ctx| {
    ctx.deps.ran("echo", ctx.process_id);
    let answer = ctx.str("answer")?.to_owned();
    Ok(StepOutcome::merge([("echo", json!(answer))]))
});

step!(step_slow, |ctx| {
    ctx.deps.ran("slow", ctx.process_id);
    tokio::time::sleep(Duration::from_millis(700)).await;
    Ok(StepOutcome::merge([("slow_done", json!(true))]))
});

step!(step_after_slow, |ctx| {
    ctx.deps.ran("after_slow", ctx.process_id);
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(StepOutcome::merge([("after_slow_done", json!(true))]))
});

step!(step_panics, |ctx| {
    ctx.deps.ran("panics", ctx.process_id);
    if !ctx.process_id.is_nil() {
        panic!("a step panicked on purpose");
    }
    Ok(StepOutcome::nothing())
});

// Counts in the database inside the step's transaction (a row per process, keyed by the
// process id, and a number from the `user_id` allocator) and in memory.
step!(step_count, |ctx| {
    let (pid, now, deps) = (ctx.process_id, ctx.now(), ctx.deps.clone());
    deps.ran("count", pid);
    let tx = ctx.tx().await?;
    tx.insert_subscription(&subscription_of(pid, now)).await?;
    let n = tx.allocate("user_id").await?;
    Ok(StepOutcome::merge([("n", json!(n))]))
});

fn answer_form<'a>(_: &'a Deps, _: &'a State, run: &'a mut FormRun) -> FormFuture<'a> {
    Box::pin(async move {
        run.page(
            Page::new("Answer")
                .field(Field::text("answer").length(1, 20))
                .field(Field::integer("n").range(Some(0), Some(10)))
                .last(),
        )?;
        Ok(())
    })
}

fn flag_form<'a>(_: &'a Deps, _: &'a State, run: &'a mut FormRun) -> FormFuture<'a> {
    Box::pin(async move {
        run.page(Page::new("Flag").field(Field::boolean("flag")).last())?;
        Ok(())
    })
}

fn flag_set(state: &State) -> bool {
    state.get("flag") == Some(&Value::Bool(true))
}

/// Compensation as the shipped create workflows write it (`remove_unfinished`): removes the
/// subscription named by the state's `subscription_id`, if any.
fn undo_from_state<'a>(
    deps: &'a Deps,
    tx: &'a mut StoreTx,
    state: &'a State,
    pid: Uuid,
) -> Pin<Box<dyn Future<Output = Result<(), StepError>> + Send + 'a>> {
    Box::pin(async move {
        if let Some(sid) = state
            .get("subscription_id")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<Uuid>().ok())
        {
            tx.delete_unfinished_subscription(sid).await?;
        }
        deps.compensated.lock().expect("compensated lock").push(pid);
        Ok(())
    })
}

/// Compensation: removes the subscription the process made, in the abort's transaction; with
/// `compensation_fails`, fails after writing.
fn undo_make<'a>(
    deps: &'a Deps,
    tx: &'a mut StoreTx,
    _state: &'a State,
    pid: Uuid,
) -> Pin<Box<dyn Future<Output = Result<(), StepError>> + Send + 'a>> {
    Box::pin(async move {
        tx.delete_unfinished_subscription(pid).await?;
        if deps.compensation_fails.load(Ordering::SeqCst) {
            return Err(StepError::new("compensation failed on purpose"));
        }
        deps.compensated.lock().expect("compensated lock").push(pid);
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Workflows
// ---------------------------------------------------------------------------------------------

fn wf_atomic() -> Workflow<Deps> {
    Workflow::new("atomic", 1, Target::System, "writes, then fails")
        .then("a", step_a)
        .then("allocate", step_allocate)
        .then("c", step_c)
        .done()
}

fn wf_retrying() -> Workflow<Deps> {
    Workflow::new("retrying", 1, Target::System, "a retry step")
        .then("a", step_a)
        .step(Step::retry("flaky", step_flaky))
        .then("c", step_c)
        .done()
}

fn wf_asking() -> Workflow<Deps> {
    Workflow::new("asking", 1, Target::System, "an input step")
        .then("a", step_a)
        .step(Step::input("ask", answer_form))
        .then("echo", step_echo)
        .done()
}

fn wf_calling() -> Workflow<Deps> {
    Workflow::new("calling", 1, Target::System, "a callback step")
        .step(Step::callback("call", step_call_out, Duration::from_secs(600)))
        .then("c", step_c)
        .done()
}

fn wf_calling_briefly() -> Workflow<Deps> {
    Workflow::new("calling_briefly", 1, Target::System, "a callback step that times out")
        .step(Step::callback("call", step_call_out, Duration::from_millis(500)))
        .then("c", step_c)
        .done()
}

fn wf_calling_back_at_once() -> Workflow<Deps> {
    Workflow::new(
        "calling_back_at_once",
        1,
        Target::System,
        "the outside system answers at once",
    )
    .step(Step::callback("call", step_call_back_at_once, Duration::from_secs(600)))
    .then("c", step_c)
    .done()
}

fn wf_two_calls() -> Workflow<Deps> {
    Workflow::new(
        "two_calls",
        1,
        Target::System,
        "two callback steps, the first one short",
    )
    .step(Step::callback("call", step_call_out, Duration::from_millis(300)))
    .step(Step::callback("call_again", step_call_out, Duration::from_secs(600)))
    .done()
}

fn wf_conditional() -> Workflow<Deps> {
    Workflow::new("conditional", 1, Target::System, "a conditional step")
        .form(flag_form)
        .step(Step::new("maybe", step_maybe).when(flag_set))
        .then("c", step_c)
        .done()
}

fn wf_versioned_v1() -> Workflow<Deps> {
    Workflow::new("versioned", 1, Target::System, "v1")
        .then("first", step_first)
        .step(Step::input("ask", answer_form))
        .then("last", step_last)
        .done()
}

fn wf_versioned_v2() -> Workflow<Deps> {
    Workflow::new("versioned", 2, Target::System, "v2: a step before the input step")
        .then("first", step_first)
        .then("inserted", step_inserted)
        .step(Step::input("ask", answer_form))
        .then("last", step_last)
        .done()
}

fn wf_make_then_fail() -> Workflow<Deps> {
    Workflow::new(
        "make_then_fail",
        1,
        Target::Create,
        "a retry step, a subscription, a step that may fail",
    )
    .on_abort(undo_from_state)
    .step(Step::retry("flaky", step_flaky))
    .then("make", step_make)
    .then("b", step_b)
    .done()
}

fn wf_compensating() -> Workflow<Deps> {
    Workflow::new(
        "compensating",
        1,
        Target::Create,
        "makes a subscription; abort removes it",
    )
    .on_abort(undo_make)
    .then("make", step_make)
    .then("b", step_b)
    .step(Step::input("ask", answer_form))
    .done()
}

fn wf_slow() -> Workflow<Deps> {
    Workflow::new("slow", 1, Target::System, "a slow step between two")
        .then("a", step_a)
        .then("slow", step_slow)
        .then("c", step_c)
        .done()
}

fn wf_longer_than_lease() -> Workflow<Deps> {
    Workflow::new(
        "longer_than_lease",
        1,
        Target::System,
        "a step longer than the lease, then another",
    )
    .then("slow", step_slow)
    .then("after_slow", step_after_slow)
    .done()
}

fn wf_simple() -> Workflow<Deps> {
    Workflow::new("simple", 1, Target::System, "two steps")
        .then("a", step_a)
        .then("c", step_c)
        .done()
}

fn wf_panicking() -> Workflow<Deps> {
    Workflow::new("panicking", 1, Target::System, "a step that panics")
        .then("panics", step_panics)
        .done()
}

fn wf_counted() -> Workflow<Deps> {
    Workflow::new("counted", 1, Target::System, "counts in the database")
        .then("count", step_count)
        .done()
}

fn wf_tick_task() -> Workflow<Deps> {
    Workflow::new("tick_task", 1, Target::System, "a scheduled task")
        .task()
        .then("a", step_a)
        .done()
}

fn all_workflows() -> Vec<Workflow<Deps>> {
    vec![
        wf_atomic(),
        wf_retrying(),
        wf_asking(),
        wf_calling(),
        wf_calling_briefly(),
        wf_calling_back_at_once(),
        wf_two_calls(),
        wf_conditional(),
        wf_compensating(),
        wf_make_then_fail(),
        wf_slow(),
        wf_longer_than_lease(),
        wf_simple(),
        wf_panicking(),
        wf_counted(),
        wf_tick_task(),
    ]
}

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

const ACTOR: &str = "tester";

fn ctx() -> RequestCtx {
    RequestCtx {
        cid: format!("engine-test-{}", Uuid::new_v4()),
        ..Default::default()
    }
}

fn config(worker_name: &str) -> EngineConfig {
    EngineConfig {
        lease: Duration::from_secs(5),
        concurrency: 4,
        poll: Duration::from_millis(50),
        retry_base: Duration::from_millis(50),
        retry_max: Duration::from_secs(2),
        retry_max_attempts: 20,
        worker_name: worker_name.to_owned(),
    }
}

async fn open(db: &TestDb) -> Store {
    open_with(db, 8).await
}

async fn open_with(db: &TestDb, max_connections: u32) -> Store {
    let store = Store::connect(
        &db.url,
        &StoreOptions {
            max_connections,
            ..Default::default()
        },
    )
    .await
    .expect("connect to the test database");
    store.migrate().await.expect("migrate");
    store
}

fn engine(store: &Store, workflows: Vec<Workflow<Deps>>, cfg: EngineConfig) -> (Engine<Deps>, Arc<Deps>) {
    let deps = Arc::new(Deps::default());
    (Engine::new(store.clone(), deps.clone(), workflows, cfg), deps)
}

/// A running worker loop.
struct Worker {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

fn spawn_worker(engine: &Engine<Deps>) -> Worker {
    let (stop, rx) = watch::channel(false);
    let handle = tokio::spawn(worker::run(engine.clone(), rx));
    Worker { stop, handle }
}

impl Worker {
    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("the worker stops within 30 s")
            .expect("the worker task did not panic");
    }
}

async fn row(store: &Store, pid: Uuid) -> ProcessRow {
    store
        .process(pid)
        .await
        .expect("read the process")
        .expect("the process exists")
}

async fn steps(store: &Store, pid: Uuid) -> Vec<StepRow> {
    store.process_steps(pid).await.expect("read the step log")
}

/// (name, status) of every step-log row.
async fn log_of(store: &Store, pid: Uuid) -> Vec<(String, String)> {
    steps(store, pid)
        .await
        .into_iter()
        .map(|s| (s.name, s.status))
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}

/// Waits until the process is in one of `want`, at most `secs`.
async fn wait_status_for(store: &Store, pid: Uuid, want: &[ProcessStatus], secs: u64) -> ProcessRow {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = row(store, pid).await;
        if want.iter().any(|s| s.as_str() == r.last_status) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "process {pid} is {} after {secs} s (wanted {want:?}); failed_reason {:?}; log {:?}",
            r.last_status,
            r.failed_reason,
            log_of(store, pid).await
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_status(store: &Store, pid: Uuid, want: ProcessStatus) -> ProcessRow {
    wait_status_for(store, pid, &[want], 30).await
}

async fn start(engine: &Engine<Deps>, name: &str, inputs: Vec<Value>) -> Uuid {
    engine
        .start(&ctx(), ACTOR, name, inputs)
        .await
        .unwrap_or_else(|e| panic!("starting {name} failed: {e:?}"))
}

fn state_of(r: &ProcessRow) -> &serde_json::Map<String, Value> {
    r.state.0.as_object().expect("the state is an object")
}

fn millis(d: time::Duration) -> i128 {
    d.whole_milliseconds()
}

/// Runs raw SQL on the test database (setup and checks the store has no method for).
async fn sql_exec(db: &TestDb, sql: &str) {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    if db.url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(&db.url).await.expect("sqlite pool");
        sqlx::query(sql).execute(&pool).await.expect("sql");
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(&db.url).await.expect("postgres pool");
        sqlx::query(sql).execute(&pool).await.expect("sql");
        pool.close().await;
    }
}

async fn sql_i64(db: &TestDb, sql: &str) -> i64 {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    if db.url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(&db.url).await.expect("sqlite pool");
        let v: i64 = sqlx::query_scalar(sql).fetch_one(&pool).await.expect("sql");
        pool.close().await;
        v
    } else {
        let pool = sqlx::PgPool::connect(&db.url).await.expect("postgres pool");
        let v: i64 = sqlx::query_scalar(sql).fetch_one(&pool).await.expect("sql");
        pool.close().await;
        v
    }
}

/// Whether numbers come from a counter row (`id_allocators`: a rolled-back allocation is
/// reused) rather than a sequence (a rolled-back allocation leaves a gap).
async fn has_allocator_table(db: &TestDb) -> bool {
    let sql = if db.url.starts_with("sqlite:") {
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'id_allocators'"
    } else {
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() \
         AND table_name = 'id_allocators'"
    };
    sql_i64(db, sql).await > 0
}

// ---------------------------------------------------------------------------------------------
// 1. A step's writes, its log row and the process row commit together.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_leaves_no_writes_and_resume_reruns_only_it() {
    for db in TestDb::all().await {
        failed_step_rolls_back(&db).await;
    }
}

async fn failed_step_rolls_back(db: &TestDb) {
    let store = open(db).await;
    let (engine, deps) = engine(&store, all_workflows(), config("w-atomic"));
    let w = spawn_worker(&engine);
    deps.set_failing("allocate", true);

    let pid = start(&engine, "atomic", vec![]).await;
    let failed = wait_status(&store, pid, ProcessStatus::Failed).await;
    assert_eq!(
        failed.failed_reason.as_deref(),
        Some("allocate failed on purpose"),
        "{}",
        db.label
    );
    assert_eq!(failed.next_step.as_deref(), Some("allocate"), "{}", db.label);
    assert_eq!(failed.last_step.as_deref(), Some("allocate"), "{}", db.label);
    assert!(failed.lease_owner.is_none(), "a failed process holds no lease");
    assert!(failed.run_after.is_none(), "a failed process is not queued");
    assert_eq!(
        log_of(&store, pid).await,
        pairs(&[("init", "success"), ("a", "success"), ("allocate", "failed")]),
        "{}",
        db.label
    );
    let failed_row = steps(&store, pid).await.pop().expect("the failed row");
    assert_eq!(failed_row.state_delta.0["error"], "allocate failed on purpose");
    assert!(
        !state_of(&failed).contains_key("user_id"),
        "a failed step merges nothing"
    );

    // The failed step's writes were rolled back: its subscription is not there and (with a
    // counter-row allocator; a sequence leaves a gap instead) its number was not used up.
    assert!(store.subscription(pid).await.expect("read").is_none(), "{}", db.label);
    let counter_row = has_allocator_table(db).await;
    if counter_row {
        assert_eq!(
            sql_i64(db, "SELECT next_value FROM id_allocators WHERE name = 'user_id'").await,
            10_000,
            "{}: the allocation was rolled back",
            db.label
        );
    }

    // Resume: the failed step runs again from the last good state; earlier steps do not.
    deps.set_failing("allocate", false);
    engine
        .resume(&ctx(), ACTOR, pid, vec![])
        .await
        .expect("resume a failed process");
    let done = wait_status(&store, pid, ProcessStatus::Completed).await;
    assert_eq!(
        deps.count("a"),
        1,
        "{}: steps before the failed one are not re-run",
        db.label
    );
    assert_eq!(deps.count("allocate"), 2, "{}", db.label);
    assert_eq!(deps.count("c"), 1, "{}", db.label);
    let allocated = deps.allocated.lock().expect("lock").clone();
    assert_eq!(allocated.len(), 2, "{}", db.label);
    assert_eq!(
        state_of(&done)["user_id"],
        allocated[1],
        "the committed run's number is kept"
    );
    if counter_row {
        assert_eq!(
            allocated,
            vec![10_000, 10_000],
            "{}: the rolled-back number is reused",
            db.label
        );
        assert_eq!(
            sql_i64(db, "SELECT next_value FROM id_allocators WHERE name = 'user_id'").await,
            10_001
        );
    }
    assert_eq!(state_of(&done)["ran_a"], true);
    assert!(store.subscription(pid).await.expect("read").is_some(), "{}", db.label);
    assert_eq!(
        log_of(&store, pid).await,
        pairs(&[
            ("init", "success"),
            ("a", "success"),
            ("allocate", "failed"),
            ("allocate", "success"),
            ("c", "success"),
            ("done", "complete"),
        ]),
        "{}",
        db.label
    );
    assert!(done.failed_reason.is_none(), "completion clears the failure");
    assert!(done.lease_owner.is_none() && done.run_after.is_none());

    // A completed process does not resume.
    let again = engine.resume(&ctx(), ACTOR, pid, vec![]).await;
    assert!(
        matches!(&again, Err(StartError::Domain(e)) if e.kind == ErrorKind::Conflict),
        "{}: {again:?}",
        db.label
    );
    w.stop().await;
    store.close().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Retry steps: waiting, exponential back-off, retried automatically.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_step_waits_with_exponential_backoff_then_completes() {
    for db in TestDb::all().await {
        retry_backoff(&db).await;
    }
}

async fn retry_backoff(db: &TestDb) {
    let store = open(db).await;
    let mut cfg = config("w-retry");
    cfg.retry_base = Duration::from_millis(200);
    cfg.retry_max = Duration::from_millis(500);
    let (engine, deps) = engine(&store, all_workflows(), cfg);
    deps.flaky_failures.store(3, Ordering::SeqCst);
    let w = spawn_worker(&engine);

    let pid = start(&engine, "retrying", vec![]).await;
    // Observe each waiting period: retries counted, next run after base·2^n, capped.
    let mut seen: Vec<(i32, i128)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = row(&store, pid).await;
        if r.last_status == "completed" {
            break;
        }
        if r.last_status == "waiting" && !seen.iter().any(|(n, _)| *n == r.retries) {
            assert_eq!(r.failed_reason.as_deref(), Some("flaky is not ready yet"));
            assert_eq!(r.next_step.as_deref(), Some("flaky"));
            assert!(r.lease_owner.is_none(), "a waiting process holds no lease");
            let run_after = r.run_after.expect("a waiting process is queued").0;
            seen.push((r.retries, millis(run_after - r.last_modified_at.0)));
        }
        assert!(Instant::now() < deadline, "{}: stuck in {}", db.label, r.last_status);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let retries: Vec<i32> = seen.iter().map(|(n, _)| *n).collect();
    assert_eq!(retries, vec![1, 2, 3], "{}: every waiting period was seen", db.label);
    let expected = [200, 400, 500];
    for ((n, delay), want) in seen.iter().zip(expected) {
        assert!(
            *delay >= want && *delay < want + 100,
            "{}: retry {n} was queued {delay} ms out, expected {want} ms (200 ms · 2^n, capped at 500 ms)",
            db.label
        );
    }

    assert_eq!(deps.count("flaky"), 4, "{}", db.label);
    assert_eq!(deps.count("a"), 1, "{}", db.label);
    assert_eq!(deps.count("c"), 1, "{}", db.label);
    let log = steps(&store, pid).await;
    let flaky: Vec<(&str, i32)> = log
        .iter()
        .filter(|s| s.name == "flaky")
        .map(|s| (s.status.as_str(), s.retries))
        .collect();
    assert_eq!(
        flaky,
        vec![("waiting", 1), ("waiting", 2), ("waiting", 3), ("success", 0)],
        "{}",
        db.label
    );
    // The retries really waited: each run started at least the back-off after the last.
    let runs: Vec<&StepRow> = log.iter().filter(|s| s.name == "flaky").collect();
    for (i, want) in expected.iter().enumerate() {
        let gap = millis(runs[i + 1].started_at.0 - runs[i].completed_at.0);
        assert!(
            gap >= *want - 5,
            "{}: retry {} ran {gap} ms after the failure, before its {want} ms back-off",
            db.label,
            i + 1
        );
    }
    let done = row(&store, pid).await;
    assert_eq!(done.retries, 0, "success resets the retry count");
    assert!(done.failed_reason.is_none());
    w.stop().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_step_gives_up_after_its_attempts_and_resume_starts_the_count_again() {
    for db in TestDb::all().await {
        retry_gives_up(&db).await;
    }
}

async fn retry_gives_up(db: &TestDb) {
    let store = open(db).await;
    let mut cfg = config("w-give-up");
    cfg.retry_base = Duration::from_millis(20);
    cfg.retry_max = Duration::from_millis(40);
    cfg.retry_max_attempts = 3;
    let (engine, deps) = engine(&store, all_workflows(), cfg);
    // Five failures: three runs, then the process gives up; resumed, two more fail and the
    // third succeeds.
    deps.flaky_failures.store(5, Ordering::SeqCst);
    let w = spawn_worker(&engine);

    let pid = start(&engine, "retrying", vec![]).await;
    let failed = wait_status(&store, pid, ProcessStatus::Failed).await;
    assert_eq!(
        failed.failed_reason.as_deref(),
        Some("flaky is not ready yet (gave up after 3 attempts; resume tries again)"),
        "{}",
        db.label
    );
    assert_eq!(failed.next_step.as_deref(), Some("flaky"), "{}", db.label);
    assert!(
        failed.run_after.is_none(),
        "{}: a failed process is not queued",
        db.label
    );
    assert_eq!(deps.count("flaky"), 3, "{}: ran exactly its attempts", db.label);
    let flaky = |log: Vec<StepRow>| -> Vec<(String, i32)> {
        log.into_iter()
            .filter(|s| s.name == "flaky")
            .map(|s| (s.status, s.retries))
            .collect()
    };
    let attempts = flaky(steps(&store, pid).await);
    assert_eq!(
        attempts,
        vec![("waiting".into(), 1), ("waiting".into(), 2), ("failed".into(), 3)],
        "{}",
        db.label
    );
    // Nothing runs it again by itself, not even the task that resumes waiting processes.
    let requeued = store
        .requeue_waiting(time::OffsetDateTime::now_utc())
        .await
        .expect("requeue");
    assert_eq!(requeued, 0, "{}: a process that gave up is not waiting", db.label);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(deps.count("flaky"), 3, "{}: a process that gave up stays put", db.label);

    engine.resume(&ctx(), ACTOR, pid, vec![]).await.expect("resume");
    let done = wait_status(&store, pid, ProcessStatus::Completed).await;
    assert_eq!(deps.count("flaky"), 6, "{}", db.label);
    assert_eq!(done.retries, 0, "{}", db.label);
    assert!(done.failed_reason.is_none(), "{}", db.label);
    let attempts = flaky(steps(&store, pid).await);
    let tail: Vec<(String, i32)> = attempts[3..].to_vec();
    assert_eq!(
        tail,
        vec![("waiting".into(), 1), ("waiting".into(), 2), ("success".into(), 0)],
        "{}: resume started the count again",
        db.label
    );
    w.stop().await;
    store.close().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Input steps: suspend, form in the view, invalid input changes nothing.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_step_suspends_and_resumes_with_validated_input() {
    for db in TestDb::all().await {
        input_step(&db).await;
    }
}

async fn input_step(db: &TestDb) {
    let store = open(db).await;
    let (engine, deps) = engine(&store, all_workflows(), config("w-input"));
    let w = spawn_worker(&engine);

    let pid = start(&engine, "asking", vec![]).await;
    let suspended = wait_status(&store, pid, ProcessStatus::Suspended).await;
    assert_eq!(suspended.next_step.as_deref(), Some("ask"));
    assert!(suspended.run_after.is_none() && suspended.lease_owner.is_none());
    let view = engine.process_view(pid).await.expect("view");
    assert_eq!(view.last_status, "suspended");
    let form = view.form.expect("a suspended process shows its form");
    assert_eq!(form["title"], "Answer");
    assert!(form["properties"]["answer"].is_object(), "{form}");
    assert!(form["properties"]["n"].is_object(), "{form}");
    assert_eq!(
        log_of(&store, pid).await,
        pairs(&[("init", "success"), ("a", "success"), ("ask", "suspend")])
    );

    // Invalid input: refused with the form's errors; nothing changes.
    let before = row(&store, pid).await;
    let bad = engine
        .resume(&ctx(), ACTOR, pid, vec![json!({"answer": "", "n": 99})])
        .await;
    match &bad {
        Err(StartError::Form(FormStop::Invalid { errors, .. })) => {
            let fields: HashSet<&str> = errors
                .iter()
                .filter_map(|e| e.loc.first().map(String::as_str))
                .collect();
            assert_eq!(fields, HashSet::from(["answer", "n"]), "{errors:?}");
        }
        other => panic!("{}: invalid input must be a form error, got {other:?}", db.label),
    }
    // No input at all: the form's page, again without a change.
    let empty = engine.resume(&ctx(), ACTOR, pid, vec![]).await;
    assert!(
        matches!(&empty, Err(StartError::Form(FormStop::NotComplete { .. }))),
        "{empty:?}"
    );
    let after = row(&store, pid).await;
    assert_eq!(after.last_status, "suspended");
    assert_eq!(after.last_modified_at, before.last_modified_at);
    assert_eq!(after.state.0, before.state.0);
    assert_eq!(steps(&store, pid).await.len(), 3, "a refused resume logs nothing");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(deps.count("echo"), 0);

    // Valid input: merged into the state, the process completes.
    engine
        .resume(&ctx(), ACTOR, pid, vec![json!({"answer": "forty-two", "n": 7})])
        .await
        .expect("valid input resumes");
    let done = wait_status(&store, pid, ProcessStatus::Completed).await;
    let state = state_of(&done);
    assert_eq!(state["answer"], "forty-two");
    assert_eq!(state["n"], 7);
    assert_eq!(state["echo"], "forty-two", "the next step saw the input");
    assert_eq!(deps.count("a"), 1);
    assert_eq!(deps.count("echo"), 1);
    let log = steps(&store, pid).await;
    let names: Vec<(&str, &str)> = log.iter().map(|s| (s.name.as_str(), s.status.as_str())).collect();
    assert_eq!(
        names,
        vec![
            ("init", "success"),
            ("a", "success"),
            ("ask", "suspend"),
            ("ask", "success"),
            ("echo", "success"),
            ("done", "complete"),
        ]
    );
    assert_eq!(log[3].state_delta.0, json!({"answer": "forty-two", "n": 7}));
    assert_eq!(log[3].created_by, ACTOR);
    assert!(engine.process_view(pid).await.expect("view").form.is_none());

    // A second resume of the same input step is refused.
    let twice = engine
        .resume(&ctx(), ACTOR, pid, vec![json!({"answer": "again", "n": 1})])
        .await;
    assert!(
        matches!(&twice, Err(StartError::Domain(e)) if e.kind == ErrorKind::Conflict),
        "{twice:?}"
    );
    w.stop().await;
    store.close().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Callback steps: tokens, single use, timeouts.
// ---------------------------------------------------------------------------------------------

fn token_of(route: &str, pid: Uuid) -> String {
    let prefix = format!("/api/processes/{pid}/callback/");
    route
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("route {route} is not under {prefix}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_step_takes_one_right_token_and_times_out() {
    for db in TestDb::all().await {
        callback_step(&db).await;
    }
}

async fn callback_step(db: &TestDb) {
    let store = open(db).await;
    let (engine, deps) = engine(&store, all_workflows(), config("w-callback"));
    let w = spawn_worker(&engine);

    let pid = start(&engine, "calling", vec![]).await;
    let waiting = wait_status(&store, pid, ProcessStatus::AwaitingCallback).await;
    assert_eq!(waiting.next_step.as_deref(), Some("call"));
    assert!(waiting.callback_deadline.is_some());
    assert!(waiting.run_after.is_none() && waiting.lease_owner.is_none());
    assert_eq!(state_of(&waiting)["called"], true, "the action's output is merged");
    let token = token_of(&deps.route(pid).expect("the action got its route"), pid);
    assert!(token.len() >= 64, "a long token: {token}");

    // A wrong token, or the right one on another process: not found, nothing changes.
    let before = row(&store, pid).await;
    let wrong = engine.callback(&ctx(), pid, "0123456789abcdef", json!({"x": 1})).await;
    assert!(matches!(&wrong, Err(e) if e.kind == ErrorKind::NotFound), "{wrong:?}");
    let elsewhere = engine.callback(&ctx(), Uuid::new_v4(), &token, json!({"x": 1})).await;
    assert!(
        matches!(&elsewhere, Err(e) if e.kind == ErrorKind::NotFound),
        "{elsewhere:?}"
    );
    let after = row(&store, pid).await;
    assert_eq!(after.last_status, "awaiting_callback");
    assert_eq!(after.last_modified_at, before.last_modified_at);
    assert_eq!(after.state.0, before.state.0);

    // The right token resumes the process with the data merged.
    engine
        .callback(&ctx(), pid, &token, json!({"result": "ok", "n": 3}))
        .await
        .expect("the right token is accepted");
    let done = wait_status(&store, pid, ProcessStatus::Completed).await;
    assert_eq!(state_of(&done)["callback_result"], json!({"result": "ok", "n": 3}));
    assert_eq!(deps.count("call_out"), 1, "the action ran once");
    assert_eq!(deps.count("c"), 1);
    assert_eq!(
        log_of(&store, pid).await,
        pairs(&[
            ("init", "success"),
            ("call", "awaiting_callback"),
            ("call", "success"),
            ("c", "success"),
            ("done", "complete"),
        ])
    );
    // The token is single use.
    let replay = engine.callback(&ctx(), pid, &token, json!({"result": "again"})).await;
    assert!(matches!(&replay, Err(e) if e.kind == ErrorKind::NotFound), "{replay:?}");
    assert_eq!(state_of(&row(&store, pid).await)["callback_result"]["result"], "ok");

    // A callback that does not come in time fails the process.
    let late = start(&engine, "calling_briefly", vec![]).await;
    wait_status(&store, late, ProcessStatus::AwaitingCallback).await;
    let late_token = token_of(&deps.route(late).expect("route"), late);
    assert_eq!(engine.expire_callbacks().await.expect("expire"), 0, "not due yet");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(engine.expire_callbacks().await.expect("expire"), 1);
    let failed = row(&store, late).await;
    assert_eq!(failed.last_status, "failed");
    assert_eq!(
        failed.failed_reason.as_deref(),
        Some("the callback did not arrive before its timeout")
    );
    assert_eq!(failed.next_step.as_deref(), Some("call"));
    assert_eq!(
        log_of(&store, late).await,
        pairs(&[("init", "success"), ("call", "awaiting_callback"), ("call", "failed")])
    );
    assert_eq!(engine.expire_callbacks().await.expect("expire"), 0, "expired once");
    let too_late = engine.callback(&ctx(), late, &late_token, json!({})).await;
    assert!(
        matches!(&too_late, Err(e) if e.kind == ErrorKind::NotFound),
        "{too_late:?}"
    );
    assert_eq!(row(&store, late).await.last_status, "failed");

    // Resuming the timed-out process runs the action again, with a fresh token.
    engine.resume(&ctx(), ACTOR, late, vec![]).await.expect("resume");
    wait_status(&store, late, ProcessStatus::AwaitingCallback).await;
    assert_eq!(deps.count_for("call_out", late), 2);
    let fresh = token_of(&deps.route(late).expect("route"), late);
    assert_ne!(fresh, late_token, "a new token for the new wait");
    engine.abort(&ctx(), ACTOR, late).await.expect("abort");
    w.stop().await;
    store.close().await;
}

// An outside system that answers while the callback action is still running (a webhook that
// fires at once) is told "not found": the token is only stored, and the process only
// `awaiting_callback`, when the action's step commits. Its answer is lost and the process
// waits until its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_that_arrives_during_its_action_is_not_lost() {
    for db in TestDb::all().await {
        let store = open(&db).await;
        let (engine, deps) = engine(&store, all_workflows(), config("w-early"));
        let _ = deps.engine.set(engine.clone());
        let w = spawn_worker(&engine);
        let pid = start(&engine, "calling_back_at_once", vec![]).await;
        let r = wait_status_for(
            &store,
            pid,
            &[ProcessStatus::Completed, ProcessStatus::AwaitingCallback],
            30,
        )
        .await;
        let answers = deps.early_answers.lock().expect("lock").clone();
        assert_eq!(
            r.last_status, "completed",
            "{}: the early callback was answered {answers:?} and the process waits for it",
            db.label
        );
        assert_eq!(state_of(&r)["callback_result"], json!({"early": true}));
        w.stop().await;
        store.close().await;
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Conditional steps.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conditional_step_is_skipped_when_its_predicate_fails() {
    for db in TestDb::all().await {
        conditional_step(&db).await;
    }
}

async fn conditional_step(db: &TestDb) {
    let store = open(db).await;
    let (engine, deps) = engine(&store, all_workflows(), config("w-cond"));
    let w = spawn_worker(&engine);

    let off = start(&engine, "conditional", vec![json!({"flag": false})]).await;
    let on = start(&engine, "conditional", vec![json!({"flag": true})]).await;
    let off_done = wait_status(&store, off, ProcessStatus::Completed).await;
    let on_done = wait_status(&store, on, ProcessStatus::Completed).await;

    assert_eq!(deps.count_for("maybe", off), 0, "{}: skipped, not run", db.label);
    assert_eq!(deps.count_for("maybe", on), 1);
    assert_eq!(deps.count("c"), 2);
    assert!(
        !state_of(&off_done).contains_key("ran_maybe"),
        "a skipped step changes no state"
    );
    assert_eq!(state_of(&on_done)["ran_maybe"], true);
    let off_log = steps(&store, off).await;
    let skipped: Vec<&StepRow> = off_log.iter().filter(|s| s.name == "maybe").collect();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].status, "skipped");
    assert_eq!(skipped[0].state_delta.0, json!({}));
    assert_eq!(
        log_of(&store, on).await,
        pairs(&[
            ("init", "success"),
            ("maybe", "success"),
            ("c", "success"),
            ("done", "complete")
        ])
    );
    w.stop().await;
    store.close().await;
}

// ---------------------------------------------------------------------------------------------
// 6. Version pinning: in-flight processes keep their version and resume by step name.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_keep_their_workflow_version_across_a_redeploy() {
    for db in TestDb::all().await {
        version_pinning(&db).await;
    }
}

async fn version_pinning(db: &TestDb) {
    // The old deployment knows v1 only.
    let store_old = open(db).await;
    let (old, old_deps) = engine(&store_old, vec![wf_versioned_v1()], config("w-old"));
    let w_old = spawn_worker(&old);
    let p1 = start(&old, "versioned", vec![]).await;
    wait_status(&store_old, p1, ProcessStatus::Suspended).await;
    assert_eq!(old_deps.count_for("first", p1), 1);
    w_old.stop().await;

    // A process queued for v1 on a node that has only v2 fails plainly instead of running
    // v2's steps.
    let p0 = start(&old, "versioned", vec![]).await;
    let store_v2 = open(db).await;
    let (only_v2, only_v2_deps) = engine(&store_v2, vec![wf_versioned_v2()], config("w-v2-only"));
    let w_v2 = spawn_worker(&only_v2);
    let orphan = wait_status(&store_v2, p0, ProcessStatus::Failed).await;
    assert_eq!(
        orphan.failed_reason.as_deref(),
        Some("the workflow version of this process is not registered")
    );
    assert_eq!(
        only_v2_deps.runs.lock().expect("lock").len(),
        0,
        "no v2 step ran for a v1 process"
    );
    w_v2.stop().await;
    store_v2.close().await;

    // The new deployment registers v1 and v2 (a step inserted before the input step).
    let store_new = open(db).await;
    let (new, new_deps) = engine(&store_new, vec![wf_versioned_v2(), wf_versioned_v1()], config("w-new"));
    let w_new = spawn_worker(&new);
    assert_eq!(new.workflow("versioned").expect("registered").version, 2);

    let p2 = start(&new, "versioned", vec![]).await;
    let p2_row = wait_status(&store_new, p2, ProcessStatus::Suspended).await;
    assert_eq!(p2_row.workflow_version, 2, "new starts use the newest version");
    assert_eq!(new_deps.count_for("inserted", p2), 1);

    new.resume(&ctx(), ACTOR, p1, vec![json!({"answer": "old", "n": 1})])
        .await
        .expect("resume the v1 process");
    let p1_done = wait_status(&store_new, p1, ProcessStatus::Completed).await;
    assert_eq!(p1_done.workflow_version, 1, "{}", db.label);
    assert_eq!(
        new_deps.count_for("inserted", p1),
        0,
        "v2's new step never runs for a v1 process"
    );
    assert_eq!(new_deps.count_for("first", p1), 0, "done steps are not repeated");
    assert_eq!(new_deps.count_for("last", p1), 1);
    assert_eq!(
        log_of(&store_new, p1).await,
        pairs(&[
            ("init", "success"),
            ("first", "success"),
            ("ask", "suspend"),
            ("ask", "success"),
            ("last", "success"),
            ("done", "complete"),
        ]),
        "{}",
        db.label
    );

    new.resume(&ctx(), ACTOR, p2, vec![json!({"answer": "new", "n": 2})])
        .await
        .expect("resume the v2 process");
    wait_status(&store_new, p2, ProcessStatus::Completed).await;
    assert_eq!(
        log_of(&store_new, p2).await,
        pairs(&[
            ("init", "success"),
            ("first", "success"),
            ("inserted", "success"),
            ("ask", "suspend"),
            ("ask", "success"),
            ("last", "success"),
            ("done", "complete"),
        ])
    );
    w_new.stop().await;
    store_new.close().await;
    store_old.close().await;
}

// ---------------------------------------------------------------------------------------------
// 7. Fencing: an expired lease's holder can write nothing.
// ---------------------------------------------------------------------------------------------

fn log_row(name: &str) -> StepLog {
    let now = clock::now();
    StepLog {
        name: name.to_owned(),
        status: StepStatus::Success,
        state_delta: json!({}),
        created_by: ACTOR.into(),
        started_at: now,
        completed_at: now,
        retries: 0,
    }
}

fn running_update(last: &str, next: &str, state: &Value, lease: Duration) -> ProcessUpdate {
    let now = clock::now();
    ProcessUpdate {
        status: ProcessStatus::Running,
        last_step: last.to_owned(),
        next_step: Some(next.to_owned()),
        state: state.clone(),
        run_after: Some(now),
        lease_until: Some(now + lease),
        failed_reason: None,
        traceback: None,
        retries: 0,
        assignee: "SYSTEM".into(),
        callback_token_hash: None,
        callback_deadline: None,
        now,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_lease_expired_cannot_write() {
    for db in TestDb::all().await {
        fencing(&db).await;
    }
}

async fn fencing(db: &TestDb) {
    let store = open(db).await;
    let (engine, deps) = engine(&store, all_workflows(), config("w-fence"));
    let pid = start(&engine, "simple", vec![]).await;

    // w1 claims with a short lease.
    let now = clock::now();
    let first = store
        .claim_processes("w1", 10, now, now + Duration::from_millis(300))
        .await
        .expect("claim");
    assert_eq!(first.len(), 1, "{}", db.label);
    let a1 = first[0].attempt;
    assert_eq!(first[0].last_status, "running");
    assert_eq!(first[0].lease_owner.as_deref(), Some("w1"));
    let fence1 = Fence {
        process_id: pid,
        attempt: a1,
        worker: "w1".into(),
    };
    // While the lease lives nobody else gets the process.
    let now = clock::now();
    let none = store
        .claim_processes("w2", 10, now, now + Duration::from_secs(30))
        .await
        .expect("claim");
    assert!(none.is_empty(), "{}: a live lease is not claimed again", db.label);
    assert!(
        store
            .extend_lease(&fence1, clock::now() + Duration::from_millis(300))
            .await
            .expect("heartbeat")
    );

    // The lease runs out; w2 claims the process with the next attempt.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let now = clock::now();
    let second = store
        .claim_processes("w2", 10, now, now + Duration::from_secs(30))
        .await
        .expect("claim");
    assert_eq!(second.len(), 1, "{}: an expired lease is claimed again", db.label);
    assert_eq!(second[0].attempt, a1 + 1);
    assert_eq!(second[0].lease_owner.as_deref(), Some("w2"));
    let fence2 = Fence {
        process_id: pid,
        attempt: a1 + 1,
        worker: "w2".into(),
    };

    // w1, late: its heartbeat, its step commit and its release all match nothing.
    assert!(
        !store
            .extend_lease(&fence1, clock::now() + Duration::from_secs(30))
            .await
            .expect("heartbeat")
    );
    let state = second[0].state.0.clone();
    let mut tx = store.begin().await.expect("begin");
    let wrote = tx
        .finish_step(
            &fence1,
            &log_row("init"),
            &running_update("init", "a", &state, Duration::from_secs(30)),
        )
        .await
        .expect("finish_step");
    assert!(!wrote, "{}: the stale holder's step is refused", db.label);
    tx.rollback().await.expect("rollback");
    assert!(!store.release_lease(&fence1).await.expect("release"));
    // Even a stale holder that claims the same attempt number under another name is refused.
    let forged = Fence {
        process_id: pid,
        attempt: a1 + 1,
        worker: "w1".into(),
    };
    let mut tx = store.begin().await.expect("begin");
    assert!(
        !tx.finish_step(
            &forged,
            &log_row("init"),
            &running_update("init", "a", &state, Duration::from_secs(30))
        )
        .await
        .expect("finish_step")
    );
    tx.rollback().await.expect("rollback");
    let r = row(&store, pid).await;
    assert_eq!(r.lease_owner.as_deref(), Some("w2"));
    assert_eq!(r.attempt, a1 + 1);
    assert_eq!(r.next_step.as_deref(), Some("init"));
    assert!(steps(&store, pid).await.is_empty(), "nothing was logged");

    // w2 commits its step; then hands the process back and the real worker finishes it from
    // the step w2 left it at.
    let mut tx = store.begin().await.expect("begin");
    assert!(
        tx.finish_step(
            &fence2,
            &log_row("init"),
            &running_update("init", "a", &state, Duration::from_secs(30))
        )
        .await
        .expect("finish_step")
    );
    tx.commit().await.expect("commit");
    let log = steps(&store, pid).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].attempt, a1 + 1);
    assert!(store.release_lease(&fence2).await.expect("release"));
    let w = spawn_worker(&engine);
    let done = wait_status(&store, pid, ProcessStatus::Completed).await;
    assert_eq!(done.attempt, a1 + 2);
    assert_eq!(deps.count("a"), 1);
    assert_eq!(
        log_of(&store, pid).await,
        pairs(&[
            ("init", "success"),
            ("a", "success"),
            ("c", "success"),
            ("done", "complete")
        ])
    );
    w.stop().await;
    store.close().await;
}

// ---------------------------------------------------------------------------------------------
// 8. Abort with compensation; pause.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_compensates_in_its_transaction_and_completed_processes_stay() {
    for db in TestDb::all().await {
        abort(&db).await;
    }
}

async fn abort(db: &TestDb) {
    let store = open(db).await;
    let (engine, deps) = engine(&store, all_workflows(), config("w-abort"));
    let w = spawn_worker(&engine);

    // A suspended process: abort removes what it made, in one transaction with the abort.
    let suspended = start(&engine, "compensating", vec![]).await;
    wait_status(&store, suspended, ProcessStatus::Suspended).await;
    assert!(store.subscription(suspended).await.expect("read").is_some());

    // A compensation that fails leaves everything as it was, even what it wrote before
    // failing (the subscription it deleted is back).
    deps.compensation_fails.store(true, Ordering::SeqCst);
    let refused = engine.abort(&ctx(), ACTOR, suspended).await;
    assert!(
        matches!(&refused, Err(e) if e.kind == ErrorKind::Conflict),
        "{refused:?}"
    );
    assert_eq!(row(&store, suspended).await.last_status, "suspended", "{}", db.label);
    assert!(
        store.subscription(suspended).await.expect("read").is_some(),
        "{}: the failed compensation's delete was rolled back",
        db.label
    );
    assert!(!log_of(&store, suspended).await.iter().any(|(n, _)| n == "User Aborted"));

    deps.compensation_fails.store(false, Ordering::SeqCst);
    engine
        .abort(&ctx(), ACTOR, suspended)
        .await
        .expect("abort a suspended process");
    let aborted = row(&store, suspended).await;
    assert_eq!(aborted.last_status, "aborted");
    assert!(aborted.run_after.is_none());
    assert!(
        store.subscription(suspended).await.expect("read").is_none(),
        "{}",
        db.label
    );
    assert_eq!(deps.compensated.lock().expect("lock").clone(), vec![suspended]);
    assert_eq!(
        log_of(&store, suspended).await.last().cloned(),
        Some(("User Aborted".to_owned(), "abort".to_owned()))
    );

    // A failed process.
    deps.set_failing("b", true);
    let failed = start(&engine, "compensating", vec![]).await;
    wait_status(&store, failed, ProcessStatus::Failed).await;
    deps.set_failing("b", false);
    engine
        .abort(&ctx(), ACTOR, failed)
        .await
        .expect("abort a failed process");
    assert_eq!(row(&store, failed).await.last_status, "aborted");
    assert!(store.subscription(failed).await.expect("read").is_none());
    assert_eq!(deps.compensated.lock().expect("lock").len(), 2);

    // Aborted and completed processes stay as they are.
    let again = engine.abort(&ctx(), ACTOR, failed).await;
    assert!(matches!(&again, Err(e) if e.kind == ErrorKind::Conflict), "{again:?}");
    let resumed = engine.resume(&ctx(), ACTOR, failed, vec![]).await;
    assert!(
        matches!(&resumed, Err(StartError::Domain(e)) if e.kind == ErrorKind::Conflict),
        "{resumed:?}"
    );
    let completed = start(&engine, "simple", vec![]).await;
    wait_status(&store, completed, ProcessStatus::Completed).await;
    let refused = engine.abort(&ctx(), ACTOR, completed).await;
    assert!(
        matches!(&refused, Err(e) if e.kind == ErrorKind::Conflict),
        "{refused:?}"
    );
    assert_eq!(row(&store, completed).await.last_status, "completed");
    let unknown = engine.abort(&ctx(), ACTOR, Uuid::new_v4()).await;
    assert!(
        matches!(&unknown, Err(e) if e.kind == ErrorKind::NotFound),
        "{unknown:?}"
    );
    w.stop().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_engine_starts_and_claims_nothing_until_unpaused() {
    for db in TestDb::all().await {
        pause(&db).await;
    }
}

async fn pause(db: &TestDb) {
    let store = open(db).await;
    let (engine, deps) = engine(&store, all_workflows(), config("w-pause"));

    // Queued before the pause, with no worker yet.
    let queued = start(&engine, "simple", vec![]).await;
    let status = engine.set_paused(&ctx(), ACTOR, true).await.expect("pause");
    assert!(status.global_lock);
    assert_eq!(status.global_status, "PAUSED");

    let refused = engine.start(&ctx(), ACTOR, "simple", vec![]).await;
    assert!(
        matches!(&refused, Err(StartError::Domain(e)) if e.kind == ErrorKind::Unavailable),
        "{}: {refused:?}",
        db.label
    );
    let now = clock::now();
    assert!(
        store
            .claim_processes("intruder", 10, now, now + Duration::from_secs(30))
            .await
            .expect("claim")
            .is_empty(),
        "a paused engine's queue gives nothing"
    );
    let w = spawn_worker(&engine);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = row(&store, queued).await;
    assert_eq!(
        r.last_status, "created",
        "{}: workers claim nothing while paused",
        db.label
    );
    assert_eq!(r.attempt, 0);
    assert_eq!(deps.count("a"), 0);

    // Unpausing runs the queued work.
    let status = engine.set_paused(&ctx(), ACTOR, false).await.expect("unpause");
    assert_eq!(status.global_status, "RUNNING");
    wait_status(&store, queued, ProcessStatus::Completed).await;

    // Pausing while a step runs: the step finishes, the next one waits for the unpause.
    let slow = start(&engine, "slow", vec![]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while deps.count_for("slow", slow) == 0 {
        assert!(Instant::now() < deadline, "the slow step never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = engine.set_paused(&ctx(), ACTOR, true).await.expect("pause");
    assert_eq!(status.global_status, "PAUSING", "{}: a step is still running", db.label);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = row(&store, slow).await;
    assert_eq!(
        r.last_step.as_deref(),
        Some("slow"),
        "{}: the running step finished",
        db.label
    );
    assert_eq!(r.next_step.as_deref(), Some("c"));
    assert!(r.lease_owner.is_none(), "{}: the lease was given back", db.label);
    assert_eq!(deps.count_for("c", slow), 0, "no step starts while paused");
    assert_eq!(engine.status().await.expect("status").global_status, "PAUSED");

    engine.set_paused(&ctx(), ACTOR, false).await.expect("unpause");
    wait_status(&store, slow, ProcessStatus::Completed).await;
    assert_eq!(deps.count_for("slow", slow), 1, "the finished step is not repeated");
    assert_eq!(deps.count_for("c", slow), 1);
    w.stop().await;
    store.close().await;
}

// `worker::run` documents that on shutdown it "waits for the processes it runs to stop at a
// step boundary". It runs them to their end instead (the runner never looks at the shutdown
// signal), so a node's shutdown waits for every step of every process it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_shutdown_stops_processes_at_a_step_boundary() {
    for db in TestDb::all().await {
        let store = open(&db).await;
        let (engine, deps) = engine(&store, all_workflows(), config("w-shutdown"));
        let w = spawn_worker(&engine);
        let pid = start(&engine, "slow", vec![]).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while deps.count_for("slow", pid) == 0 {
            assert!(Instant::now() < deadline, "the slow step never started");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        w.stop().await;
        let r = row(&store, pid).await;
        assert_eq!(
            deps.count_for("c", pid),
            0,
            "{}: the step after the running one started during shutdown (process {})",
            db.label,
            r.last_status
        );
        assert_eq!(r.next_step.as_deref(), Some("c"));
        // Another node carries on from there.
        let (other, other_deps) = engine_on(&store, "w-after-shutdown");
        let w2 = spawn_worker(&other);
        wait_status(&store, pid, ProcessStatus::Completed).await;
        assert_eq!(other_deps.count_for("slow", pid), 0);
        w2.stop().await;
        store.close().await;
    }
}

fn engine_on(store: &Store, name: &str) -> (Engine<Deps>, Arc<Deps>) {
    engine(store, all_workflows(), config(name))
}

// A step that outlives the lease (the heartbeat keeps the claim alive meanwhile) commits
// `lease_until = step start + lease` (runner.rs: `lease_until = later(started, lease)`), a
// time already past: the process is claimable while its worker goes on with the next step,
// so another claim runs that step a second time, concurrently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_longer_than_the_lease_does_not_let_the_process_be_claimed_twice() {
    for db in TestDb::all().await {
        let store = open(&db).await;
        let mut cfg = config("w-long");
        cfg.lease = Duration::from_millis(600);
        cfg.poll = Duration::from_millis(10);
        let (engine, deps) = engine(&store, all_workflows(), cfg);
        let w = spawn_worker(&engine);
        let pids = [
            start(&engine, "longer_than_lease", vec![]).await,
            start(&engine, "longer_than_lease", vec![]).await,
        ];
        for pid in pids {
            let r = wait_status(&store, pid, ProcessStatus::Completed).await;
            assert_eq!(
                deps.count_for("after_slow", pid),
                1,
                "{}: the step after the long one ran {} times (attempt {})",
                db.label,
                deps.count_for("after_slow", pid),
                r.attempt
            );
            assert_eq!(r.attempt, 1, "{}: a live worker's process was claimed again", db.label);
        }
        w.stop().await;
        store.close().await;
    }
}

// `Engine::abort` and `Engine::resume` read the process row outside their transaction
// (`self.inner.store.process(pid)`) and then write that row's state and next step back with a
// `move_process` that only checks the status *class*. A process that moved on in between
// (claimed, ran steps, stopped again in a resumable status) is rewound to the stale row.
//
// The window is widened deterministically on SQLite: the acting engine's only write connection
// is held (a deferred BEGIN, no file lock) so its abort/resume stops between the read and its
// transaction, while a second engine (its own connection) runs the process. The code path is
// the same on PostgreSQL, where the window is a pool acquire plus a round trip.
struct RaceSetup {
    store_a: Store,
    a: Engine<Deps>,
    store_b: Store,
    deps_b: Arc<Deps>,
    worker_b: Worker,
    pid: Uuid,
}

/// A `make_then_fail` process left `waiting` on its retry step (next run in 1 s), engine B's
/// worker running (it makes the subscription, then fails at `b`).
async fn race_setup(db: &TestDb) -> RaceSetup {
    let store_a = open(db).await;
    let store_b = open(db).await;
    let (a, _) = engine(&store_a, all_workflows(), config("w-race-a"));
    let mut cfg_b = config("w-race-b");
    cfg_b.retry_base = Duration::from_secs(1);
    let (b, deps_b) = engine(&store_b, all_workflows(), cfg_b);
    deps_b.flaky_failures.store(1, Ordering::SeqCst);
    deps_b.set_failing("b", true);
    let pid = start(&a, "make_then_fail", vec![]).await;
    let worker_b = spawn_worker(&b);
    wait_status(&store_a, pid, ProcessStatus::Waiting).await;
    RaceSetup {
        store_a,
        a,
        store_b,
        deps_b,
        worker_b,
        pid,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_compensates_what_the_process_made_even_if_it_ran_meanwhile() {
    let db = TestDb::sqlite();
    let RaceSetup {
        store_a,
        a,
        store_b,
        deps_b,
        worker_b,
        pid,
    } = race_setup(&db).await;

    // A's abort reads the waiting process (nothing made yet), then waits for its transaction.
    let hold = store_a.hold_writer().await.expect("hold A's write connection");
    let aborting = {
        let a = a.clone();
        tokio::spawn(async move { a.abort(&ctx(), ACTOR, pid).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Meanwhile B runs the process on: the subscription is made, then `b` fails.
    let failed = wait_status(&store_b, pid, ProcessStatus::Failed).await;
    assert_eq!(state_of(&failed)["subscription_id"], json!(pid));
    assert!(store_b.subscription(pid).await.expect("read").is_some());
    drop(hold);
    let aborted = aborting.await.expect("abort task");
    worker_b.stop().await;

    // Either the abort is refused (the process changed) or it compensates what is there now.
    if aborted.is_ok() {
        let r = row(&store_b, pid).await;
        assert_eq!(
            state_of(&r).get("subscription_id"),
            Some(&json!(pid)),
            "the aborted process lost the state its steps committed"
        );
        assert!(
            store_b.subscription(pid).await.expect("read").is_none(),
            "the compensation missed the subscription the process made: an orphan"
        );
    }
    let _ = deps_b;
    store_a.close().await;
    store_b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_does_not_rewind_a_process_that_ran_meanwhile() {
    let db = TestDb::sqlite();
    let RaceSetup {
        store_a,
        a,
        store_b,
        deps_b,
        worker_b,
        pid,
    } = race_setup(&db).await;

    // An operator's resume of the waiting process reads it, then waits for its transaction.
    let hold = store_a.hold_writer().await.expect("hold A's write connection");
    let resuming = {
        let a = a.clone();
        tokio::spawn(async move { a.resume(&ctx(), ACTOR, pid, vec![]).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Meanwhile B retries the step on schedule, makes the subscription, then fails at `b`.
    wait_status(&store_b, pid, ProcessStatus::Failed).await;
    assert_eq!(deps_b.count_for("make", pid), 1);
    deps_b.set_failing("b", false);
    drop(hold);
    let resumed = resuming.await.expect("resume task");

    // Whatever the resume answered, committed steps must not run again.
    let r = wait_status_for(&store_b, pid, &[ProcessStatus::Completed, ProcessStatus::Failed], 30).await;
    worker_b.stop().await;
    assert_eq!(
        deps_b.count_for("make", pid),
        1,
        "resume ({resumed:?}) rewound the process to `{}`: `make` ran again (process {}, {:?}); log {:?}",
        "flaky",
        r.last_status,
        r.failed_reason,
        log_of(&store_b, pid).await
    );
    store_a.close().await;
    store_b.close().await;
}

// A step that does slow work without writing holds no transaction (`StepCtx::tx` opens one
// on first use "so the transaction stays short"): other processes and starts go on meanwhile,
// also on SQLite, where a held write transaction stops every writer of the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_step_that_does_not_write_blocks_no_other_work() {
    for db in TestDb::all().await {
        let store = open(&db).await;
        let (engine, deps) = engine(&store, all_workflows(), config("w-slow"));
        let w = spawn_worker(&engine);
        let slow = start(&engine, "slow", vec![]).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while deps.count_for("slow", slow) == 0 {
            assert!(Instant::now() < deadline, "the slow step never started");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let t0 = Instant::now();
        let other = start(&engine, "simple", vec![]).await;
        let started_in = t0.elapsed();
        wait_status(&store, other, ProcessStatus::Completed).await;
        let done_in = t0.elapsed();
        let slow_now = row(&store, slow).await;
        assert!(
            started_in < Duration::from_millis(300) && slow_now.last_status == "running",
            "{}: a start took {started_in:?} and another process completed after {done_in:?} \
             while a slow step that writes nothing ran (slow process: {}, last step {:?})",
            db.label,
            slow_now.last_status,
            slow_now.last_step
        );
        wait_status(&store, slow, ProcessStatus::Completed).await;
        w.stop().await;
        store.close().await;
    }
}

// `Engine::expire_callbacks` lists the expired waits, then fails each process with a
// `move_process` that only checks `awaiting_callback`, not the deadline. A process whose late
// callback came in meanwhile and that now awaits its *next* callback (deadline far ahead) is
// failed for a timeout it never had. Widened as in the tests above: the expiring engine's
// write connection is held between its list and its transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_callbacks_spares_a_process_awaiting_its_next_callback() {
    let db = TestDb::sqlite();
    let store_a = open(&db).await;
    let store_b = open(&db).await;
    let (a, _) = engine(&store_a, all_workflows(), config("w-expire-a"));
    let (b, deps_b) = engine(&store_b, all_workflows(), config("w-expire-b"));
    let worker_b = spawn_worker(&b);
    let pid = start(&b, "two_calls", vec![]).await;
    wait_status(&store_b, pid, ProcessStatus::AwaitingCallback).await;
    let token = token_of(&deps_b.route(pid).expect("route"), pid);
    tokio::time::sleep(Duration::from_millis(400)).await;

    // A lists the expired wait, then waits for its transaction.
    let hold = store_a.hold_writer().await.expect("hold A's write connection");
    let expiring = {
        let a = a.clone();
        tokio::spawn(async move { a.expire_callbacks().await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Meanwhile the (late, not yet expired) callback arrives and the process moves on to its
    // next callback step, which may wait ten minutes.
    b.callback(&ctx(), pid, &token, json!({"first": "late"}))
        .await
        .expect("a late callback before expiry is accepted");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = row(&store_b, pid).await;
        if r.last_status == "awaiting_callback" && r.next_step.as_deref() == Some("call_again") {
            break;
        }
        assert!(Instant::now() < deadline, "stuck: {} {:?}", r.last_status, r.next_step);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(hold);
    let expired = expiring.await.expect("expire task").expect("expire");
    worker_b.stop().await;
    let r = row(&store_b, pid).await;
    assert_eq!(
        (r.last_status.as_str(), r.next_step.as_deref(), expired),
        ("awaiting_callback", Some("call_again"), 0),
        "the second wait was failed as timed out ({:?})",
        r.failed_reason
    );
    store_a.close().await;
    store_b.close().await;
}

// A process whose worker died (its lease ran out, nobody claimed it yet) is `running`; the
// engine means to let it be aborted (engine.rs, `abort`: "Running is listed so that a process
// whose worker died can be aborted"), but refuses before getting there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_whose_worker_died_can_be_aborted() {
    for db in TestDb::all().await {
        let store = open(&db).await;
        let (engine, deps) = engine(&store, all_workflows(), config("w-dead"));
        let pid = start(&engine, "compensating", vec![]).await;
        let now = clock::now();
        let claimed = store
            .claim_processes("dead-worker", 10, now, now + Duration::from_millis(200))
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 1);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = engine.abort(&ctx(), ACTOR, pid).await;
        assert!(r.is_ok(), "{}: abort of a process whose worker died: {r:?}", db.label);
        assert_eq!(row(&store, pid).await.last_status, "aborted");
        assert_eq!(deps.compensated.lock().expect("lock").clone(), vec![pid]);
        store.close().await;
    }
}

// A step that panics must not leave its process held for ever: the runner's heartbeat task
// keeps extending the lease after the runner's task died, so no worker can ever claim the
// process again (and abort refuses a running process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_step_does_not_hold_its_process_for_ever() {
    for db in TestDb::all().await {
        let store = open(&db).await;
        let mut cfg = config("w-panic");
        cfg.lease = Duration::from_millis(600);
        let (engine, deps) = engine(&store, all_workflows(), cfg);
        let w = spawn_worker(&engine);
        let pid = start(&engine, "panicking", vec![]).await;
        // Several leases long: the process must not still be held by the first claim.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let r = row(&store, pid).await;
        let held_for_ever =
            r.last_status == "running" && r.attempt == 1 && r.lease_until.is_some_and(|t| t.0 > clock::now());
        assert!(
            !held_for_ever,
            "{}: after {} runs the process is still held by its first claim (lease until {:?})",
            db.label,
            deps.count("panics"),
            r.lease_until
        );
        assert_eq!(
            r.last_status, "failed",
            "{}: a panicking step fails its process",
            db.label
        );
        w.stop().await;
        store.close().await;
    }
}

// ---------------------------------------------------------------------------------------------
// 9. Two engines on one PostgreSQL database: 1,000 processes, each step exactly once.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_on_postgres_run_each_of_1000_processes_exactly_once() {
    let Some(db) = TestDb::postgres().await else {
        eprintln!("MUSTER_TEST_DATABASE_URL is not set: this test needs PostgreSQL");
        return;
    };
    const N: usize = 1000;
    let store_a = open_with(&db, 10).await;
    let store_b = open_with(&db, 10).await;
    let mut cfg_a = config("node-a");
    cfg_a.concurrency = 8;
    let mut cfg_b = config("node-b");
    cfg_b.concurrency = 8;
    let (a, deps_a) = engine(&store_a, all_workflows(), cfg_a);
    let (b, deps_b) = engine(&store_b, all_workflows(), cfg_b);
    let wa = spawn_worker(&a);
    let wb = spawn_worker(&b);

    // Start from both nodes at once, while both work.
    let mut starters = Vec::new();
    for i in 0..8 {
        let e = if i % 2 == 0 { a.clone() } else { b.clone() };
        starters.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..N / 8 {
                ids.push(start(&e, "counted", vec![]).await);
            }
            ids
        }));
    }
    let mut pids = HashSet::new();
    for s in starters {
        pids.extend(s.await.expect("starter"));
    }
    assert_eq!(pids.len(), N);

    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let done = sql_i64(&db, "SELECT COUNT(*) FROM processes WHERE last_status = 'completed'").await;
        if done == N as i64 {
            break;
        }
        assert!(Instant::now() < deadline, "only {done} of {N} processes completed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wa.stop().await;
    wb.stop().await;

    // Committed exactly once: one row per process (keyed by it: a second commit would have
    // failed), the allocator moved by N, one success row per process.
    assert_eq!(sql_i64(&db, "SELECT COUNT(*) FROM subscriptions").await, N as i64);
    if has_allocator_table(&db).await {
        assert_eq!(
            sql_i64(&db, "SELECT next_value FROM id_allocators WHERE name = 'user_id'").await,
            10_000 + N as i64
        );
    }
    assert_eq!(
        sql_i64(&db, "SELECT COUNT(*) FROM process_steps WHERE name = 'count'").await,
        N as i64,
        "one log row of `count` per process, and no failed ones"
    );
    assert_eq!(
        sql_i64(
            &db,
            "SELECT COUNT(DISTINCT process_id) FROM process_steps WHERE name = 'count' AND status = 'success'"
        )
        .await,
        N as i64
    );
    assert_eq!(
        sql_i64(
            &db,
            "SELECT COUNT(DISTINCT state->>'n') FROM processes WHERE workflow_name = 'counted'"
        )
        .await,
        N as i64,
        "every process got its own number"
    );
    assert_eq!(
        sql_i64(&db, "SELECT COUNT(*) FROM process_steps WHERE status = 'complete'").await,
        N as i64
    );
    // Ran exactly once: in memory, across both nodes.
    let mut per_process: HashMap<Uuid, usize> = HashMap::new();
    for deps in [&deps_a, &deps_b] {
        for (label, pid) in deps.runs.lock().expect("lock").iter() {
            if *label == "count" {
                *per_process.entry(*pid).or_default() += 1;
            }
        }
    }
    assert_eq!(per_process.len(), N);
    assert!(per_process.values().all(|n| *n == 1), "a step ran twice");
    let (na, nb) = (deps_a.count("count"), deps_b.count("count"));
    eprintln!("node a ran {na} processes, node b {nb}");
    assert!(na > 0 && nb > 0, "both nodes worked: a {na}, b {nb}");
    store_a.close().await;
    store_b.close().await;
}

// ---------------------------------------------------------------------------------------------
// 10. The scheduler fires each tick on one node only.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_fire_each_due_tick_once() {
    for db in TestDb::all().await {
        scheduler_once(&db).await;
    }
}

async fn scheduler_once(db: &TestDb) {
    let store_a = open(db).await;
    let store_b = open(db).await;
    sql_exec(
        db,
        "INSERT INTO schedules (name, workflow_name, interval_seconds, offset_seconds) VALUES ('tick test', 'tick_task', 3600, 0)",
    )
    .await;
    let (a, _) = engine(&store_a, all_workflows(), config("sched-a"));
    let (b, _) = engine(&store_b, all_workflows(), config("sched-b"));
    const ROUNDS: i64 = 12;
    let mut fired_by = [0usize; 2];
    for round in 1..=ROUNDS {
        sql_exec(db, "UPDATE schedules SET next_run_at = NULL WHERE name = 'tick test'").await;
        store_a
            .plan_schedule("tick test", clock::now() - Duration::from_secs(1))
            .await
            .expect("plan");
        let (ra, rb) = tokio::join!(scheduler::tick(&a), scheduler::tick(&b));
        let (ra, rb) = (ra.expect("tick a"), rb.expect("tick b"));
        assert_eq!(ra + rb, 1, "{}: round {round}: fired {ra} + {rb} times", db.label);
        fired_by[0] += ra;
        fired_by[1] += rb;
        assert_eq!(
            sql_i64(db, "SELECT COUNT(*) FROM processes WHERE workflow_name = 'tick_task'").await,
            round,
            "{}: one task process per tick",
            db.label
        );
        // Not due again: another tick fires nothing.
        let (ra, rb) = tokio::join!(scheduler::tick(&a), scheduler::tick(&b));
        assert_eq!(ra.expect("tick") + rb.expect("tick"), 0);
    }
    eprintln!("{}: node a fired {}, node b {}", db.label, fired_by[0], fired_by[1]);
    let schedule = store_a
        .schedules()
        .await
        .expect("schedules")
        .into_iter()
        .find(|s| s.name == "tick test")
        .expect("the schedule");
    assert!(
        schedule.next_run_at.expect("planned").0 > clock::now(),
        "the next tick is ahead"
    );
    let last = schedule.last_process_id.expect("the last fired process");
    let r = row(&store_a, last).await;
    assert_eq!(r.workflow_name, "tick_task");
    assert!(r.is_task);
    assert_eq!(r.created_by, "scheduler");
    // The task processes run.
    let w = spawn_worker(&a);
    wait_status(&store_a, last, ProcessStatus::Completed).await;
    w.stop().await;
    store_a.close().await;
    store_b.close().await;
}

// ---------------------------------------------------------------------------------------------
// The event hook: how `serve` learns that a commit wrote events (to number and announce them).
// ---------------------------------------------------------------------------------------------

/// The hook is set on an engine that is already shared (`serve` sets it after the HTTP state and
/// the worker hold clones), and it runs for the worker's commits, not only for starts: a hook that
/// silently failed to install left a process's completion unannounced until a follower's poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_hook_is_set_on_a_shared_engine_and_runs_for_every_commit() {
    for db in TestDb::all().await {
        let store = open(&db).await;
        let (engine, _deps) = engine(&store, all_workflows(), config("w-hook"));
        let shared = engine.clone();
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = calls.clone();
        shared
            .on_events(move || {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
            .expect("the hook is set on a shared engine");
        assert!(engine.on_events(|| {}).is_err(), "a second hook is refused");
        let w = spawn_worker(&engine);
        let pid = start(&engine, "simple", vec![]).await;
        wait_status(&store, pid, ProcessStatus::Completed).await;
        w.stop().await;
        // The start, and at least one commit of the run that recorded its steps.
        let n = calls.load(std::sync::atomic::Ordering::SeqCst);
        assert!(n >= 2, "{}: the hook ran {n} times for a start and its run", db.label);
        store.close().await;
    }
}

#[tokio::test]
async fn finished_task_processes_are_cleaned_up_and_nothing_else() {
    for db in TestDb::all().await {
        let store = open(&db).await;
        let (engine, _deps) = engine(&store, all_workflows(), config("w-clean"));
        let w = spawn_worker(&engine);
        let task = start(&engine, "tick_task", vec![]).await;
        let workflow = start(&engine, "simple", vec![]).await;
        wait_status(&store, task, ProcessStatus::Completed).await;
        wait_status(&store, workflow, ProcessStatus::Completed).await;
        w.stop().await;
        // Started before the cut-off: none of them yet.
        let long_ago = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        assert_eq!(
            store.delete_finished_tasks(long_ago).await.expect("clean"),
            0,
            "{}",
            db.label
        );
        // After it: the finished task goes; the workflow's process is history and stays.
        let later = time::OffsetDateTime::now_utc() + time::Duration::minutes(1);
        assert_eq!(
            store.delete_finished_tasks(later).await.expect("clean"),
            1,
            "{}",
            db.label
        );
        assert!(store.process(task).await.expect("read").is_none(), "{}", db.label);
        assert!(store.process(workflow).await.expect("read").is_some(), "{}", db.label);
        store.close().await;
    }
}
