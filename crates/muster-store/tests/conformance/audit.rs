//! Conformance of the audit log (filters, pages, order, details) and of the reads that
//! resolve a session with its user.

#[allow(unused_imports)]
use super::*;

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
