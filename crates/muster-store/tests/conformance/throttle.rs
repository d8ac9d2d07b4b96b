//! Conformance of the login throttle: failures counted per name within the window, per
//! address across names, and purged.

#[allow(unused_imports)]
use super::*;

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
