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
// 2. Users: round trip
// ---------------------------------------------------------------------------------------------

/// Sets the user's eight flags from `code`: flag `i` is bit `k` of `i`. Across k = 0, 1, 2 every
/// pair of flags differs in at least one user, so two swapped boolean columns cannot go unseen.
fn set_flags(u: &mut User, k: u32) {
    let bit = |i: u32| (i >> k) & 1 == 1;
    u.is_active = bit(0);
    u.is_internal = bit(1);
    u.is_super_user = bit(2);
    u.is_approval_needed = bit(3);
    u.is_locked = bit(4);
    u.password_is_set = bit(5);
    u.password_must_change = bit(6);
    u.is_totp_enabled = bit(7);
}

fn round_trip_users() -> Vec<User> {
    let now = clock::now();

    // Every optional field present, every text field distinct, every timestamp distinct.
    let mut full = user_from(CreateUserInput {
        username: Some("Élodie.Dupont".into()),
        email: Some("Elodie.Dupont@Example.ORG".into()),
        display_name: Some("Lodie « D »".into()),
        first_name: Some("Élodie".into()),
        middle_name: Some("Marie".into()),
        last_name: Some("Dupont".into()),
        is_locked: Some(true),
        password_must_change: Some(true),
        sign_up_status: Some(SignUpStatus::BeforeConfirmation),
        is_totp_enabled: Some(true),
        totp_label: Some("Work phone".into()),
        ..Default::default()
    });
    set_flags(&mut full, 0);
    full.approval_status = ApprovalStatus::Rejected;
    full.approval_status_mod_by = "musr0h7y0kc2xg6v3q9mb1y2r5t8wd".into();
    full.approval_status_mod_time = now - Duration::days(1);
    full.locked_time = Some(now - Duration::hours(2));
    full.locked_by = Some("musr1111111111111111111111111".into());
    full.password_last_set = now - Duration::minutes(3);
    full.password_expiry = now + Duration::days(730);
    full.sign_up_time = now - Duration::days(5);
    full.totp_last_step = Some(56_789_012_345);
    full.updated_at = now;

    // Every optional field absent.
    let mut bare = new_user("x");
    set_flags(&mut bare, 1);
    assert!(bare.email.is_none() && bare.display_name.is_none() && bare.first_name.is_none());
    bare.locked_time = None;
    bare.locked_by = None;
    bare.totp_last_step = None;

    // Fixed timestamps with sub-second digits, one before the Unix epoch.
    let mut odd = user_from(CreateUserInput {
        username: Some("odd_one%".into()),
        last_name: Some("O'Brien; DROP TABLE users; --".into()),
        ..Default::default()
    });
    set_flags(&mut odd, 2);
    odd.approval_status = ApprovalStatus::BeforeDecision;
    odd.approval_status_mod_time = datetime!(1999-12-31 23:59:59.999999 UTC);
    odd.locked_time = Some(datetime!(2038-01-19 03:14:08.000001 UTC));
    odd.locked_by = Some(String::new());
    odd.password_last_set = datetime!(2000-02-29 12:00:00.5 UTC);
    odd.password_expiry = datetime!(2999-12-31 00:00:00 UTC);
    odd.sign_up_time = datetime!(1969-07-20 20:17:40.123456 UTC);
    odd.updated_at = datetime!(2024-06-01 00:00:00.000007 UTC);
    odd.totp_last_step = Some(0);
    odd.totp_label = String::new();

    vec![full, bare, odd]
}

#[tokio::test]
async fn insert_user_round_trips_every_field() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let users = round_trip_users();
        for u in &users {
            insert(&store, label, u).await;
        }
        assert_eq!(
            user_count(&store, label).await,
            users.len() as i64,
            "{label}: count_users"
        );
        for u in &users {
            let what = format!("{label}: {}", u.username);
            let (got, version) = load_some(&store, label, u.uuid).await;
            assert_same_user(&got, u, &format!("{what} by uuid"));
            assert_eq!(version, 1, "{what}: version starts at 1");

            for name in [u.username.clone(), u.username.to_uppercase(), u.username.to_lowercase()] {
                let (got, version) = store
                    .user_by_username(&name)
                    .await
                    .unwrap_or_else(|e| panic!("{what}: user_by_username: {e}"))
                    .unwrap_or_else(|| panic!("{what}: user_by_username({name:?}) should find the user"));
                assert_same_user(&got, u, &format!("{what} by username {name:?}"));
                assert_eq!(version, 1, "{what}: version by username");
            }
        }
        assert!(
            load(&store, label, Uuid::new_v4()).await.is_none(),
            "{label}: unknown uuid"
        );
        let none = store
            .user_by_username("nobody")
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        assert!(none.is_none(), "{label}: unknown username");
        let none = store
            .user_by_username("odd_one_")
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        assert!(
            none.is_none(),
            "{label}: username lookup is exact, `%` is not a wildcard"
        );

        // insert_user wrote one audit record per user, with the entry's fields.
        let (total, records) = store
            .list_audit(&AuditQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{label}: list_audit: {e}"));
        assert_eq!(total, 3, "{label}: one audit record per insert");
        let targets: Vec<_> = records.iter().map(|r| r.target.clone()).collect();
        let want: Vec<_> = users.iter().rev().map(|u| Some(u.uuid.to_string())).collect();
        assert_eq!(targets, want, "{label}: audit targets, newest first");
        assert!(
            records
                .iter()
                .all(|r| r.action == actions::USER_CREATE && r.outcome == "success"),
            "{label}"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn inserting_the_same_uuid_twice_fails_and_writes_nothing() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let first = new_user("first");
        insert(&store, label, &first).await;
        let mut clash = new_user("second");
        clash.uuid = first.uuid;
        let r = store.insert_user(&clash, &create_entry(&clash)).await;
        assert!(
            r.is_err(),
            "{label}: a second user with the same uuid must be refused: {r:?}"
        );
        assert_eq!(
            audit_total(&store, label).await,
            1,
            "{label}: no audit for the refused insert"
        );
        assert_eq!(user_count(&store, label).await, 1, "{label}: no second row");
        let (got, _) = load_some(&store, label, first.uuid).await;
        assert_same_user(&got, &first, &format!("{label}: first user untouched"));
        store.close().await;
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Usernames are unique, case-insensitively
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn usernames_are_unique_case_insensitively() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let alice = new_user("alice");
        insert(&store, label, &alice).await;
        let elodie = new_user("élodie");
        insert(&store, label, &elodie).await;
        let audits = audit_total(&store, label).await;

        for name in ["Alice", "ALICE", "alice", "ÉLODIE", "Élodie"] {
            let dup = new_user(name);
            let r = store.insert_user(&dup, &create_entry(&dup)).await;
            assert!(
                matches!(r, Err(StoreError::Duplicate("username"))),
                "{label}: inserting {name:?}: {r:?}"
            );
            assert_eq!(
                audit_total(&store, label).await,
                audits,
                "{label}: {name:?}: no audit record"
            );
            assert!(
                load(&store, label, dup.uuid).await.is_none(),
                "{label}: {name:?}: no user row"
            );
        }
        assert_eq!(user_count(&store, label).await, 2, "{label}: count_users");
        let (got, _) = store
            .user_by_username("ALICE")
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"))
            .unwrap_or_else(|| panic!("{label}: alice should be found"));
        assert_same_user(&got, &alice, &format!("{label}: the original alice"));

        // A different name still goes in.
        insert(&store, label, &new_user("alice2")).await;
        assert_eq!(user_count(&store, label).await, 3, "{label}: count_users");
        store.close().await;
    }
}

// ---------------------------------------------------------------------------------------------
// 4. update_user
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn update_user_is_optimistic_and_atomic() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let alice = new_user("alice");
        let bob = new_user("bob");
        insert(&store, label, &alice).await;
        insert(&store, label, &bob).await;
        let (a1, a1_hash) = fresh_session(&alice);
        let (a2, a2_hash) = fresh_session(&alice);
        let (b1, b1_hash) = fresh_session(&bob);
        for (s, h) in [(&a1, &a1_hash), (&a2, &a2_hash), (&b1, &b1_hash)] {
            login(&store, label, s, h).await;
        }
        let now = clock::now();

        // At the current version: written, version bumped, audit written, sessions kept.
        let mut v2 = alice.clone();
        v2.email = Some("alice@example.org".into());
        v2.display_name = Some("Alice L.".into());
        v2.first_name = Some("Alice".into());
        v2.is_locked = true;
        v2.locked_time = Some(now);
        v2.locked_by = Some("musradmin".into());
        v2.approval_status = ApprovalStatus::Rejected;
        v2.sign_up_status = SignUpStatus::BeforeConfirmation;
        v2.totp_last_step = Some(7);
        v2.updated_at = now + Duration::seconds(1);
        let audits = audit_total(&store, label).await;
        let ok = store
            .update_user(
                &v2,
                1,
                false,
                &entry(actions::USER_UPDATE, Some(alice.uuid.to_string())),
            )
            .await
            .unwrap_or_else(|e| panic!("{label}: update_user: {e}"));
        assert!(ok, "{label}: update at the current version succeeds");
        let (got, version) = load_some(&store, label, alice.uuid).await;
        assert_same_user(&got, &v2, &format!("{label}: updated user"));
        assert_eq!(version, 2, "{label}: version bumped");
        assert_eq!(audit_total(&store, label).await, audits + 1, "{label}: update audited");
        let rec = newest_audit(&store, label).await;
        assert_eq!(rec.action, actions::USER_UPDATE, "{label}: audit action");
        assert_eq!(rec.target, Some(alice.uuid.to_string()), "{label}: audit target");
        assert_eq!(
            session_ids(&store, label, alice.uuid, now).await.len(),
            2,
            "{label}: sessions kept"
        );

        // At a stale version: nothing written, no audit, and no sessions revoked.
        let mut stale = v2.clone();
        stale.display_name = Some("stale".into());
        let audits = audit_total(&store, label).await;
        for revoke in [false, true] {
            let ok = store
                .update_user(&stale, 1, revoke, &entry(actions::USER_UPDATE, None))
                .await
                .unwrap_or_else(|e| panic!("{label}: stale update_user: {e}"));
            assert!(
                !ok,
                "{label}: update at a stale version (revoke {revoke}) returns false"
            );
            let (got, version) = load_some(&store, label, alice.uuid).await;
            assert_same_user(&got, &v2, &format!("{label}: unchanged after stale update"));
            assert_eq!(version, 2, "{label}: version unchanged after stale update");
            assert_eq!(
                audit_total(&store, label).await,
                audits,
                "{label}: stale update not audited"
            );
            assert_eq!(
                session_ids(&store, label, alice.uuid, now).await.len(),
                2,
                "{label}: stale update revokes nothing"
            );
        }
        // A future version is as stale as a past one.
        let ok = store
            .update_user(&stale, 3, false, &entry(actions::USER_UPDATE, None))
            .await;
        assert!(
            !ok.unwrap_or_else(|e| panic!("{label}: {e}")),
            "{label}: future version refused"
        );

        // With revoke_sessions: the user's sessions go in the same call; others' stay.
        let mut v3 = v2.clone();
        v3.password_hash = hash_generated("new password");
        v3.password_last_set = now + Duration::seconds(2);
        let ok = store
            .update_user(
                &v3,
                2,
                true,
                &entry(actions::USER_SET_PASSWORD, Some(alice.uuid.to_string())),
            )
            .await
            .unwrap_or_else(|e| panic!("{label}: update_user with revoke: {e}"));
        assert!(ok, "{label}: update with revoke succeeds");
        let (got, version) = load_some(&store, label, alice.uuid).await;
        assert_same_user(&got, &v3, &format!("{label}: user after revoke"));
        assert_eq!(version, 3, "{label}: version after revoke");
        assert!(
            session_ids(&store, label, alice.uuid, now).await.is_empty(),
            "{label}: alice's sessions revoked"
        );
        assert!(by_token(&store, label, &a1_hash).await.is_none(), "{label}: a1 gone");
        assert!(by_token(&store, label, &a2_hash).await.is_none(), "{label}: a2 gone");
        assert_eq!(
            session_ids(&store, label, bob.uuid, now).await,
            vec![b1.id],
            "{label}: bob's session kept"
        );
        assert_eq!(
            audit_total(&store, label).await,
            audits + 1,
            "{label}: revoke update audited once"
        );

        // Renaming onto another user's name (in another case): Duplicate, nothing changes.
        let audits = audit_total(&store, label).await;
        let mut rename = v3.clone();
        rename.username = "BOB".into();
        rename.display_name = Some("renamed".into());
        let r = store
            .update_user(&rename, 3, true, &entry(actions::USER_UPDATE, None))
            .await;
        assert!(
            matches!(r, Err(StoreError::Duplicate("username"))),
            "{label}: rename to BOB: {r:?}"
        );
        let (got, version) = load_some(&store, label, alice.uuid).await;
        assert_same_user(&got, &v3, &format!("{label}: unchanged after refused rename"));
        assert_eq!(version, 3, "{label}: version unchanged after refused rename");
        assert_eq!(
            audit_total(&store, label).await,
            audits,
            "{label}: refused rename not audited"
        );
        let (got_bob, bob_version) = load_some(&store, label, bob.uuid).await;
        assert_same_user(&got_bob, &bob, &format!("{label}: bob untouched"));
        assert_eq!(bob_version, 1, "{label}: bob's version");
        assert_eq!(
            session_ids(&store, label, bob.uuid, now).await,
            vec![b1.id],
            "{label}: bob's session kept"
        );

        // Renaming to one's own name in another case is not a conflict.
        let mut recased = v3.clone();
        recased.username = "ALICE".into();
        let ok = store
            .update_user(&recased, 3, false, &entry(actions::USER_UPDATE, None))
            .await
            .unwrap_or_else(|e| panic!("{label}: recase: {e}"));
        assert!(ok, "{label}: recasing one's own username succeeds");
        let (got, version) = store
            .user_by_username("alice")
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"))
            .unwrap_or_else(|| panic!("{label}: found by the old spelling"));
        assert_same_user(&got, &recased, &format!("{label}: recased"));
        assert_eq!(version, 4, "{label}: version after recase");

        // A user that does not exist is not updated, and nothing is audited.
        let audits = audit_total(&store, label).await;
        let ghost = new_user("ghost");
        let ok = store
            .update_user(&ghost, 1, true, &entry(actions::USER_UPDATE, None))
            .await
            .unwrap_or_else(|e| panic!("{label}: ghost update: {e}"));
        assert!(!ok, "{label}: updating a missing user returns false");
        assert_eq!(
            audit_total(&store, label).await,
            audits,
            "{label}: missing-user update not audited"
        );
        assert_eq!(user_count(&store, label).await, 2, "{label}: no row created");
        store.close().await;
    }
}

#[tokio::test]
async fn update_user_keeping_session_revokes_the_others() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let alice = new_user("alice");
        let bob = new_user("bob");
        insert(&store, label, &alice).await;
        insert(&store, label, &bob).await;
        let mut a = Vec::new();
        for _ in 0..3 {
            let (s, h) = fresh_session(&alice);
            login(&store, label, &s, &h).await;
            a.push((s, h));
        }
        let (b1, b1_hash) = fresh_session(&bob);
        login(&store, label, &b1, &b1_hash).await;
        let now = clock::now();
        let keep = a[1].0.id;
        let mut changed = alice.clone();
        changed.password_hash = hash_generated("changed");
        changed.password_last_set = now;
        changed.updated_at = now;

        // At a stale version: false, nothing written, nothing revoked, nothing audited.
        let audits = audit_total(&store, label).await;
        let ok = store
            .update_user_keeping_session(&changed, 2, keep, &entry(actions::USER_CHANGE_PASSWORD, None))
            .await
            .unwrap_or_else(|e| panic!("{label}: stale update_user_keeping_session: {e}"));
        assert!(!ok, "{label}: stale version refused");
        let (got, version) = load_some(&store, label, alice.uuid).await;
        assert_same_user(&got, &alice, &format!("{label}: unchanged after stale update"));
        assert_eq!(version, 1, "{label}: version unchanged");
        assert_eq!(
            session_ids(&store, label, alice.uuid, now).await.len(),
            3,
            "{label}: nothing revoked"
        );
        assert_eq!(audit_total(&store, label).await, audits, "{label}: nothing audited");

        // At the current version: written, and every session of the user but `keep` ends.
        let ok = store
            .update_user_keeping_session(&changed, 1, keep, &entry(actions::USER_CHANGE_PASSWORD, None))
            .await
            .unwrap_or_else(|e| panic!("{label}: update_user_keeping_session: {e}"));
        assert!(ok, "{label}: current version accepted");
        let (got, version) = load_some(&store, label, alice.uuid).await;
        assert_same_user(&got, &changed, &format!("{label}: user written"));
        assert_eq!(version, 2, "{label}: version bumped");
        assert_eq!(
            session_ids(&store, label, alice.uuid, now).await,
            vec![keep],
            "{label}: only `keep` left"
        );
        assert!(by_token(&store, label, &a[0].1).await.is_none(), "{label}: a0 revoked");
        assert!(by_token(&store, label, &a[2].1).await.is_none(), "{label}: a2 revoked");
        assert_eq!(
            session_ids(&store, label, bob.uuid, now).await,
            vec![b1.id],
            "{label}: bob's session kept"
        );
        assert_eq!(audit_total(&store, label).await, audits + 1, "{label}: audited once");
        assert_eq!(
            newest_audit(&store, label).await.action,
            actions::USER_CHANGE_PASSWORD,
            "{label}: audit action"
        );

        // Keeping a session of another user protects none of this user's, and spares bob's.
        let ok = store
            .update_user_keeping_session(&changed, 2, b1.id, &entry(actions::USER_CHANGE_PASSWORD, None))
            .await
            .unwrap_or_else(|e| panic!("{label}: update_user_keeping_session: {e}"));
        assert!(ok, "{label}: second update accepted");
        assert!(
            session_ids(&store, label, alice.uuid, now).await.is_empty(),
            "{label}: all revoked"
        );
        assert_eq!(
            session_ids(&store, label, bob.uuid, now).await,
            vec![b1.id],
            "{label}: bob's session kept"
        );

        // A rename onto another name is Duplicate, and revokes nothing.
        let (s, h) = fresh_session(&alice);
        login(&store, label, &s, &h).await;
        let mut rename = changed.clone();
        rename.username = "Bob".into();
        let audits = audit_total(&store, label).await;
        let r = store
            .update_user_keeping_session(&rename, 3, Uuid::new_v4(), &entry(actions::USER_UPDATE, None))
            .await;
        assert!(
            matches!(r, Err(StoreError::Duplicate("username"))),
            "{label}: rename to Bob: {r:?}"
        );
        assert_eq!(
            session_ids(&store, label, alice.uuid, now).await,
            vec![s.id],
            "{label}: nothing revoked"
        );
        assert_eq!(audit_total(&store, label).await, audits, "{label}: nothing audited");
        let (_, version) = load_some(&store, label, alice.uuid).await;
        assert_eq!(version, 3, "{label}: version unchanged");
        store.close().await;
    }
}

// ---------------------------------------------------------------------------------------------
// 5. delete_user
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn delete_user_cascades_to_sessions() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let alice = new_user("alice");
        let bob = new_user("bob");
        insert(&store, label, &alice).await;
        insert(&store, label, &bob).await;
        let (a1, a1_hash) = fresh_session(&alice);
        let (a2, a2_hash) = fresh_session(&alice);
        let (b1, b1_hash) = fresh_session(&bob);
        for (s, h) in [(&a1, &a1_hash), (&a2, &a2_hash), (&b1, &b1_hash)] {
            login(&store, label, s, h).await;
        }
        let now = clock::now();

        let audits = audit_total(&store, label).await;
        let gone = store
            .delete_user(alice.uuid, &entry(actions::USER_DELETE, Some(alice.uuid.to_string())))
            .await
            .unwrap_or_else(|e| panic!("{label}: delete_user: {e}"));
        assert!(gone, "{label}: delete_user returns true");
        assert!(
            load(&store, label, alice.uuid).await.is_none(),
            "{label}: alice gone by uuid"
        );
        let none = store
            .user_by_username("alice")
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        assert!(none.is_none(), "{label}: alice gone by username");
        assert!(
            by_token(&store, label, &a1_hash).await.is_none(),
            "{label}: a1 deleted with its user"
        );
        assert!(
            by_token(&store, label, &a2_hash).await.is_none(),
            "{label}: a2 deleted with its user"
        );
        assert!(
            session_ids(&store, label, alice.uuid, now).await.is_empty(),
            "{label}: no sessions left"
        );
        assert_eq!(
            session_ids(&store, label, bob.uuid, now).await,
            vec![b1.id],
            "{label}: bob's session kept"
        );
        assert!(
            by_token(&store, label, &b1_hash).await.is_some(),
            "{label}: bob's session resolves"
        );
        assert_eq!(user_count(&store, label).await, 1, "{label}: one user left");
        assert_eq!(audit_total(&store, label).await, audits + 1, "{label}: delete audited");
        let rec = newest_audit(&store, label).await;
        assert_eq!(rec.action, actions::USER_DELETE, "{label}: audit action");

        // Purging finds nothing the cascade should have removed.
        let purged = store
            .purge_sessions(now + Duration::days(1), now - Duration::days(1))
            .await
            .unwrap_or_else(|e| panic!("{label}: purge_sessions: {e}"));
        assert_eq!(purged, 1, "{label}: only bob's session remained to purge");

        // Deleting again, or deleting a user that never existed: false, no audit.
        for uuid in [alice.uuid, Uuid::new_v4()] {
            let gone = store
                .delete_user(uuid, &entry(actions::USER_DELETE, Some(uuid.to_string())))
                .await
                .unwrap_or_else(|e| panic!("{label}: delete_user missing: {e}"));
            assert!(!gone, "{label}: deleting a missing user returns false");
            assert_eq!(
                audit_total(&store, label).await,
                audits + 1,
                "{label}: missing delete not audited"
            );
        }
        assert_eq!(user_count(&store, label).await, 1, "{label}: bob still there");

        // The name is free again.
        insert(&store, label, &new_user("Alice")).await;
        store.close().await;
    }
}

// ---------------------------------------------------------------------------------------------
// 6. consume_totp_step
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn totp_steps_are_used_once_and_in_order() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let alice = new_user("alice");
        let bob = new_user("bob");
        insert(&store, label, &alice).await;
        insert(&store, label, &bob).await;
        let audits = audit_total(&store, label).await;
        let consume = |uuid: Uuid, step: i64| {
            let store = store.clone();
            async move {
                store
                    .consume_totp_step(uuid, step)
                    .await
                    .unwrap_or_else(|e| panic!("{label}: consume_totp_step: {e}"))
            }
        };

        assert!(consume(alice.uuid, 100).await, "{label}: first use of step 100");
        assert!(!consume(alice.uuid, 100).await, "{label}: step 100 replayed");
        assert!(!consume(alice.uuid, 99).await, "{label}: earlier step 99");
        assert!(consume(alice.uuid, 101).await, "{label}: next step 101");
        assert!(!consume(alice.uuid, 100).await, "{label}: step 100 after 101");
        assert!(!consume(alice.uuid, 101).await, "{label}: step 101 replayed");
        let (got, version) = load_some(&store, label, alice.uuid).await;
        assert_eq!(got.totp_last_step, Some(101), "{label}: last step stored");
        let mut want = alice.clone();
        want.totp_last_step = Some(101);
        assert_same_user(&got, &want, &format!("{label}: only totp_last_step changed"));
        assert_eq!(
            version, 3,
            "{label}: each spent step bumps the version (so no older copy of the row can put an earlier step back); refusals do not"
        );

        // Steps are per user.
        assert!(consume(bob.uuid, 100).await, "{label}: bob's step 100 is his own");
        assert!(!consume(bob.uuid, 0).await, "{label}: bob's step 0 after 100");
        // Unknown users consume nothing.
        assert!(!consume(Uuid::new_v4(), 5).await, "{label}: unknown user");
        assert_eq!(
            audit_total(&store, label).await,
            audits,
            "{label}: consume_totp_step writes no audit"
        );

        // A user whose stored step is 0 (not NULL) still refuses 0 and accepts 1.
        let mut zero = new_user("zero");
        zero.totp_last_step = Some(0);
        insert(&store, label, &zero).await;
        assert!(!consume(zero.uuid, 0).await, "{label}: step 0 stored already");
        assert!(!consume(zero.uuid, -1).await, "{label}: negative step");
        assert!(consume(zero.uuid, 1).await, "{label}: step 1 after 0");
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_totp_consumers_have_exactly_one_winner() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let alice = new_user("alice");
        insert(&store, label, &alice).await;
        for round in 0..5_i64 {
            let step = 1_000 + round;
            let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(8));
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let store = store.clone();
                    let barrier = barrier.clone();
                    tokio::spawn(async move {
                        barrier.wait().await;
                        store.consume_totp_step(alice.uuid, step).await
                    })
                })
                .collect();
            let mut winners = 0;
            for t in tasks {
                let won = t
                    .await
                    .unwrap_or_else(|e| panic!("{label}: task: {e}"))
                    .unwrap_or_else(|e| panic!("{label}: consume_totp_step: {e}"));
                winners += usize::from(won);
            }
            assert_eq!(
                winners, 1,
                "{label}: round {round}: exactly one of 8 concurrent consumers wins step {step}"
            );
            let (got, _) = load_some(&store, label, alice.uuid).await;
            assert_eq!(got.totp_last_step, Some(step), "{label}: round {round}: step stored");
        }
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_writers_do_not_lose_or_duplicate_work() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let alice = new_user("alice");
        insert(&store, label, &alice).await;
        let audits = audit_total(&store, label).await;

        // Eight updates at the same version: exactly one wins, and only it is audited.
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (store, barrier) = (store.clone(), barrier.clone());
                let mut u = alice.clone();
                u.display_name = Some(format!("writer {i}"));
                tokio::spawn(async move {
                    barrier.wait().await;
                    let won = store
                        .update_user(&u, 1, false, &entry(actions::USER_UPDATE, None))
                        .await;
                    (u, won)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            let (u, won) = t.await.unwrap_or_else(|e| panic!("{label}: task: {e}"));
            if won.unwrap_or_else(|e| panic!("{label}: update_user: {e}")) {
                winners.push(u);
            }
        }
        assert_eq!(winners.len(), 1, "{label}: exactly one concurrent update wins");
        let (got, version) = load_some(&store, label, alice.uuid).await;
        assert_same_user(&got, &winners[0], &format!("{label}: the winner's write is stored"));
        assert_eq!(version, 2, "{label}: one version bump");
        assert_eq!(
            audit_total(&store, label).await,
            audits + 1,
            "{label}: only the winner audited"
        );

        // Eight inserts of one name in different cases: exactly one goes in.
        let names = ["bob", "Bob", "BOB", "bOb", "boB", "BOb", "bOB", "BoB"];
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(names.len()));
        let tasks: Vec<_> = names
            .iter()
            .map(|name| {
                let (store, barrier) = (store.clone(), barrier.clone());
                let u = new_user(name);
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.insert_user(&u, &create_entry(&u)).await
                })
            })
            .collect();
        let (mut ok, mut dup) = (0, 0);
        for t in tasks {
            match t.await.unwrap_or_else(|e| panic!("{label}: task: {e}")) {
                Ok(()) => ok += 1,
                Err(StoreError::Duplicate("username")) => dup += 1,
                Err(e) => panic!("{label}: concurrent insert_user: unexpected error {e:?}"),
            }
        }
        assert_eq!((ok, dup), (1, 7), "{label}: one insert, seven duplicates");
        assert_eq!(user_count(&store, label).await, 2, "{label}: two users");
        assert_eq!(
            audit_total(&store, label).await,
            audits + 2,
            "{label}: one more audit record"
        );

        // Eight concurrent failures on one new key: all eight counted.
        let now = clock::now();
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    count_failures(&store, &[("account:carol", now - Duration::minutes(15))], now).await
                })
            })
            .collect();
        for t in tasks {
            t.await
                .unwrap_or_else(|e| panic!("{label}: task: {e}"))
                .unwrap_or_else(|e| panic!("{label}: concurrent count_failures: {e}"));
        }
        let state = store
            .throttle_state("account:carol")
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(state.map(|s| s.failures), Some(8), "{label}: no failure lost");
        assert_eq!(
            audit_total(&store, label).await,
            audits + 2,
            "{label}: counting attempts writes no audit of its own"
        );
        store.close().await;
    }
}

// ---------------------------------------------------------------------------------------------
// 7. search_users
// ---------------------------------------------------------------------------------------------

/// Six users with names chosen to catch wildcard and case mistakes.
fn search_fixture() -> Vec<User> {
    let base = datetime!(2024-01-01 00:00:00 UTC);
    let mk = |username: &str, f: &dyn Fn(&mut CreateUserInput), signed_up: i64| {
        let mut i = input(username);
        f(&mut i);
        let mut u = user_from(i);
        u.sign_up_time = base + Duration::seconds(signed_up);
        u
    };
    let alice = mk(
        "alice",
        &|i| {
            i.first_name = Some("Alice".into());
            i.last_name = Some("Liddell".into());
            i.email = Some("Alice@Example.org".into());
        },
        3,
    );
    let mut bob = mk(
        "Bob",
        &|i| {
            i.first_name = Some("Robert".into());
            i.middle_name = Some("Bobby".into());
            i.last_name = Some("Tables".into());
            i.display_name = Some("Little Bobby".into());
            i.email = Some("bob@example.org".into());
        },
        1,
    );
    bob.approval_status = ApprovalStatus::Rejected;
    bob.is_approval_needed = true;
    let mut carol = mk(
        "carol",
        &|i| {
            i.display_name = Some("100% Carol".into());
            i.first_name = Some("Carol_Ann".into());
        },
        5,
    );
    carol.approval_status = ApprovalStatus::BeforeDecision;
    carol.is_approval_needed = true;
    let dave = mk(
        "dave",
        &|i| {
            i.display_name = Some("100 Dave".into());
            i.first_name = Some("CarolXAnn".into());
            i.email = Some("dave@example.org".into());
            i.sign_up_status = Some(SignUpStatus::BeforeConfirmation);
        },
        1,
    );
    let elodie = mk(
        "elodie",
        &|i| {
            i.first_name = Some("Élodie".into());
            i.last_name = Some("Dupont".into());
            i.sign_up_status = Some(SignUpStatus::BeforeConfirmation);
            i.is_locked = Some(true);
        },
        0,
    );
    let frank = mk(
        "frank",
        &|i| {
            i.display_name = Some("back\\slash".into());
            i.is_locked = Some(true);
        },
        4,
    );
    vec![alice, bob, carol, dave, elodie, frank]
}

async fn search(store: &Store, label: &str, q: &UserQuery) -> (i64, Vec<String>) {
    let (total, users) = store
        .search_users(q)
        .await
        .unwrap_or_else(|e| panic!("{label}: search_users {q:?}: {e}"));
    (total, users.into_iter().map(|u| u.username).collect())
}

/// All matches of `q` (one large page).
async fn matches(store: &Store, label: &str, q: UserQuery) -> Vec<String> {
    let q = UserQuery {
        limit: 100,
        offset: 0,
        ..q
    };
    let (total, names) = search(store, label, &q).await;
    assert_eq!(total, names.len() as i64, "{label}: total of {q:?}");
    names
}

#[tokio::test]
async fn search_users_filters() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let users = search_fixture();
        for u in &users {
            insert(&store, label, u).await;
        }
        let q = UserQuery::default;

        let all = matches(&store, label, q()).await;
        assert_eq!(
            all,
            ["alice", "Bob", "carol", "dave", "elodie", "frank"],
            "{label}: no filter"
        );

        // Pages return whole users.
        let (_, found) = store
            .search_users(&UserQuery {
                username: Some("alice".into()),
                limit: 10,
                ..q()
            })
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(found.len(), 1, "{label}: one alice");
        assert_same_user(&found[0], &users[0], &format!("{label}: alice from search_users"));

        let cases: Vec<(&str, UserQuery, Vec<&str>)> = vec![
            (
                "username exact",
                UserQuery {
                    username: Some("bob".into()),
                    ..q()
                },
                vec!["Bob"],
            ),
            (
                "username other case",
                UserQuery {
                    username: Some("ALICE".into()),
                    ..q()
                },
                vec!["alice"],
            ),
            (
                "username prefix is not a match",
                UserQuery {
                    username: Some("bo".into()),
                    ..q()
                },
                vec![],
            ),
            (
                "username wildcard is literal",
                UserQuery {
                    username: Some("%".into()),
                    ..q()
                },
                vec![],
            ),
            (
                "email other case",
                UserQuery {
                    email: Some("ALICE@example.ORG".into()),
                    ..q()
                },
                vec!["alice"],
            ),
            (
                "email exact",
                UserQuery {
                    email: Some("bob@example.org".into()),
                    ..q()
                },
                vec!["Bob"],
            ),
            (
                "email part is not a match",
                UserQuery {
                    email: Some("example.org".into()),
                    ..q()
                },
                vec![],
            ),
            (
                "email wildcard is literal",
                UserQuery {
                    email: Some("%@example.org".into()),
                    ..q()
                },
                vec![],
            ),
            (
                "name: last",
                UserQuery {
                    name: Some("LIDDELL".into()),
                    ..q()
                },
                vec!["alice"],
            ),
            (
                "name: first",
                UserQuery {
                    name: Some("robert".into()),
                    ..q()
                },
                vec!["Bob"],
            ),
            (
                "name: middle",
                UserQuery {
                    name: Some("bOBBy".into()),
                    ..q()
                },
                vec!["Bob"],
            ),
            (
                "name: last 2",
                UserQuery {
                    name: Some("tables".into()),
                    ..q()
                },
                vec!["Bob"],
            ),
            (
                "name: display",
                UserQuery {
                    name: Some("little".into()),
                    ..q()
                },
                vec!["Bob"],
            ),
            (
                "name: inner substring",
                UserQuery {
                    name: Some("ice lid".into()),
                    ..q()
                },
                vec!["alice"],
            ),
            (
                "name: several users",
                UserQuery {
                    name: Some("carol".into()),
                    ..q()
                },
                vec!["carol", "dave"],
            ),
            (
                "name: `_` is literal",
                UserQuery {
                    name: Some("Carol_Ann".into()),
                    ..q()
                },
                vec!["carol"],
            ),
            (
                "name: `_` alone",
                UserQuery {
                    name: Some("_".into()),
                    ..q()
                },
                vec!["carol"],
            ),
            (
                "name: `%` is literal",
                UserQuery {
                    name: Some("100%".into()),
                    ..q()
                },
                vec!["carol"],
            ),
            (
                "name: `%` alone",
                UserQuery {
                    name: Some("%".into()),
                    ..q()
                },
                vec!["carol"],
            ),
            (
                "name: `%` inside",
                UserQuery {
                    name: Some("0% c".into()),
                    ..q()
                },
                vec!["carol"],
            ),
            (
                "name: backslash is literal",
                UserQuery {
                    name: Some("k\\s".into()),
                    ..q()
                },
                vec!["frank"],
            ),
            (
                "name: backslash alone",
                UserQuery {
                    name: Some("\\".into()),
                    ..q()
                },
                vec!["frank"],
            ),
            (
                "name: non-ASCII case",
                UserQuery {
                    name: Some("ÉLOD".into()),
                    ..q()
                },
                vec!["elodie"],
            ),
            (
                "name: no match",
                UserQuery {
                    name: Some("nobody".into()),
                    ..q()
                },
                vec![],
            ),
            (
                "name: not the username",
                UserQuery {
                    name: Some("frank".into()),
                    ..q()
                },
                vec![],
            ),
            (
                "approval rejected",
                UserQuery {
                    approval_status: Some(ApprovalStatus::Rejected),
                    ..q()
                },
                vec!["Bob"],
            ),
            (
                "approval before decision",
                UserQuery {
                    approval_status: Some(ApprovalStatus::BeforeDecision),
                    ..q()
                },
                vec!["carol"],
            ),
            (
                "approval approved",
                UserQuery {
                    approval_status: Some(ApprovalStatus::Approved),
                    ..q()
                },
                vec!["alice", "dave", "elodie", "frank"],
            ),
            (
                "sign-up before confirmation",
                UserQuery {
                    sign_up_status: Some(SignUpStatus::BeforeConfirmation),
                    ..q()
                },
                vec!["dave", "elodie"],
            ),
            (
                "sign-up final",
                UserQuery {
                    sign_up_status: Some(SignUpStatus::Final),
                    ..q()
                },
                vec!["alice", "Bob", "carol", "frank"],
            ),
            (
                "locked",
                UserQuery {
                    is_locked: Some(true),
                    ..q()
                },
                vec!["elodie", "frank"],
            ),
            (
                "not locked",
                UserQuery {
                    is_locked: Some(false),
                    ..q()
                },
                vec!["alice", "Bob", "carol", "dave"],
            ),
            (
                "all filters together",
                UserQuery {
                    approval_status: Some(ApprovalStatus::Approved),
                    sign_up_status: Some(SignUpStatus::Final),
                    is_locked: Some(false),
                    ..q()
                },
                vec!["alice"],
            ),
            (
                "name and status",
                UserQuery {
                    name: Some("carol".into()),
                    sign_up_status: Some(SignUpStatus::Final),
                    ..q()
                },
                vec!["carol"],
            ),
            (
                "username and email disagree",
                UserQuery {
                    username: Some("alice".into()),
                    email: Some("bob@example.org".into()),
                    ..q()
                },
                vec![],
            ),
        ];
        for (what, query, want) in cases {
            assert_eq!(matches(&store, label, query).await, want, "{label}: {what}");
        }
        store.close().await;
    }
}

#[tokio::test]
async fn search_users_pages_and_orders() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        for u in search_fixture() {
            insert(&store, label, &u).await;
        }
        let q = UserQuery::default;

        // Orders. Ties on sign-up time (Bob and dave) go by username key, ascending.
        let by_name = vec!["alice", "Bob", "carol", "dave", "elodie", "frank"];
        let by_time = vec!["elodie", "Bob", "dave", "alice", "frank", "carol"];
        let by_time_desc = vec!["carol", "frank", "alice", "Bob", "dave", "elodie"];
        for (order, want) in [
            (UserOrder::Username, &by_name),
            (UserOrder::SignUpTime, &by_time),
            (UserOrder::SignUpTimeDesc, &by_time_desc),
        ] {
            assert_eq!(
                &matches(&store, label, UserQuery { order, ..q() }).await,
                want,
                "{label}: order {order:?}"
            );

            // Paging through the same order: the pages concatenate to the whole, total stays.
            let mut paged = Vec::new();
            for offset in (0..8).step_by(2) {
                let (total, page) = search(
                    &store,
                    label,
                    &UserQuery {
                        order,
                        offset,
                        limit: 2,
                        ..q()
                    },
                )
                .await;
                assert_eq!(total, 6, "{label}: {order:?} offset {offset}: total counts all matches");
                assert_eq!(
                    page.len(),
                    if offset < 6 { 2 } else { 0 },
                    "{label}: {order:?} offset {offset}: page size"
                );
                paged.extend(page);
            }
            assert_eq!(&paged, want, "{label}: {order:?}: pages in order");

            let (total, page) = search(
                &store,
                label,
                &UserQuery {
                    order,
                    offset: 4,
                    limit: 10,
                    ..q()
                },
            )
            .await;
            assert_eq!(total, 6, "{label}: {order:?}: total with a short last page");
            assert_eq!(page, want[4..], "{label}: {order:?}: short last page");
        }

        // Paging with a filter: the total counts the filtered set, not the page or the table.
        let (total, page) = search(
            &store,
            label,
            &UserQuery {
                is_locked: Some(false),
                offset: 1,
                limit: 2,
                ..q()
            },
        )
        .await;
        assert_eq!(total, 4, "{label}: filtered total");
        assert_eq!(page, ["Bob", "carol"], "{label}: filtered page");
        let (total, page) = search(
            &store,
            label,
            &UserQuery {
                is_locked: Some(true),
                order: UserOrder::SignUpTimeDesc,
                offset: 0,
                limit: 1,
                ..q()
            },
        )
        .await;
        assert_eq!(total, 2, "{label}: filtered total, desc");
        assert_eq!(page, ["frank"], "{label}: filtered page, desc");
        let (total, page) = search(
            &store,
            label,
            &UserQuery {
                name: Some("nobody".into()),
                limit: 10,
                ..q()
            },
        )
        .await;
        assert_eq!((total, page.len()), (0, 0), "{label}: empty result");
        store.close().await;
    }
}

// ---------------------------------------------------------------------------------------------
// 8. Sessions
// ---------------------------------------------------------------------------------------------

async fn fail_login(store: &Store, label: &str, keys: &[&str], now: OffsetDateTime) {
    let keyed: Vec<(&str, OffsetDateTime)> = keys.iter().map(|k| (*k, now - Duration::minutes(15))).collect();
    count_failures(store, &keyed, now)
        .await
        .unwrap_or_else(|e| panic!("{label}: count_failures: {e}"));
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

async fn throttle_failures(store: &Store, label: &str, key: &str) -> Option<u32> {
    store
        .throttle_state(key)
        .await
        .unwrap_or_else(|e| panic!("{label}: throttle_state: {e}"))
        .map(|s| s.failures)
}

#[tokio::test]
async fn open_session_stores_the_session_clears_throttle_and_audits() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let alice = new_user("alice");
        insert(&store, label, &alice).await;
        let now = clock::now();
        fail_login(&store, label, &["account:alice", "address:192.0.2.7"], now).await;
        fail_login(&store, label, &["account:alice"], now).await;
        store
            .note_address_failure("address:192.0.2.7", "account:alice", now)
            .await
            .unwrap_or_else(|e| panic!("{label}: note_address_failure: {e}"));
        assert_eq!(
            throttle_failures(&store, label, "account:alice").await,
            Some(2),
            "{label}: two failures"
        );

        let audits = audit_total(&store, label).await;
        let (s, hash) = session(&alice, now, now + Duration::hours(12));
        let audit = AuditEntry::new(
            &RequestCtx {
                cid: "login-1".into(),
                remote_addr: Some("192.0.2.7".into()),
                ..Default::default()
            },
            actions::SESSION_LOGIN,
            Some(alice.uuid.to_string()),
            Some(alice.uuid.to_string()),
        )
        .with_details(serde_json::json!({"session": s.id.to_string()}));
        store
            .open_session(
                &s,
                &hash,
                guard_for(&store, label, s.user_uuid).await,
                None,
                &ThrottleReset {
                    clear: vec!["account:alice".into()],
                    address: Some(("address:192.0.2.7".into(), "account:alice".into())),
                },
                &audit,
            )
            .await
            .unwrap_or_else(|e| panic!("{label}: open_session: {e}"));
        let since = now - Duration::hours(1);
        assert!(
            !store
                .address_failure_live("address:192.0.2.7", "account:alice", since)
                .await
                .expect("read"),
            "{label}: the name no longer fails from the address"
        );
        assert!(
            store
                .login_address_known("account:alice", "address:192.0.2.7", since)
                .await
                .expect("read"),
            "{label}: the address is known to the name"
        );

        let (got_s, got_u, version) = by_token(&store, label, &hash)
            .await
            .unwrap_or_else(|| panic!("{label}: session found by token hash"));
        assert_eq!(got_s, s, "{label}: session round-trips");
        assert_same_user(&got_u, &alice, &format!("{label}: session's user"));
        assert_eq!(version, 1, "{label}: user version unchanged by a plain login");
        assert_eq!(
            session_ids(&store, label, alice.uuid, now).await,
            vec![s.id],
            "{label}: listed"
        );

        assert_eq!(
            throttle_failures(&store, label, "account:alice").await,
            None,
            "{label}: throttle key cleared"
        );
        assert_eq!(
            throttle_failures(&store, label, "address:192.0.2.7").await,
            Some(1),
            "{label}: other throttle key kept"
        );
        assert_eq!(audit_total(&store, label).await, audits + 1, "{label}: login audited");
        let rec = newest_audit(&store, label).await;
        assert_eq!(rec.action, actions::SESSION_LOGIN, "{label}: audit action");
        assert_eq!(rec.cid, "login-1", "{label}: audit cid");
        assert_eq!(
            rec.details.0,
            serde_json::json!({"session": s.id.to_string()}),
            "{label}: audit details"
        );

        // Wrong hashes find nothing.
        let mut wrong = hash;
        wrong[31] ^= 1;
        assert!(by_token(&store, label, &wrong).await.is_none(), "{label}: one bit off");
        assert!(by_token(&store, label, &[0; 32]).await.is_none(), "{label}: zero hash");

        // A session with no optional fields round-trips too.
        let (mut bare, bare_hash) = session(&alice, now + Duration::seconds(1), now + Duration::hours(1));
        bare.current_app = None;
        bare.remote_addr = None;
        bare.user_agent = None;
        login(&store, label, &bare, &bare_hash).await;
        let (got, _, _) = by_token(&store, label, &bare_hash)
            .await
            .unwrap_or_else(|| panic!("{label}: bare session"));
        assert_eq!(got, bare, "{label}: bare session round-trips");
        store.close().await;
    }
}

#[tokio::test]
async fn open_session_with_a_login_password() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let mut alice = new_user("alice");
        alice.password_is_set = false;
        let bob = new_user("bob");
        insert(&store, label, &alice).await;
        insert(&store, label, &bob).await;
        let (a1, a1_hash) = fresh_session(&alice);
        let (a2, a2_hash) = fresh_session(&alice);
        let (b1, b1_hash) = fresh_session(&bob);
        for (s, h) in [(&a1, &a1_hash), (&a2, &a2_hash), (&b1, &b1_hash)] {
            login(&store, label, s, h).await;
        }
        let now = clock::now();

        // A rehash: the password is written, other sessions stay.
        let t1 = now + Duration::seconds(1);
        let rehash = LoginPassword {
            hash: hash_generated("same password"),
            last_set: t1,
            expiry: t1 + Duration::days(730),
            must_change: true,
            revoke_other_sessions: false,
        };
        let (s3, s3_hash) = session(&alice, t1, t1 + Duration::hours(1));
        store
            .open_session(
                &s3,
                &s3_hash,
                guard_for(&store, label, s3.user_uuid).await,
                Some(&rehash),
                &ThrottleReset::clearing(&["account:alice"]),
                &entry(actions::SESSION_LOGIN, None),
            )
            .await
            .unwrap_or_else(|e| panic!("{label}: open_session with rehash: {e}"));
        let mut want = alice.clone();
        want.password_hash = rehash.hash.clone();
        want.password_is_set = true;
        want.password_last_set = t1;
        want.password_expiry = rehash.expiry;
        want.password_must_change = true;
        want.updated_at = t1;
        let (got, version) = load_some(&store, label, alice.uuid).await;
        assert_same_user(&got, &want, &format!("{label}: password written by login"));
        assert_eq!(version, 2, "{label}: version bumped by login password");
        let mut ids = session_ids(&store, label, alice.uuid, now).await;
        ids.sort();
        let mut want_ids = vec![a1.id, a2.id, s3.id];
        want_ids.sort();
        assert_eq!(ids, want_ids, "{label}: rehash keeps the other sessions");

        // A new password: written, and the user's other sessions end; the new one is kept.
        let t2 = now + Duration::seconds(2);
        let changed = LoginPassword {
            hash: hash_generated("new password"),
            last_set: t2,
            expiry: t2 + Duration::days(365),
            must_change: false,
            revoke_other_sessions: true,
        };
        let (s4, s4_hash) = session(&alice, t2, t2 + Duration::hours(1));
        let audits = audit_total(&store, label).await;
        store
            .open_session(
                &s4,
                &s4_hash,
                guard_for(&store, label, s4.user_uuid).await,
                Some(&changed),
                &ThrottleReset::clearing(&["account:alice"]),
                &entry(actions::SESSION_LOGIN, None),
            )
            .await
            .unwrap_or_else(|e| panic!("{label}: open_session with new password: {e}"));
        want.password_hash = changed.hash.clone();
        want.password_last_set = t2;
        want.password_expiry = changed.expiry;
        want.password_must_change = false;
        want.updated_at = t2;
        let (got, version) = load_some(&store, label, alice.uuid).await;
        assert_same_user(&got, &want, &format!("{label}: new password written by login"));
        assert_eq!(version, 3, "{label}: version bumped again");
        assert_eq!(
            session_ids(&store, label, alice.uuid, now).await,
            vec![s4.id],
            "{label}: only the new session left"
        );
        for h in [&a1_hash, &a2_hash, &s3_hash] {
            assert!(
                by_token(&store, label, h).await.is_none(),
                "{label}: old session revoked"
            );
        }
        let (_, u, v) = by_token(&store, label, &s4_hash)
            .await
            .unwrap_or_else(|| panic!("{label}: new session"));
        assert_same_user(&u, &want, &format!("{label}: the new session sees the new password"));
        assert_eq!(v, 3, "{label}: and the new version");
        assert_eq!(
            session_ids(&store, label, bob.uuid, now).await,
            vec![b1.id],
            "{label}: bob's session kept"
        );
        assert_eq!(
            audit_total(&store, label).await,
            audits + 1,
            "{label}: one audit record"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn open_session_is_atomic() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let alice = new_user("alice");
        let bob = new_user("bob");
        insert(&store, label, &alice).await;
        insert(&store, label, &bob).await;
        let (s1, s1_hash) = fresh_session(&alice);
        login(&store, label, &s1, &s1_hash).await;
        let (b1, b1_hash) = fresh_session(&bob);
        login(&store, label, &b1, &b1_hash).await;
        let now = clock::now();
        fail_login(&store, label, &["account:alice"], now).await;
        let audits = audit_total(&store, label).await;

        // The session insert fails (its token hash is bob's) after the password update and the
        // revocation of alice's sessions, before the throttle reset and the audit: none of it
        // may persist.
        let (s2, _) = fresh_session(&alice);
        let pw = LoginPassword {
            hash: hash_generated("new password"),
            last_set: now,
            expiry: now + Duration::days(1),
            must_change: false,
            revoke_other_sessions: true,
        };
        let r = store
            .open_session(
                &s2,
                &b1_hash,
                guard_for(&store, label, s2.user_uuid).await,
                Some(&pw),
                &ThrottleReset::clearing(&["account:alice"]),
                &entry(actions::SESSION_LOGIN, None),
            )
            .await;
        assert!(r.is_err(), "{label}: a duplicate token hash is refused: {r:?}");
        let (got, version) = load_some(&store, label, alice.uuid).await;
        assert_same_user(&got, &alice, &format!("{label}: password not written"));
        assert_eq!(version, 1, "{label}: version not bumped");
        assert_eq!(
            session_ids(&store, label, alice.uuid, now).await,
            vec![s1.id],
            "{label}: old session not revoked"
        );
        let (still_bob, _, _) = by_token(&store, label, &b1_hash)
            .await
            .unwrap_or_else(|| panic!("{label}: bob's session"));
        assert_eq!(still_bob, b1, "{label}: bob's session untouched");
        assert_eq!(
            throttle_failures(&store, label, "account:alice").await,
            Some(1),
            "{label}: throttle not cleared"
        );
        assert_eq!(audit_total(&store, label).await, audits, "{label}: no audit");

        // A session for a user that does not exist is refused (foreign key).
        let ghost = new_user("ghost");
        let (g, g_hash) = fresh_session(&ghost);
        let r = store
            .open_session(
                &g,
                &g_hash,
                guard_for(&store, label, g.user_uuid).await,
                None,
                &ThrottleReset::clearing(&["account:alice"]),
                &entry(actions::SESSION_LOGIN, None),
            )
            .await;
        assert!(!matches!(r, Ok(true)), "{label}: no session for a missing user: {r:?}");
        assert!(
            by_token(&store, label, &g_hash).await.is_none(),
            "{label}: no orphan session"
        );
        assert_eq!(
            throttle_failures(&store, label, "account:alice").await,
            Some(1),
            "{label}: throttle not cleared"
        );
        assert_eq!(audit_total(&store, label).await, audits, "{label}: no audit");
        store.close().await;
    }
}

async fn last_seen(store: &Store, label: &str, hash: &[u8; 32]) -> OffsetDateTime {
    by_token(store, label, hash)
        .await
        .unwrap_or_else(|| panic!("{label}: session should exist"))
        .0
        .last_seen_at
}

#[tokio::test]
async fn touch_session_only_moves_forward_and_renew_always_writes() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let alice = new_user("alice");
        insert(&store, label, &alice).await;
        let t0 = clock::now();
        let (s, hash) = session(&alice, t0, t0 + Duration::hours(12));
        login(&store, label, &s, &hash).await;
        let audits = audit_total(&store, label).await;
        let touch = |id: Uuid, at: OffsetDateTime| {
            let store = store.clone();
            async move {
                store
                    .touch_session(id, at)
                    .await
                    .unwrap_or_else(|e| panic!("{label}: touch_session: {e}"))
            }
        };

        assert!(touch(s.id, t0 + Duration::seconds(10)).await, "{label}: forward touch");
        assert_eq!(
            last_seen(&store, label, &hash).await,
            t0 + Duration::seconds(10),
            "{label}: moved"
        );
        assert!(
            !touch(s.id, t0 + Duration::seconds(5)).await,
            "{label}: backward touch refused"
        );
        assert_eq!(
            last_seen(&store, label, &hash).await,
            t0 + Duration::seconds(10),
            "{label}: not moved back"
        );
        assert!(
            !touch(s.id, t0 + Duration::seconds(10)).await,
            "{label}: same-time touch is not a change"
        );
        assert!(
            touch(s.id, t0 + Duration::microseconds(10_000_001)).await,
            "{label}: one microsecond later"
        );
        assert_eq!(
            last_seen(&store, label, &hash).await,
            t0 + Duration::microseconds(10_000_001),
            "{label}: microsecond precision"
        );
        assert!(
            !touch(Uuid::new_v4(), t0 + Duration::hours(1)).await,
            "{label}: unknown session"
        );
        assert_eq!(
            audit_total(&store, label).await,
            audits,
            "{label}: touching is not audited"
        );
        let (got, _, _) = by_token(&store, label, &hash)
            .await
            .unwrap_or_else(|| panic!("{label}: session"));
        assert_eq!(
            got,
            SessionRecord {
                last_seen_at: t0 + Duration::microseconds(10_000_001),
                ..s.clone()
            },
            "{label}: only last_seen_at changed"
        );

        // renew_session resets the idle clock to `now` and writes its audit record.
        let t1 = t0 + Duration::minutes(20);
        let ok = store
            .renew_session(s.id, t1, &entry(actions::SESSION_RENEW, Some(alice.uuid.to_string())))
            .await
            .unwrap_or_else(|e| panic!("{label}: renew_session: {e}"));
        assert!(ok, "{label}: renew returns true");
        assert_eq!(last_seen(&store, label, &hash).await, t1, "{label}: renewed");
        assert_eq!(audit_total(&store, label).await, audits + 1, "{label}: renew audited");
        assert_eq!(
            newest_audit(&store, label).await.action,
            actions::SESSION_RENEW,
            "{label}: audit action"
        );
        let ok = store
            .renew_session(Uuid::new_v4(), t1, &entry(actions::SESSION_RENEW, None))
            .await
            .unwrap_or_else(|e| panic!("{label}: renew_session of unknown: {e}"));
        assert!(!ok, "{label}: renewing an unknown session returns false");
        store.close().await;
    }
}

#[tokio::test]
async fn delete_session_requires_the_owner() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let alice = new_user("alice");
        let mallory = new_user("mallory");
        insert(&store, label, &alice).await;
        insert(&store, label, &mallory).await;
        let (s, hash) = fresh_session(&alice);
        let (other, other_hash) = fresh_session(&alice);
        login(&store, label, &s, &hash).await;
        login(&store, label, &other, &other_hash).await;
        let audits = audit_total(&store, label).await;
        let delete = |id: Uuid, owner: Uuid| {
            let store = store.clone();
            async move {
                store
                    .delete_session(id, owner, &entry(actions::SESSION_LOGOUT, Some(owner.to_string())))
                    .await
                    .unwrap_or_else(|e| panic!("{label}: delete_session: {e}"))
            }
        };

        assert!(!delete(s.id, mallory.uuid).await, "{label}: not mallory's session");
        assert!(by_token(&store, label, &hash).await.is_some(), "{label}: still there");
        assert!(!delete(s.id, Uuid::new_v4()).await, "{label}: nobody's session");
        assert_eq!(
            audit_total(&store, label).await,
            audits,
            "{label}: refused deletes not audited"
        );

        assert!(delete(s.id, alice.uuid).await, "{label}: the owner deletes it");
        assert!(by_token(&store, label, &hash).await.is_none(), "{label}: gone");
        assert!(
            by_token(&store, label, &other_hash).await.is_some(),
            "{label}: the other session stays"
        );
        assert_eq!(audit_total(&store, label).await, audits + 1, "{label}: delete audited");
        assert_eq!(
            newest_audit(&store, label).await.action,
            actions::SESSION_LOGOUT,
            "{label}: audit action"
        );

        assert!(!delete(s.id, alice.uuid).await, "{label}: already gone");
        assert_eq!(
            audit_total(&store, label).await,
            audits + 1,
            "{label}: repeated delete not audited"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn delete_user_sessions_with_and_without_keep() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let alice = new_user("alice");
        let bob = new_user("bob");
        insert(&store, label, &alice).await;
        insert(&store, label, &bob).await;
        let mut a = Vec::new();
        for _ in 0..3 {
            let (s, h) = fresh_session(&alice);
            login(&store, label, &s, &h).await;
            a.push((s, h));
        }
        let (b1, b1_hash) = fresh_session(&bob);
        login(&store, label, &b1, &b1_hash).await;
        let now = clock::now();
        let revoke_all = |user: Uuid, keep: Option<Uuid>| {
            let store = store.clone();
            async move {
                store
                    .delete_user_sessions(user, keep, &entry(actions::SESSION_REVOKE_ALL, Some(user.to_string())))
                    .await
                    .unwrap_or_else(|e| panic!("{label}: delete_user_sessions: {e}"))
            }
        };

        let audits = audit_total(&store, label).await;
        let kept = a[1].0.id;
        assert_eq!(
            revoke_all(alice.uuid, Some(kept)).await,
            2,
            "{label}: two sessions deleted, one kept"
        );
        assert_eq!(
            session_ids(&store, label, alice.uuid, now).await,
            vec![kept],
            "{label}: the kept one remains"
        );
        assert!(by_token(&store, label, &a[0].1).await.is_none(), "{label}: a0 gone");
        assert!(by_token(&store, label, &a[2].1).await.is_none(), "{label}: a2 gone");
        assert_eq!(audit_total(&store, label).await, audits + 1, "{label}: audited");

        // Keeping another user's session id does not protect it, nor delete it.
        assert_eq!(
            revoke_all(alice.uuid, Some(b1.id)).await,
            1,
            "{label}: alice's last session deleted"
        );
        assert!(
            session_ids(&store, label, alice.uuid, now).await.is_empty(),
            "{label}: alice has none"
        );
        assert_eq!(
            session_ids(&store, label, bob.uuid, now).await,
            vec![b1.id],
            "{label}: bob's untouched"
        );

        assert_eq!(revoke_all(bob.uuid, None).await, 1, "{label}: bob's session deleted");
        assert!(by_token(&store, label, &b1_hash).await.is_none(), "{label}: b1 gone");
        assert_eq!(revoke_all(bob.uuid, None).await, 0, "{label}: nothing left to delete");
        assert_eq!(user_count(&store, label).await, 2, "{label}: users untouched");
        store.close().await;
    }
}

#[tokio::test]
async fn list_and_purge_sessions_respect_expiry_and_idleness() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let alice = new_user("alice");
        let bob = new_user("bob");
        insert(&store, label, &alice).await;
        insert(&store, label, &bob).await;
        let now = clock::now();
        let idle_cutoff = now - Duration::minutes(30);

        // created_at ascending so the expected newest-first order is the reverse.
        let mk = |created: i64, last_seen: OffsetDateTime, expires: OffsetDateTime| {
            let (mut s, h) = session(&alice, now - Duration::hours(2) + Duration::seconds(created), expires);
            s.last_seen_at = last_seen;
            (s, h)
        };
        let expired = mk(1, now - Duration::minutes(1), now - Duration::seconds(1));
        let expires_now = mk(2, now - Duration::minutes(1), now);
        let idle = mk(3, idle_cutoff - Duration::seconds(1), now + Duration::hours(1));
        let idle_exactly = mk(4, idle_cutoff, now + Duration::hours(1));
        let fresh = mk(5, now - Duration::minutes(1), now + Duration::hours(1));
        let barely = mk(
            6,
            idle_cutoff + Duration::microseconds(1),
            now + Duration::microseconds(1),
        );
        let all = [&expired, &expires_now, &idle, &idle_exactly, &fresh, &barely];
        for (s, h) in all {
            login(&store, label, s, h).await;
        }
        let (b, b_hash) = session(&bob, now, now + Duration::hours(1));
        login(&store, label, &b, &b_hash).await;

        // list_sessions hides sessions at or past their absolute expiry (not idle ones: the
        // idle limit is configuration the store does not know), newest first.
        let listed = store
            .list_sessions(alice.uuid, now)
            .await
            .unwrap_or_else(|e| panic!("{label}: list_sessions: {e}"));
        let want: Vec<SessionRecord> = [&barely, &fresh, &idle_exactly, &idle]
            .iter()
            .map(|(s, _)| s.clone())
            .collect();
        assert_eq!(listed, want, "{label}: unexpired sessions, newest first, whole records");
        assert_eq!(
            session_ids(&store, label, bob.uuid, now).await,
            vec![b.id],
            "{label}: per user"
        );
        let later = session_ids(&store, label, alice.uuid, now + Duration::minutes(90)).await;
        assert!(
            later.is_empty(),
            "{label}: all expired an hour and a half later: {later:?}"
        );

        // purge_sessions removes exactly the expired and the idle ones.
        let purged = store
            .purge_sessions(now, idle_cutoff)
            .await
            .unwrap_or_else(|e| panic!("{label}: purge: {e}"));
        assert_eq!(
            purged, 4,
            "{label}: expired, expiring now, idle and idle-at-the-cutoff purged"
        );
        for (what, (_, h), kept) in [
            ("expired", &expired, false),
            ("expires now", &expires_now, false),
            ("idle", &idle, false),
            ("idle exactly at the cutoff", &idle_exactly, false),
            ("fresh", &fresh, true),
            ("barely alive", &barely, true),
        ] {
            assert_eq!(by_token(&store, label, h).await.is_some(), kept, "{label}: {what}");
        }
        assert!(
            by_token(&store, label, &b_hash).await.is_some(),
            "{label}: bob's session kept"
        );
        let again = store
            .purge_sessions(now, idle_cutoff)
            .await
            .unwrap_or_else(|e| panic!("{label}: purge: {e}"));
        assert_eq!(again, 0, "{label}: second purge finds nothing");
        store.close().await;
    }
}

// ---------------------------------------------------------------------------------------------
// 9. Login throttle
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn login_failures_count_within_the_window() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let t0 = clock::now() - Duration::hours(1);
        let window = Duration::minutes(15);
        let fail = |keys: Vec<(&'static str, OffsetDateTime)>, now: OffsetDateTime| {
            let store = store.clone();
            async move {
                count_failures(&store, &keys, now)
                    .await
                    .unwrap_or_else(|e| panic!("{label}: count_failures: {e}"));
            }
        };
        let state = |key: &'static str| {
            let store = store.clone();
            async move {
                store
                    .throttle_state(key)
                    .await
                    .unwrap_or_else(|e| panic!("{label}: throttle_state: {e}"))
            }
        };
        let pair = |failures: u32, last_failure: OffsetDateTime| {
            Some(muster_core::directory::throttle::ThrottleState { failures, last_failure })
        };

        assert_eq!(state("account:alice").await, None, "{label}: no counter yet");
        let audits = audit_total(&store, label).await;

        // New keys start at one; both keys of one call are counted.
        fail(
            vec![("account:alice", t0 - window), ("address:192.0.2.1", t0 - window)],
            t0,
        )
        .await;
        assert_eq!(state("account:alice").await, pair(1, t0), "{label}: new account key");
        assert_eq!(
            state("address:192.0.2.1").await,
            pair(1, t0),
            "{label}: new address key"
        );
        assert_eq!(
            audit_total(&store, label).await,
            audits,
            "{label}: counting is not audited"
        );

        // Within the window: counted up.
        let t1 = t0 + Duration::minutes(1);
        fail(vec![("account:alice", t1 - window)], t1).await;
        assert_eq!(state("account:alice").await, pair(2, t1), "{label}: second failure");
        let t2 = t0 + Duration::minutes(2);
        fail(
            vec![("account:alice", t2 - window), ("address:192.0.2.1", t2 - window)],
            t2,
        )
        .await;
        assert_eq!(state("account:alice").await, pair(3, t2), "{label}: third failure");
        assert_eq!(
            state("address:192.0.2.1").await,
            pair(2, t2),
            "{label}: address counted separately"
        );

        // The last failure exactly at the window start still counts.
        let t3 = t2 + window;
        fail(vec![("account:alice", t2)], t3).await;
        assert_eq!(
            state("account:alice").await,
            pair(4, t3),
            "{label}: last failure at the window start"
        );

        // Last failure before the window start: restarts at one.
        let t4 = t3 + window + Duration::microseconds(1);
        fail(vec![("account:alice", t4 - window)], t4).await;
        assert_eq!(
            state("account:alice").await,
            pair(1, t4),
            "{label}: restarted after the window"
        );
        assert_eq!(
            state("address:192.0.2.1").await,
            pair(2, t2),
            "{label}: other key untouched"
        );
        assert_eq!(
            audit_total(&store, label).await,
            audits,
            "{label}: counting is not audited"
        );

        // Keys are exact (no case folding, no prefix matching).
        assert_eq!(state("account:Alice").await, None, "{label}: keys are case-sensitive");
        assert_eq!(state("account:").await, None, "{label}: no prefix match");

        // Many failures count correctly.
        let mut t = t4;
        for n in 2..=40_u32 {
            t += Duration::seconds(1);
            fail(vec![("account:alice", t - window)], t).await;
            assert_eq!(state("account:alice").await, pair(n, t), "{label}: failure {n}");
        }
        store.close().await;
    }
}

#[tokio::test]
async fn purge_throttle_forgets_old_counters() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let now = clock::now();
        let cutoff = now - Duration::minutes(15);
        for (key, at) in [
            ("old", cutoff - Duration::seconds(1)),
            ("at-cutoff", cutoff),
            ("recent", now),
            ("just-after", cutoff + Duration::microseconds(1)),
        ] {
            count_failures(&store, &[(key, at - Duration::minutes(15))], at)
                .await
                .unwrap_or_else(|e| panic!("{label}: count_failures: {e}"));
        }
        let audits = audit_total(&store, label).await;
        let purged = store
            .purge_throttle(cutoff)
            .await
            .unwrap_or_else(|e| panic!("{label}: purge_throttle: {e}"));
        assert_eq!(purged, 1, "{label}: only the counter before the cutoff");
        for (key, kept) in [
            ("old", false),
            ("at-cutoff", true),
            ("recent", true),
            ("just-after", true),
        ] {
            let s = store
                .throttle_state(key)
                .await
                .unwrap_or_else(|e| panic!("{label}: throttle_state: {e}"));
            assert_eq!(s.is_some(), kept, "{label}: {key}");
        }
        let purged = store
            .purge_throttle(now + Duration::seconds(1))
            .await
            .unwrap_or_else(|e| panic!("{label}: purge_throttle: {e}"));
        assert_eq!(purged, 3, "{label}: the rest");
        assert_eq!(
            audit_total(&store, label).await,
            audits,
            "{label}: purging is not audited"
        );

        // A purged key starts again at one.
        count_failures(&store, &[("old", now - Duration::minutes(15))], now)
            .await
            .unwrap_or_else(|e| panic!("{label}: count_failures: {e}"));
        let s = store
            .throttle_state("old")
            .await
            .unwrap_or_else(|e| panic!("{label}: throttle_state: {e}"));
        assert_eq!(s.map(|s| s.failures), Some(1), "{label}: restarted");
        store.close().await;
    }
}

// ---------------------------------------------------------------------------------------------
// 10. Audit log
// ---------------------------------------------------------------------------------------------

struct Spec {
    actor: Option<&'static str>,
    target: Option<&'static str>,
    action: &'static str,
    failure: Option<&'static str>,
    cid: &'static str,
}

fn audit_specs() -> Vec<Spec> {
    let s = |actor, target, action, failure, cid| Spec {
        actor,
        target,
        action,
        failure,
        cid,
    };
    vec![
        s(Some("musrA"), Some("musrX"), actions::USER_CREATE, None, "c1"),
        s(Some("musrB"), Some("musrX"), actions::USER_UPDATE, Some("E1"), "c1"),
        s(Some("musrA"), Some("musrY"), actions::USER_DELETE, None, "c2"),
        s(None, None, actions::SESSION_LOGIN, Some("E005001"), "c3"),
        s(Some("musrA"), Some("musrX"), actions::USER_UPDATE, None, "c3"),
        s(Some("musrB"), Some("musrY"), actions::USER_UPDATE, Some("E2"), "c4"),
        s(Some("cli"), Some("musrX"), actions::USER_LOCK, None, "c5"),
    ]
}

#[tokio::test]
async fn list_audit_filters_pages_and_orders_newest_first() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let base = clock::now() - Duration::hours(1);
        let specs = audit_specs();
        let mut entries = Vec::new();
        for (n, spec) in specs.iter().enumerate() {
            let ctx = RequestCtx {
                cid: spec.cid.into(),
                remote_addr: Some(format!("192.0.2.{n}")),
                current_app: (n % 2 == 0).then(|| "muster".to_owned()),
                user_agent: Some("ua".into()),
            };
            let mut e = AuditEntry::new(
                &ctx,
                spec.action,
                spec.actor.map(Into::into),
                spec.target.map(Into::into),
            )
            .with_details(serde_json::json!({ "n": n }));
            e.at = base + Duration::minutes(n as i64) + Duration::microseconds(n as i64);
            if let Some(reason) = spec.failure {
                e = e.failed(reason);
            }
            store
                .insert_audit(&e)
                .await
                .unwrap_or_else(|e| panic!("{label}: insert_audit: {e}"));
            entries.push(e);
        }

        // Whole records round-trip, newest first.
        let (total, records) = store
            .list_audit(&AuditQuery {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{label}: list_audit: {e}"));
        assert_eq!(total, entries.len() as i64, "{label}: total");
        assert_eq!(records.len(), entries.len(), "{label}: all on one page");
        for (r, e) in records.iter().zip(entries.iter().rev()) {
            let what = format!("{label}: record {}", r.details.0);
            assert_eq!(r.at.0, e.at, "{what}: at");
            assert_eq!(r.cid, e.cid, "{what}: cid");
            assert_eq!(r.actor, e.actor, "{what}: actor");
            assert_eq!(r.current_app, e.current_app, "{what}: current_app");
            assert_eq!(r.remote_addr, e.remote_addr, "{what}: remote_addr");
            assert_eq!(r.action, e.action, "{what}: action");
            assert_eq!(r.target, e.target, "{what}: target");
            assert_eq!(r.outcome, e.outcome.as_str(), "{what}: outcome");
            assert_eq!(r.reason, e.reason, "{what}: reason");
            assert_eq!(r.details.0, e.details, "{what}: details");
        }
        let ids: Vec<i64> = records.iter().map(|r| r.id).collect();
        assert!(
            ids.windows(2).all(|w| w[0] > w[1]),
            "{label}: ids strictly descending: {ids:?}"
        );

        // Each filter, against the same predicate applied to what was written.
        let n_of = |r: &AuditRecord| r.details.0["n"].as_u64().unwrap_or(u64::MAX) as usize;
        let expect = |pred: &dyn Fn(usize, &AuditEntry) -> bool| -> Vec<usize> {
            (0..entries.len()).rev().filter(|&n| pred(n, &entries[n])).collect()
        };
        let at = |n: i64| base + Duration::minutes(n) + Duration::microseconds(n);
        let q = AuditQuery::default;
        let cases: Vec<(&str, AuditQuery, Vec<usize>)> = vec![
            (
                "actor",
                AuditQuery {
                    actor: Some("musrA".into()),
                    ..q()
                },
                expect(&|_, e| e.actor.as_deref() == Some("musrA")),
            ),
            (
                "target",
                AuditQuery {
                    target: Some("musrY".into()),
                    ..q()
                },
                expect(&|_, e| e.target.as_deref() == Some("musrY")),
            ),
            (
                "action",
                AuditQuery {
                    action: Some(actions::USER_UPDATE.into()),
                    ..q()
                },
                expect(&|_, e| e.action == actions::USER_UPDATE),
            ),
            (
                "outcome failure",
                AuditQuery {
                    outcome: Some(Outcome::Failure),
                    ..q()
                },
                expect(&|_, e| e.outcome == Outcome::Failure),
            ),
            (
                "outcome success",
                AuditQuery {
                    outcome: Some(Outcome::Success),
                    ..q()
                },
                expect(&|_, e| e.outcome == Outcome::Success),
            ),
            (
                "cid",
                AuditQuery {
                    cid: Some("c3".into()),
                    ..q()
                },
                expect(&|_, e| e.cid == "c3"),
            ),
            (
                "since (inclusive)",
                AuditQuery {
                    since: Some(at(2)),
                    ..q()
                },
                expect(&|n, _| n >= 2),
            ),
            (
                "until (exclusive)",
                AuditQuery {
                    until: Some(at(5)),
                    ..q()
                },
                expect(&|n, _| n < 5),
            ),
            (
                "since and until",
                AuditQuery {
                    since: Some(at(2)),
                    until: Some(at(5)),
                    ..q()
                },
                expect(&|n, _| (2..5).contains(&n)),
            ),
            (
                "since between records",
                AuditQuery {
                    since: Some(at(2) + Duration::microseconds(1)),
                    ..q()
                },
                expect(&|n, _| n >= 3),
            ),
            (
                "actor, action and outcome",
                AuditQuery {
                    actor: Some("musrB".into()),
                    action: Some(actions::USER_UPDATE.into()),
                    outcome: Some(Outcome::Failure),
                    ..q()
                },
                vec![5, 1],
            ),
            (
                "target and since",
                AuditQuery {
                    target: Some("musrX".into()),
                    since: Some(at(1)),
                    ..q()
                },
                vec![6, 4, 1],
            ),
            (
                "no match",
                AuditQuery {
                    actor: Some("musrZ".into()),
                    ..q()
                },
                vec![],
            ),
            (
                "case matters",
                AuditQuery {
                    actor: Some("MUSRA".into()),
                    ..q()
                },
                vec![],
            ),
            (
                "until before all",
                AuditQuery {
                    until: Some(base),
                    ..q()
                },
                vec![],
            ),
        ];
        for (what, query, want) in cases {
            let query = AuditQuery { limit: 100, ..query };
            let (total, page) = store
                .list_audit(&query)
                .await
                .unwrap_or_else(|e| panic!("{label}: {what}: {e}"));
            let got: Vec<usize> = page.iter().map(n_of).collect();
            assert_eq!(got, want, "{label}: {what}");
            assert_eq!(total, want.len() as i64, "{label}: {what}: total");
        }

        // Paging: pages of two concatenate to the whole; the total is always the filtered count.
        let mut paged = Vec::new();
        for offset in (0..10).step_by(2) {
            let (total, page) = store
                .list_audit(&AuditQuery {
                    offset,
                    limit: 2,
                    ..q()
                })
                .await
                .unwrap_or_else(|e| panic!("{label}: page {offset}: {e}"));
            assert_eq!(total, 7, "{label}: total at offset {offset}");
            assert!(page.len() <= 2, "{label}: page size at offset {offset}");
            paged.extend(page.iter().map(n_of));
        }
        assert_eq!(paged, vec![6, 5, 4, 3, 2, 1, 0], "{label}: pages newest first");
        let (total, page) = store
            .list_audit(&AuditQuery {
                actor: Some("musrA".into()),
                offset: 1,
                limit: 1,
                ..q()
            })
            .await
            .unwrap_or_else(|e| panic!("{label}: filtered page: {e}"));
        assert_eq!(
            (total, page.iter().map(n_of).collect::<Vec<_>>()),
            (3, vec![2]),
            "{label}: filtered page"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn audit_details_round_trip() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let details = [
            serde_json::json!({}),
            serde_json::json!({"fields": ["email", "display_name"], "count": 2}),
            serde_json::json!({
                "nested": {"deeper": {"list": [1, -2, 3.5, null, true, false, "x"]}},
                "big": 9_007_199_254_740_993_i64,
                "min": i64::MIN,
                "text": "ünïcødé « quoted \" » \\ back\nslash \u{1f600}",
                "empty": "",
                "null": null
            }),
            serde_json::json!([1, 2, 3]),
            serde_json::json!("just a string"),
            serde_json::json!(null),
        ];
        for d in &details {
            store
                .insert_audit(&entry(actions::USER_UPDATE, None).with_details(d.clone()))
                .await
                .unwrap_or_else(|e| panic!("{label}: insert_audit {d}: {e}"));
        }
        let (total, records) = store
            .list_audit(&AuditQuery {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{label}: list_audit: {e}"));
        assert_eq!(total, details.len() as i64, "{label}: total");
        let got: Vec<serde_json::Value> = records.into_iter().rev().map(|r| r.details.0).collect();
        assert_eq!(got, details, "{label}: details round-trip");

        // The serialised record (what the HTTP API shows) carries the details and an RFC 3339 time.
        let rec = newest_audit(&store, label).await;
        let json = serde_json::to_value(&rec).unwrap_or_else(|e| panic!("{label}: serialise: {e}"));
        assert_eq!(json["details"], serde_json::Value::Null, "{label}: serialised details");
        assert_eq!(json["action"], actions::USER_UPDATE, "{label}: serialised action");
        let at = json["at"]
            .as_str()
            .unwrap_or_else(|| panic!("{label}: at is a string: {json}"));
        let parsed = OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{label}: at {at:?} is RFC 3339: {e}"));
        assert_eq!(parsed, rec.at.0, "{label}: serialised time");
        store.close().await;
    }
}

#[tokio::test]
async fn throttle_cas_refuses_stale_expectations_and_release_gives_back() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let now = clock::now();
        let one = ThrottleState {
            failures: 1,
            last_failure: now,
        };
        let two = ThrottleState {
            failures: 2,
            last_failure: now + Duration::seconds(1),
        };
        let cas = |expected, new| {
            let store = store.clone();
            async move {
                store
                    .throttle_cas("account:dora", expected, new)
                    .await
                    .unwrap_or_else(|e| panic!("{label}: throttle_cas: {e}"))
            }
        };
        assert!(cas(None, one).await, "{label}: insert when absent");
        assert!(!cas(None, one).await, "{label}: insert refused when present");
        assert!(!cas(Some(two), one).await, "{label}: stale expectation refused");
        assert!(cas(Some(one), two).await, "{label}: swap from the current value");
        assert!(!cas(Some(one), two).await, "{label}: the same swap twice is refused");
        let state = || {
            let store = store.clone();
            async move {
                store
                    .throttle_state("account:dora")
                    .await
                    .unwrap_or_else(|e| panic!("{label}: {e}"))
            }
        };
        assert_eq!(state().await, Some(two), "{label}: stored");
        store
            .release_throttle("account:dora")
            .await
            .unwrap_or_else(|e| panic!("{label}: release: {e}"));
        assert_eq!(state().await.map(|s| s.failures), Some(1), "{label}: one given back");
        for _ in 0..3 {
            store
                .release_throttle("account:dora")
                .await
                .unwrap_or_else(|e| panic!("{label}: release: {e}"));
        }
        assert_eq!(state().await, None, "{label}: a counter given back to zero is removed");
        store
            .release_throttle("account:nobody")
            .await
            .unwrap_or_else(|e| panic!("{label}: release of nothing: {e}"));
        assert_eq!(
            store
                .throttle_state("account:nobody")
                .await
                .unwrap_or_else(|e| panic!("{label}: {e}")),
            None,
            "{label}: releasing creates nothing"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn a_session_and_another_user_resolve_in_one_call() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let (alice, bob) = (new_user("alice"), new_user("bob"));
        insert(&store, label, &alice).await;
        insert(&store, label, &bob).await;
        let (s, hash) = fresh_session(&alice);
        login(&store, label, &s, &hash).await;
        let with = |hash: [u8; 32], target: Uuid| {
            let store = store.clone();
            async move {
                store
                    .session_by_token_hash_with(&hash, target)
                    .await
                    .unwrap_or_else(|e| panic!("{label}: session_by_token_hash_with: {e}"))
            }
        };

        let (session, caller, version, target) = with(hash, bob.uuid).await.expect("the session resolves");
        assert_eq!(session, s, "{label}: the session");
        assert_same_user(&caller, &alice, &format!("{label}: the caller"));
        assert_eq!(version, 1, "{label}: the caller's version");
        let (target, target_version) = target.expect("bob exists");
        assert_same_user(&target, &bob, &format!("{label}: the target"));
        assert_eq!(target_version, 1, "{label}: the target's version");

        let (_, _, _, myself) = with(hash, alice.uuid).await.expect("the session resolves");
        assert_same_user(
            &myself.expect("alice exists").0,
            &alice,
            &format!("{label}: oneself as target"),
        );

        let (_, _, _, nobody) = with(hash, Uuid::new_v4()).await.expect("the session resolves");
        assert!(nobody.is_none(), "{label}: a missing target is None");

        assert!(
            with(random_bytes::<32>(), bob.uuid).await.is_none(),
            "{label}: an unknown token resolves nothing"
        );
        store.close().await;
    }
}

// ---------------------------------------------------------------------------------------------
// 11. Event stream
// ---------------------------------------------------------------------------------------------

fn with_event(e: AuditEntry, stream: &'static str, subject: &str) -> AuditEntry {
    e.with_event(
        stream,
        "test.happened",
        subject,
        serde_json::json!({ "subject": subject }),
    )
}

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

#[tokio::test]
async fn a_numbering_pass_is_announced_to_listeners_on_connections_of_their_own() {
    // SQLite has one node: nothing to announce, no listener.
    let Some(db) = TestDb::postgres().await else { return };
    let store = Store::connect(
        &db.url,
        &StoreOptions {
            max_connections: 1,
            ..Default::default()
        },
    )
    .await
    .expect("connect");
    store.migrate().await.expect("migrate");
    let _work = store.work_listener().await.expect("work listener").expect("postgres");
    let mut events = store.event_listener().await.expect("event listener").expect("postgres");
    // The listeners hold connections of their own: the pool's only one still answers at once.
    tokio::time::timeout(std::time::Duration::from_secs(3), store.last_event_seq("people"))
        .await
        .expect("a query does not wait for a connection held by a listener")
        .expect("read");

    let alice = new_user("alice");
    store
        .insert_user(&alice, &with_event(create_entry(&alice), "people", "alice"))
        .await
        .expect("insert");
    assert_eq!(sequence_all(&store, "postgres").await, 1);
    // The pass announced what it numbered (anything else on the channel would do as well: a
    // notification is a hint to read again).
    let heard = tokio::time::timeout(std::time::Duration::from_secs(5), events.recv())
        .await
        .expect("announced within 5 s")
        .expect("listening");
    assert_eq!(heard, muster_store::Heard::Notification);
    store.close().await;
}

#[tokio::test]
async fn events_commit_with_their_change_and_are_numbered_per_stream() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let alice = new_user("alice");
        let created = with_event(create_entry(&alice), "people", "alice");
        store
            .insert_user(&alice, &created)
            .await
            .unwrap_or_else(|e| panic!("{label}: insert: {e}"));
        // A refused change publishes nothing: the event rolls back with it.
        let again = new_user("ALICE");
        let refused = store
            .insert_user(&again, &with_event(create_entry(&again), "people", "refused"))
            .await;
        assert!(
            matches!(refused, Err(StoreError::Duplicate("username"))),
            "{label}: duplicate refused"
        );
        store
            .insert_audit(&with_event(entry(actions::USER_UPDATE, None), "other", "x"))
            .await
            .unwrap_or_else(|e| panic!("{label}: insert_audit: {e}"));

        let before = store
            .events_after("people", 0, 10)
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        if store.backend() == Backend::Postgres {
            // Concurrent writers commit in any order: only the sequencer numbers, after commit.
            assert!(
                before.is_empty(),
                "{label}: nothing is readable before the sequencer numbers it"
            );
            assert_eq!(sequence_all(&store, label).await, 2, "{label}: two events to number");
        } else {
            // One writer at a time: each write numbers its events as it writes them.
            assert_eq!(before.len(), 1, "{label}: numbered as written");
            assert_eq!(sequence_all(&store, label).await, 0, "{label}: nothing left to number");
        }
        let people = store
            .events_after("people", 0, 10)
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(people.len(), 1, "{label}: the refused insert published nothing");
        assert_eq!(
            (people[0].seq, people[0].kind.as_str()),
            (1, "test.happened"),
            "{label}"
        );
        assert_eq!(people[0].subject.as_deref(), Some("alice"), "{label}");
        assert_eq!(people[0].data.0["subject"], "alice", "{label}");
        assert_eq!(
            people[0].cid.as_deref(),
            Some("t"),
            "{label}: the change's correlation id"
        );
        let other = store
            .events_after("other", 0, 10)
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(
            other.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1],
            "{label}: streams count separately"
        );
        assert_eq!(
            store
                .last_event_seq("people")
                .await
                .unwrap_or_else(|e| panic!("{label}: {e}")),
            1,
            "{label}"
        );
        assert_eq!(
            store
                .last_event_seq("nothing")
                .await
                .unwrap_or_else(|e| panic!("{label}: {e}")),
            0,
            "{label}"
        );
        // A failed audit (a refusal) publishes nothing even if an event was attached.
        let failed = with_event(entry(actions::USER_UPDATE, None), "people", "no").failed("E005005");
        store
            .insert_audit(&failed)
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(
            sequence_all(&store, label).await,
            0,
            "{label}: refusals publish nothing"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn concurrent_writers_and_sequencers_number_every_event_once_without_gaps() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0..10 {
                        let stream = if i % 2 == 0 { "even" } else { "odd" };
                        let e = with_event(entry(actions::USER_UPDATE, None), stream, &format!("{w}-{i}"));
                        store.insert_audit(&e).await?;
                    }
                    Ok::<_, StoreError>(())
                })
            })
            .collect();
        let sequencers: Vec<_> = (0..3)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    for _ in 0..20 {
                        store.sequence_events(7).await?;
                    }
                    Ok::<_, StoreError>(())
                })
            })
            .collect();
        for t in writers.into_iter().chain(sequencers) {
            t.await
                .unwrap_or_else(|e| panic!("{label}: task: {e}"))
                .unwrap_or_else(|e| panic!("{label}: {e}"));
        }
        sequence_all(&store, label).await;
        for stream in ["even", "odd"] {
            let events = store
                .events_after(stream, 0, 1000)
                .await
                .unwrap_or_else(|e| panic!("{label}: {e}"));
            let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
            assert_eq!(
                seqs,
                (1..=40).collect::<Vec<_>>(),
                "{label}: {stream} is numbered 1..=40 without gaps"
            );
            let mut subjects: Vec<_> = events.iter().filter_map(|e| e.subject.clone()).collect();
            subjects.sort();
            subjects.dedup();
            assert_eq!(subjects.len(), 40, "{label}: every event exactly once in {stream}");
        }
        store.close().await;
    }
}

/// The reason for the sequencer: on PostgreSQL a transaction that inserted its event first may
/// commit last. A follower at cursor N must still see it, so it must be numbered after N.
#[tokio::test]
async fn an_event_that_commits_late_is_numbered_after_those_already_read() {
    let Some(db) = TestDb::postgres().await else { return };
    let store = open(&db).await;
    let raw = sqlx::PgPool::connect(&db.url).await.expect("raw connection");
    let mut late = raw.begin().await.expect("begin");
    sqlx::query("INSERT INTO events (stream, kind, subject, at, data) VALUES ('late', 'test.happened', 'first-in', now(), '{}')")
        .execute(&mut *late)
        .await
        .expect("insert, not yet committed");
    store
        .insert_audit(&with_event(entry(actions::USER_UPDATE, None), "late", "second-in"))
        .await
        .expect("committed event");
    sequence_all(&store, "postgres").await;
    let seen = store.events_after("late", 0, 10).await.expect("read");
    assert_eq!(
        seen.iter().map(|e| e.subject.as_deref()).collect::<Vec<_>>(),
        vec![Some("second-in")]
    );
    let cursor = seen[0].seq;
    late.commit().await.expect("late commit");
    sequence_all(&store, "postgres").await;
    let after = store.events_after("late", cursor, 10).await.expect("read");
    assert_eq!(
        after.len(),
        1,
        "the late event is not skipped by a follower at cursor {cursor}"
    );
    assert_eq!(after[0].subject.as_deref(), Some("first-in"));
    assert_eq!(after[0].seq, cursor + 1);
    raw.close().await;
    store.close().await;
}

#[tokio::test]
async fn a_login_that_read_a_stale_user_or_a_spent_step_opens_nothing() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let alice = new_user("alice");
        insert(&store, label, &alice).await;
        let audits = audit_total(&store, label).await;
        let attempt = |version: i64, step: Option<i64>| {
            let store = store.clone();
            let (s, hash) = fresh_session(&alice);
            async move {
                let guard = LoginGuard {
                    user_version: version,
                    totp_step: step,
                };
                let opened = store
                    .open_session(
                        &s,
                        &hash,
                        guard,
                        None,
                        &ThrottleReset::clearing(&["account:alice"]),
                        &entry(actions::SESSION_LOGIN, None),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{label}: open_session: {e}"));
                (
                    opened,
                    store
                        .session_by_token_hash(&hash)
                        .await
                        .unwrap_or_else(|e| panic!("{label}: {e}"))
                        .is_some(),
                )
            }
        };
        assert_eq!(
            attempt(2, None).await,
            (false, false),
            "{label}: stale version: no session"
        );
        assert_eq!(audit_total(&store, label).await, audits, "{label}: and no audit record");
        assert_eq!(
            attempt(1, Some(50)).await,
            (true, true),
            "{label}: current version, fresh step"
        );
        let (_, version) = load_some(&store, label, alice.uuid).await;
        assert_eq!(version, 2, "{label}: spending the step bumped the version");
        assert_eq!(
            attempt(2, Some(50)).await,
            (false, false),
            "{label}: the same step again"
        );
        assert_eq!(
            attempt(2, None).await,
            (true, true),
            "{label}: no step, current version"
        );
        store.close().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Transactions committed together (SQLite's group commit) still stand or fall on their own
// ---------------------------------------------------------------------------------------------

/// Many transactions at once, as workflow steps make them: on SQLite they queue for the one
/// writer and are committed in groups. Each must still commit, roll back, be dropped or lose
/// its lease on its own: what one does never undoes or keeps another's writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transactions_commit_or_roll_back_each_on_its_own() {
    use muster_core::workflow::{ProcessStatus, StepStatus};
    use muster_store::{Fence, ProcessUpdate, StepLog};
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..60usize {
            let store = store.clone();
            tasks.spawn(async move {
                let mut tx = store.begin().await?;
                tx.audit(&entry(actions::USER_CREATE, Some(format!("g{i}")))).await?;
                // Hold the writer a moment, so that others queue behind this one.
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                let r = match i % 5 {
                    0 => tx.commit().await,
                    1 => tx.rollback().await,
                    2 => {
                        drop(tx);
                        Ok(())
                    }
                    3 => {
                        tx.audit(&entry(actions::USER_CREATE, Some(format!("g{i}")))).await?;
                        tx.commit().await
                    }
                    _ => {
                        // A lease that is not held: the commit is refused, nothing of it stays.
                        let now = clock::now();
                        let fence = Fence {
                            process_id: Uuid::new_v4(),
                            attempt: 1,
                            worker: "nobody".into(),
                        };
                        let log = StepLog {
                            name: "s".into(),
                            status: StepStatus::Success,
                            state_delta: serde_json::json!({}),
                            created_by: "t".into(),
                            started_at: now,
                            completed_at: now,
                            retries: 0,
                        };
                        let up = ProcessUpdate {
                            status: ProcessStatus::Running,
                            last_step: "s".into(),
                            next_step: None,
                            state: serde_json::json!({}),
                            run_after: None,
                            lease_until: None,
                            failed_reason: None,
                            traceback: None,
                            retries: 0,
                            assignee: "SYSTEM".into(),
                            callback_token_hash: None,
                            callback_deadline: None,
                            now,
                        };
                        tx.stage_step(&fence, &log, &up).await?;
                        match tx.commit().await {
                            Err(StoreError::Fenced) => Ok(()),
                            Err(e) => Err(e),
                            Ok(()) => Err(StoreError::Corrupt("a lost lease committed".into())),
                        }
                    }
                };
                r.map(|()| i)
            });
        }
        while let Some(done) = tasks.join_next().await {
            let i = done
                .unwrap_or_else(|e| panic!("{label}: task: {e}"))
                .unwrap_or_else(|e| panic!("{label}: transaction: {e}"));
            assert!(i < 60, "{label}");
        }
        // A dropped transaction is rolled back by a task of its own: give it a moment.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        for i in 0..60usize {
            let (n, _) = store
                .list_audit(&AuditQuery {
                    target: Some(format!("g{i}")),
                    limit: 10,
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|e| panic!("{label}: list_audit: {e}"));
            let want = match i % 5 {
                0 => 1,
                3 => 2,
                _ => 0,
            };
            assert_eq!(n, want, "{label}: transaction {i} (kind {})", i % 5);
        }
        // The writer is free again: a transaction on its own still commits at once.
        let mut tx = store.begin().await.expect("begin");
        tx.audit(&entry(actions::USER_CREATE, Some("after".into())))
            .await
            .expect("audit");
        tx.commit().await.expect("commit");
        store.close().await;
    }
}

/// Events are numbered in the order their writes committed, whichever way they were written:
/// a one-shot write's event (numbered as written on SQLite, by the sequencer on PostgreSQL)
/// comes before that of a transaction committed after it, and numbers have no gaps.
#[tokio::test]
async fn events_are_numbered_in_commit_order_however_written() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let first = entry(actions::USER_CREATE, Some("first".into())).with_event(
            "directory",
            "user.created",
            "first",
            serde_json::json!({}),
        );
        store.insert_audit(&first).await.expect("one-shot write");
        let mut tx = store.begin().await.expect("begin");
        let second = entry(actions::USER_CREATE, Some("second".into())).with_event(
            "directory",
            "user.created",
            "second",
            serde_json::json!({}),
        );
        tx.audit(&second).await.expect("audit");
        tx.commit().await.expect("commit");
        store.sequence_events(100).await.expect("sequence");
        let events = store.events_after("directory", 0, 10).await.expect("events");
        let order: Vec<(i64, Option<String>)> = events.iter().map(|e| (e.seq, e.subject.clone())).collect();
        assert_eq!(
            order,
            vec![(1, Some("first".into())), (2, Some("second".into()))],
            "{label}"
        );
        store.close().await;
    }
}

/// On SQLite, where every write numbers its events, the sequencer still numbers one found
/// without a number (written by an older version), after those already numbered.
#[tokio::test]
async fn sqlite_sequencer_numbers_an_event_written_without_a_number() {
    let db = TestDb::sqlite();
    let store = open(&db).await;
    store
        .insert_audit(&with_event(entry(actions::USER_UPDATE, None), "legacy", "numbered"))
        .await
        .expect("numbered as written");
    assert_eq!(sequence_all(&store, "sqlite").await, 0, "nothing left to number");
    let raw = sqlx::SqlitePool::connect(&db.url).await.expect("raw connection");
    sqlx::query("INSERT INTO events (stream, kind, subject, at, data) VALUES ('legacy', 'test.happened', 'unnumbered', 0, '{}')")
        .execute(&raw)
        .await
        .expect("an event without a number");
    raw.close().await;
    assert_eq!(sequence_all(&store, "sqlite").await, 1, "the one without a number");
    let events = store.events_after("legacy", 0, 10).await.expect("events");
    let order: Vec<(i64, Option<String>)> = events.iter().map(|e| (e.seq, e.subject.clone())).collect();
    assert_eq!(
        order,
        vec![(1, Some("numbered".into())), (2, Some("unnumbered".into()))]
    );
    store.close().await;
}

/// Retention deletes old numbered events, oldest first per stream, in batches; records how far
/// it went in each stream; leaves other streams and newer events alone; and never disturbs the
/// numbering that goes on afterwards.
#[tokio::test]
async fn purging_old_events_deletes_a_prefix_per_stream_and_numbering_goes_on() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let now = OffsetDateTime::now_utc();
        let write = |stream: &'static str, subject: String, age_days: i64| {
            let mut e = with_event(entry(actions::USER_UPDATE, None), stream, &subject);
            e.at = now - Duration::days(age_days);
            e
        };
        for i in 1..=5 {
            store
                .insert_audit(&write("old", format!("old{i}"), 40))
                .await
                .unwrap_or_else(|e| panic!("{label}: {e}"));
        }
        for i in 6..=7 {
            store
                .insert_audit(&write("old", format!("new{i}"), 1))
                .await
                .unwrap_or_else(|e| panic!("{label}: {e}"));
        }
        store
            .insert_audit(&write("fresh", "fresh1".into(), 1))
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        sequence_all(&store, label).await;

        // Batches of two: the five old events go in three transactions.
        let cutoff = now - Duration::days(30);
        let n = store
            .purge_events(cutoff, 2)
            .await
            .unwrap_or_else(|e| panic!("{label}: purge: {e}"));
        assert_eq!(n, 5, "{label}");
        let left: Vec<(i64, Option<String>)> = store
            .events_after("old", 0, 10)
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"))
            .into_iter()
            .map(|e| (e.seq, e.subject))
            .collect();
        assert_eq!(
            left,
            vec![(6, Some("new6".into())), (7, Some("new7".into()))],
            "{label}"
        );
        let purged = |stream: &'static str| {
            let store = store.clone();
            async move { store.purged_event_seq(stream).await.expect("purged_seq") }
        };
        assert_eq!(purged("old").await, 5, "{label}");
        assert_eq!(purged("fresh").await, 0, "{label}: other streams are untouched");
        assert_eq!(purged("nothing").await, 0, "{label}");
        assert_eq!(
            store.events_after("fresh", 0, 10).await.expect("events").len(),
            1,
            "{label}"
        );

        // Nothing more to do: a second pass deletes nothing and moves nothing.
        assert_eq!(store.purge_events(cutoff, 2).await.expect("purge"), 0, "{label}");
        assert_eq!(purged("old").await, 5, "{label}");

        // Numbering goes on from where it was.
        store
            .insert_audit(&write("old", "after".into(), 0))
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        sequence_all(&store, label).await;
        let last = store.events_after("old", 7, 10).await.expect("events");
        assert_eq!(last.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![8], "{label}");
        assert_eq!(store.last_event_seq("old").await.expect("last"), 8, "{label}");

        // An old event not yet numbered (PostgreSQL numbers after commit) is left alone; on
        // SQLite it was numbered as it was written, and goes.
        store
            .insert_audit(&write("slow", "unnumbered".into(), 40))
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        let n = store.purge_events(cutoff, 2).await.expect("purge");
        if store.backend() == Backend::Postgres {
            assert_eq!(n, 0, "{label}: an unnumbered event is never deleted");
            assert_eq!(
                sequence_all(&store, label).await,
                1,
                "{label}: it is still there to number"
            );
            assert_eq!(store.purge_events(cutoff, 2).await.expect("purge"), 1, "{label}");
        } else {
            assert_eq!(n, 1, "{label}");
        }
        assert_eq!(purged("slow").await, 1, "{label}");
        store.close().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Look-alike usernames (migration 0008)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn look_alike_usernames_are_refused_by_the_index_even_when_racing() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        insert(&store, label, &new_user("admin")).await;
        insert(&store, label, &new_user("straße")).await;
        let audits = audit_total(&store, label).await;
        for name in ["\u{430}dmin", "adrnin", "STRASSE", "strasse"] {
            let dup = new_user(name);
            let r = store.insert_user(&dup, &create_entry(&dup)).await;
            assert!(
                matches!(r, Err(StoreError::Duplicate("username"))),
                "{label}: inserting {name:?}: {r:?}"
            );
            assert!(
                load(&store, label, dup.uuid).await.is_none(),
                "{label}: {name:?}: no row"
            );
        }
        assert_eq!(audit_total(&store, label).await, audits, "{label}: nothing audited");

        // Renaming into a look-alike is refused too, and changes nothing.
        let bob = new_user("bob");
        insert(&store, label, &bob).await;
        let mut rename = bob.clone();
        rename.username = "\u{430}dmin".into();
        let r = store.update_user(&rename, 1, false, &create_entry(&rename)).await;
        assert!(matches!(r, Err(StoreError::Duplicate("username"))), "{label}: {r:?}");
        let (kept, _) = load(&store, label, bob.uuid).await.expect("bob");
        assert_eq!(kept.username, "bob", "{label}: rename refused");

        // Eight look-alikes of one new name at once: exactly one goes in.
        let names = [
            "carol",
            "car\u{43e}l",
            "\u{441}arol",
            "CAROL",
            "c\u{430}rol",
            "car\u{3bf}l",
            "\u{441}ar\u{43e}l",
            "\u{ff43}\u{ff41}\u{ff52}\u{ff4f}\u{ff4c}",
        ];
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(names.len()));
        let tasks: Vec<_> = names
            .iter()
            .map(|name| {
                let (store, barrier) = (store.clone(), barrier.clone());
                let u = new_user(name);
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.insert_user(&u, &create_entry(&u)).await
                })
            })
            .collect();
        let (mut ok, mut clash) = (0, 0);
        for t in tasks {
            match t.await.unwrap_or_else(|e| panic!("{label}: task: {e}")) {
                Ok(()) => ok += 1,
                Err(StoreError::Duplicate(_)) => clash += 1,
                Err(e) => panic!("{label}: concurrent insert_user: unexpected error {e:?}"),
            }
        }
        assert_eq!(ok, 1, "{label}: one of the look-alikes goes in ({clash} refused)");
        store.close().await;
    }
}

/// Makes `user`'s row look as it did before migration 0008: `username` as stored then, its key
/// lower-cased, no look-alike key.
async fn as_before_0008(db: &TestDb, user: Uuid, username: &str) {
    let sql = "UPDATE users SET username = $2, username_key = $3, username_skeleton = NULL WHERE uuid = $1";
    if db.label == "postgres" {
        let raw = sqlx::PgPool::connect(&db.url).await.expect("raw connection");
        sqlx::query(sql)
            .bind(user)
            .bind(username)
            .bind(username.to_lowercase())
            .execute(&raw)
            .await
            .expect("legacy row");
        raw.close().await;
    } else {
        let raw = sqlx::SqlitePool::connect(&db.url).await.expect("raw connection");
        sqlx::query(sql)
            .bind(user)
            .bind(username)
            .bind(username.to_lowercase())
            .execute(&raw)
            .await
            .expect("legacy row");
        raw.close().await;
    }
}

#[tokio::test]
async fn keys_of_rows_from_before_the_username_rules_are_filled_in_and_clashes_flagged() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let t0 = clock::now() - Duration::days(100);
        // (name as stored before the rules, sign-up day); each is inserted under a neutral name
        // first, then turned into the old row.
        let old = [
            ("\u{ff41}\u{ff44}\u{ff4d}\u{ff49}\u{ff4e}", 0), // full-width: its key changes
            ("admin", 1),
            ("\u{430}dmin", 2), // Cyrillic а
            ("STRASSE", 3),
            ("Stra\u{df}e", 4),
            ("Admin\u{200b}", 5), // refused by PRECIS today
            ("bob", 6),
        ];
        let mut ids = Vec::new();
        for (i, (name, day)) in old.iter().enumerate() {
            let mut u = new_user(&format!("placeholder{i}x"));
            u.sign_up_time = t0 + Duration::days(*day);
            insert(&store, label, &u).await;
            as_before_0008(&db, u.uuid, name).await;
            ids.push(u.uuid);
        }
        let audits = audit_total(&store, label).await;

        let mut conflicts = store
            .fill_username_keys()
            .await
            .unwrap_or_else(|e| panic!("{label}: fill_username_keys: {e}"));
        conflicts.sort_by_key(|c| ids.iter().position(|u| *u == c.user));
        let (fullwidth, admin, cyrillic, strasse, strasse2, zwsp) = (ids[0], ids[1], ids[2], ids[3], ids[4], ids[5]);
        assert_eq!(
            conflicts,
            vec![
                // The full-width name signed up first, but "admin" already held the key: a name
                // that logs in today keeps doing so.
                UsernameConflict {
                    user: fullwidth,
                    with: Some(admin)
                },
                UsernameConflict {
                    user: cyrillic,
                    with: Some(admin)
                },
                UsernameConflict {
                    user: strasse2,
                    with: Some(strasse)
                },
                UsernameConflict {
                    user: zwsp,
                    with: Some(admin)
                },
            ],
            "{label}"
        );
        assert_eq!(
            audit_total(&store, label).await,
            audits + 4,
            "{label}: each clash audited"
        );
        let rec = newest_audit(&store, label).await;
        assert_eq!(rec.action, actions::USER_USERNAME_CONFLICT, "{label}");
        assert_eq!(
            rec.target.as_deref(),
            Some(muster_core::ids::UserId::from_uuid(fullwidth).to_string().as_str()),
            "{label}: names whose key changes are done last"
        );

        // Every account is still there; names reach the accounts that kept their keys.
        assert_eq!(user_count(&store, label).await, 7, "{label}");
        for (typed, owner) in [
            ("ADMIN", admin),
            ("\u{ff41}\u{ff44}\u{ff4d}\u{ff49}\u{ff4e}", admin),
            ("strasse", strasse),
            ("Stra\u{df}e", strasse2),
            ("Admin\u{200b}", zwsp),
            ("BOB", ids[6]),
        ] {
            let (got, _) = store
                .user_by_username(typed)
                .await
                .unwrap_or_else(|e| panic!("{label}: {e}"))
                .unwrap_or_else(|| panic!("{label}: {typed:?} should be found"));
            assert_eq!(got.uuid, owner, "{label}: {typed:?}");
        }
        // A flagged user can still be changed otherwise (its keys stay)…
        let (mut u, version) = load(&store, label, fullwidth).await.expect("row");
        u.email = Some("fw@example.org".into());
        assert!(
            store
                .update_user(&u, version, false, &create_entry(&u))
                .await
                .expect("update"),
            "{label}"
        );
        // …and renamed out of the clash.
        let (mut u, version) = load(&store, label, fullwidth).await.expect("row");
        u.username = "admin-two".into();
        assert!(
            store
                .update_user(&u, version, false, &create_entry(&u))
                .await
                .expect("rename"),
            "{label}"
        );
        assert_eq!(
            store
                .user_by_username("ADMIN-TWO")
                .await
                .expect("read")
                .map(|(u, _)| u.uuid),
            Some(fullwidth)
        );

        // Nothing left to do, and a clash never comes back.
        assert_eq!(store.fill_username_keys().await.expect("again"), vec![], "{label}");
        // A new look-alike of a flagged name's owner is refused as ever.
        let dup = new_user("\u{430}DMIN");
        assert!(store.insert_user(&dup, &create_entry(&dup)).await.is_err(), "{label}");
        store.close().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Login throttle: names failing per address, known addresses
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn address_failures_count_distinct_names_and_known_addresses_last() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let now = clock::now();
        let hour_ago = now - Duration::hours(1);
        let (addr, other) = ("address:a", "address:b");
        for (name, at) in [
            ("account:1", now),
            ("account:2", now - Duration::minutes(30)),
            ("account:old", now - Duration::hours(2)),
        ] {
            store.note_address_failure(addr, name, at).await.expect("note");
        }
        store.note_address_failure(other, "account:9", now).await.expect("note");
        // Noting a name again moves its time, not the count.
        store
            .note_address_failure(addr, "account:2", now)
            .await
            .expect("note again");
        let (n, latest) = store
            .address_failures_besides(addr, "account:new", hour_ago)
            .await
            .expect("count");
        assert_eq!(
            (n, latest),
            (2, Some(now)),
            "{label}: two live names, the old one lapsed"
        );
        let (n, _) = store
            .address_failures_besides(addr, "account:1", hour_ago)
            .await
            .expect("count");
        assert_eq!(n, 1, "{label}: the asking name is not counted");
        assert!(
            store
                .address_failure_live(addr, "account:1", hour_ago)
                .await
                .expect("live")
        );
        assert!(
            !store
                .address_failure_live(addr, "account:old", hour_ago)
                .await
                .expect("lapsed")
        );
        store.forget_address_failure(addr, "account:1").await.expect("forget");
        assert!(
            !store
                .address_failure_live(addr, "account:1", hour_ago)
                .await
                .expect("forgotten")
        );

        // Known addresses are written by a login (see open_session's test); none here.
        assert!(
            !store
                .login_address_known("account:1", addr, hour_ago)
                .await
                .expect("unknown")
        );
        // Purging: lapsed names and long-unused known addresses go.
        let purged = store
            .purge_login_records(hour_ago, now - Duration::days(90))
            .await
            .expect("purge");
        assert_eq!(purged, 1, "{label}: the lapsed name");
        store.close().await;
    }
}
