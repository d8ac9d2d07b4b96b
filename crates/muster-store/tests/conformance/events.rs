//! Conformance of the event stream: events commit with their change and are numbered per
//! stream, once, without gaps, in commit order.

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------------------------------------
// 11. Event stream
// ---------------------------------------------------------------------------------------------

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

#[tokio::test]
async fn a_transaction_holding_thousands_of_events_commits_them_all_in_order() {
    // More events than one statement could carry arguments for on SQLite (about 4,600 at 7
    // arguments each): they go in by several statements and are numbered as one run.
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let mut tx = store.begin().await.unwrap_or_else(|e| panic!("{label}: begin: {e}"));
        let at = OffsetDateTime::now_utc();
        for i in 0..6_000 {
            let stream = if i % 3 == 0 { "bulk.other" } else { "bulk" };
            let event = muster_core::audit::Event {
                stream,
                kind: "test.happened",
                subject: Some(i.to_string()),
                data: serde_json::json!({ "i": i }),
            };
            tx.event(&event, at, Some("t"))
                .await
                .unwrap_or_else(|e| panic!("{label}: event: {e}"));
        }
        tx.commit().await.unwrap_or_else(|e| panic!("{label}: commit: {e}"));
        sequence_all(&store, label).await;
        for (stream, expected) in [("bulk", 4_000i64), ("bulk.other", 2_000)] {
            let events = store
                .events_after(stream, 0, 10_000)
                .await
                .unwrap_or_else(|e| panic!("{label}: {e}"));
            assert_eq!(
                events.len() as i64,
                expected,
                "{label}: {stream}: every event committed"
            );
            let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
            assert_eq!(
                seqs,
                (1..=expected).collect::<Vec<i64>>(),
                "{label}: {stream}: numbered once, no gaps"
            );
            let order: Vec<i64> = events.iter().map(|e| e.data.0["i"].as_i64().unwrap_or(-1)).collect();
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(order, sorted, "{label}: {stream}: in the order they were written");
        }
    }
}
