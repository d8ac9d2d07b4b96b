//! The conformance suite: every `Store` method, with the same expectations on every backend.
//!
//! Each test runs against a fresh SQLite database and, when `MUSTER_TEST_DATABASE_URL` is set,
//! a fresh PostgreSQL schema. Every assertion message names the backend.

use muster_core::audit::{AuditEntry, Outcome, RequestCtx, actions};
use muster_core::clock;
use muster_core::credentials::password::hash_generated;
use muster_core::credentials::random_bytes;
use muster_core::directory::create::{self, CreateUserInput, Creator, PasswordPlan};
use muster_core::directory::throttle::ThrottleState;
use muster_core::directory::{ApprovalStatus, DirectoryConfig, SignUpStatus, User};
use muster_store::testing::TestDb;
use muster_store::{
    AuditQuery, AuditRecord, Backend, LoginGuard, LoginPassword, SessionRecord, Store, StoreError, StoreOptions,
    ThrottleReset, UserOrder, UserQuery, UsernameConflict,
};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// Offering accounts (providers, offerings, accounts, history, API tokens).
#[path = "conformance/offerings.rs"]
mod offerings;

/// The mail outbox and one-time tokens.
#[path = "conformance/mail.rs"]
mod mail;

/// The migrations' CHECK lists against muster-core's enums.
#[path = "conformance/check_lists.rs"]
mod check_lists;

#[path = "conformance/users.rs"]
mod users;

#[path = "conformance/sessions.rs"]
mod sessions;

#[path = "conformance/throttle.rs"]
mod throttle;

#[path = "conformance/audit.rs"]
mod audit;

#[path = "conformance/events.rs"]
mod events;

#[path = "conformance/group_commit.rs"]
mod group_commit;

#[path = "conformance/username_lookalikes.rs"]
mod username_lookalikes;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Connects to `db` and applies the migrations.
async fn open(db: &TestDb) -> Store {
    let store = Store::connect(&db.url, &StoreOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{}: connect: {e}", db.label));
    store
        .migrate()
        .await
        .unwrap_or_else(|e| panic!("{}: migrate: {e}", db.label));
    store
}

fn ctx() -> RequestCtx {
    RequestCtx {
        cid: "t".into(),
        ..Default::default()
    }
}

/// An audit entry as the services make them: no actor, correlation id `t`.
fn entry(action: &'static str, target: Option<String>) -> AuditEntry {
    AuditEntry::new(&ctx(), action, None, target)
}

fn create_entry(user: &User) -> AuditEntry {
    entry(actions::USER_CREATE, Some(user.uuid.to_string()))
}

fn input(username: &str) -> CreateUserInput {
    CreateUserInput {
        username: Some(username.to_owned()),
        ..Default::default()
    }
}

/// A user as the directory service would build it: `create::plan`, then hashing and sealing.
fn user_from(input: CreateUserInput) -> User {
    let now = clock::now();
    let p = create::plan(input, Creator::Auto, false, &DirectoryConfig::default(), now).expect("a valid test user");
    let password = match p.password {
        PasswordPlan::Chosen(s) | PasswordPlan::Generated(s) => s,
    };
    User {
        uuid: p.uuid,
        username: p.username,
        email: p.email,
        display_name: p.display_name,
        first_name: p.first_name,
        middle_name: p.middle_name,
        last_name: p.last_name,
        is_active: true,
        is_internal: false,
        is_super_user: p.is_super_user,
        is_approval_needed: p.is_approval_needed,
        approval_status: p.approval_status,
        approval_status_mod_by: p.approval_status_mod_by,
        approval_status_mod_time: now,
        is_locked: p.is_locked,
        locked_time: p.is_locked.then_some(now),
        locked_by: p.is_locked.then(|| "cli".to_owned()),
        password_hash: hash_generated(&password),
        password_is_set: true,
        password_must_change: p.password_must_change,
        password_last_set: p.password_last_set,
        password_expiry: p.password_expiry,
        sign_up_status: p.sign_up_status,
        sign_up_time: p.sign_up_time,
        is_totp_enabled: p.is_totp_enabled,
        totp_key_sealed: format!("sealed:{}", p.totp_key),
        totp_label: p.totp_label,
        totp_last_step: None,
        updated_at: now,
    }
}

fn new_user(username: &str) -> User {
    user_from(input(username))
}

/// `User` has no `PartialEq`; its `Debug` form shows every field (timestamps with offset).
fn assert_same_user(got: &User, want: &User, what: &str) {
    assert_eq!(format!("{got:#?}"), format!("{want:#?}"), "{what}");
}

async fn insert(store: &Store, label: &str, user: &User) {
    store
        .insert_user(user, &create_entry(user))
        .await
        .unwrap_or_else(|e| panic!("{label}: insert_user {}: {e}", user.username));
}

async fn load(store: &Store, label: &str, uuid: Uuid) -> Option<(User, i64)> {
    store
        .user_by_uuid(uuid)
        .await
        .unwrap_or_else(|e| panic!("{label}: user_by_uuid: {e}"))
}

async fn load_some(store: &Store, label: &str, uuid: Uuid) -> (User, i64) {
    load(store, label, uuid)
        .await
        .unwrap_or_else(|| panic!("{label}: user {uuid} should exist"))
}

async fn audit_total(store: &Store, label: &str) -> i64 {
    store
        .list_audit(&AuditQuery {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{label}: list_audit: {e}"))
        .0
}

async fn newest_audit(store: &Store, label: &str) -> AuditRecord {
    let (_, mut page) = store
        .list_audit(&AuditQuery {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{label}: list_audit: {e}"));
    page.pop()
        .unwrap_or_else(|| panic!("{label}: the audit log should not be empty"))
}

async fn user_count(store: &Store, label: &str) -> i64 {
    store
        .count_users()
        .await
        .unwrap_or_else(|e| panic!("{label}: count_users: {e}"))
}

/// A session of `user` created (and last seen) at `created_at`, and a random token hash.
fn session(user: &User, created_at: OffsetDateTime, expires_at: OffsetDateTime) -> (SessionRecord, [u8; 32]) {
    let record = SessionRecord {
        id: Uuid::new_v4(),
        user_uuid: user.uuid,
        created_at,
        last_seen_at: created_at,
        expires_at,
        current_app: Some("muster".into()),
        remote_addr: Some("192.0.2.7".into()),
        user_agent: Some("conformance/1.0".into()),
    };
    (record, random_bytes::<32>())
}

/// A session that is valid for the next hour.
fn fresh_session(user: &User) -> (SessionRecord, [u8; 32]) {
    let now = clock::now();
    session(user, now, now + Duration::hours(1))
}

/// The guard a login would pass: the user's current version, no TOTP step.
async fn guard_for(store: &Store, label: &str, user: Uuid) -> LoginGuard {
    let version = store
        .user_by_uuid(user)
        .await
        .unwrap_or_else(|e| panic!("{label}: user_by_uuid: {e}"))
        .map(|(_, v)| v)
        .unwrap_or(1);
    LoginGuard {
        user_version: version,
        totp_step: None,
    }
}

async fn login(store: &Store, label: &str, s: &SessionRecord, hash: &[u8; 32]) {
    store
        .open_session(
            s,
            hash,
            guard_for(store, label, s.user_uuid).await,
            None,
            &ThrottleReset::clearing(&["account:nobody"]),
            &entry(actions::SESSION_LOGIN, Some(s.user_uuid.to_string())),
        )
        .await
        .unwrap_or_else(|e| panic!("{label}: open_session: {e}"));
}

async fn by_token(store: &Store, label: &str, hash: &[u8; 32]) -> Option<(SessionRecord, User, i64)> {
    store
        .session_by_token_hash(hash)
        .await
        .unwrap_or_else(|e| panic!("{label}: session_by_token_hash: {e}"))
}

/// Session ids of `user` (unexpired at `now`), in the order `list_sessions` gives them.
async fn session_ids(store: &Store, label: &str, user: Uuid, now: OffsetDateTime) -> Vec<Uuid> {
    store
        .list_sessions(user, now)
        .await
        .unwrap_or_else(|e| panic!("{label}: list_sessions: {e}"))
        .into_iter()
        .map(|s| s.id)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Connecting and migrating
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn migrate_is_idempotent() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let expected = if label == "sqlite" {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        assert_eq!(store.backend(), expected, "{label}: backend");
        store
            .migrate()
            .await
            .unwrap_or_else(|e| panic!("{label}: second migrate: {e}"));
        store
            .migrate()
            .await
            .unwrap_or_else(|e| panic!("{label}: third migrate: {e}"));

        // The migrated schema works after repeated migrations, and survives a reconnect
        // (another node, or a restart) that migrates once more.
        let user = new_user("alice");
        insert(&store, label, &user).await;
        store.close().await;

        let again = open(&db).await;
        again
            .migrate()
            .await
            .unwrap_or_else(|e| panic!("{label}: migrate after reconnect: {e}"));
        again.ping().await.unwrap_or_else(|e| panic!("{label}: ping: {e}"));
        assert_eq!(
            user_count(&again, label).await,
            1,
            "{label}: data kept across re-migration"
        );
        assert_eq!(
            audit_total(&again, label).await,
            1,
            "{label}: audit kept across re-migration"
        );
        let (got, version) = load_some(&again, label, user.uuid).await;
        assert_same_user(&got, &user, &format!("{label}: user after reconnect"));
        assert_eq!(version, 1, "{label}: version");
        again.close().await;
    }
}

#[tokio::test]
async fn postgres_runs_when_configured() {
    let configured = std::env::var(muster_store::testing::PG_ENV).is_ok_and(|v| !v.is_empty());
    let labels: Vec<&str> = TestDb::all().await.iter().map(|db| db.label).collect();
    let want: &[&str] = if configured {
        &["sqlite", "postgres"]
    } else {
        &["sqlite"]
    };
    assert_eq!(labels, want, "the databases this suite runs against");
}

#[tokio::test]
async fn connect_refuses_unknown_urls() {
    for url in ["mysql://localhost/x", "", "sqlite", "http://example.org"] {
        let r = Store::connect(url, &StoreOptions::default()).await;
        assert!(matches!(r, Err(StoreError::UnsupportedUrl)), "{url:?}: {r:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by several tables' suites
// ---------------------------------------------------------------------------------------------

async fn sequence_all(store: &Store, label: &str) -> u64 {
    let mut total = 0;
    loop {
        let n = store
            .sequence_events(1000)
            .await
            .unwrap_or_else(|e| panic!("{label}: sequence_events: {e}"));
        if n == 0 {
            return total;
        }
        total += n;
    }
}

fn with_event(e: AuditEntry, stream: &'static str, subject: &str) -> AuditEntry {
    e.with_event(
        stream,
        "test.happened",
        subject,
        serde_json::json!({ "subject": subject }),
    )
}

/// Counts one attempt on each key as the directory does: read the counter, decide (a counter
/// whose last failure is before its window start restarts at one), compare-and-swap, and
/// read again after a lost race.
async fn count_failures(store: &Store, keys: &[(&str, OffsetDateTime)], now: OffsetDateTime) -> Result<(), StoreError> {
    for (key, window_start) in keys {
        loop {
            let state = store.throttle_state(key).await?;
            let next = match state {
                Some(s) if s.last_failure >= *window_start => ThrottleState {
                    failures: s.failures + 1,
                    last_failure: now,
                },
                _ => ThrottleState {
                    failures: 1,
                    last_failure: now,
                },
            };
            if store.throttle_cas(key, state, next).await? {
                break;
            }
        }
    }
    Ok(())
}
