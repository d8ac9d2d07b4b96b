//! Conformance of the `users` table: round trips of every field, uniqueness, optimistic
//! updates, deletion, TOTP steps, concurrent writers and search.

#[allow(unused_imports)]
use super::*;

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
