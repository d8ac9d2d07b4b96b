//! Transactions committed together (SQLite's group commit) still stand or fall on their own;
//! event numbering and retention across them.

#[allow(unused_imports)]
use super::*;

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
