//! Conformance of sessions: opening (with the throttle cleared and the audit record), touch
//! and renew, deletion and purging.

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------------------------------------
// 8. Sessions
// ---------------------------------------------------------------------------------------------

async fn fail_login(store: &Store, label: &str, keys: &[&str], now: OffsetDateTime) {
    let keyed: Vec<(&str, OffsetDateTime)> = keys.iter().map(|k| (*k, now - Duration::minutes(15))).collect();
    count_failures(store, &keyed, now)
        .await
        .unwrap_or_else(|e| panic!("{label}: count_failures: {e}"));
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
