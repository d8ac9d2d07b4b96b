//! The event stream over HTTP: directory changes appear in order, numbered without gaps; a
//! Server-Sent Events client resumes exactly after the last event it saw; events past their
//! retention are deleted and cursors older than what is kept are refused.

use crate::common::Server;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Reads the directory stream as JSON until `pred` holds for some event (sequencing is async).
async fn wait_for(s: &Server, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = s
            .get("/api/events?stream=directory&after=0&limit=1000", &s.admin_token)
            .await
            .expect(200);
        let events = page.body["events"].as_array().cloned().unwrap_or_default();
        if events.iter().any(&pred) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "{}: event did not appear: {}",
            s.label,
            page.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens an SSE connection and returns the (id, event, data) triples of the first `n` events.
async fn sse(s: &Server, query: &str, last_event_id: Option<i64>, n: usize) -> Vec<(i64, String, Value)> {
    let mut req = s
        .request(Method::GET, &format!("/api/events?stream=directory{query}"))
        .bearer_auth(&s.admin_token)
        .header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id.to_string());
    }
    let mut resp = req.send().await.expect("sse request");
    assert_eq!(resp.status(), 200, "{}", s.label);
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(ct.starts_with("text/event-stream"), "{}: {ct}", s.label);
    let mut text = String::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, resp.chunk())
            .await
            .expect("events arrive in time")
            .expect("chunk");
        text.push_str(&String::from_utf8_lossy(&chunk.expect("stream still open")));
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let (mut id, mut kind, mut data) = (None, String::new(), Value::Null);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    kind = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = serde_json::from_str(v.trim()).expect("json data");
                }
            }
            if let Some(id) = id {
                out.push((id, kind, data));
            }
        }
    }
    out
}

#[tokio::test]
async fn directory_changes_are_published_in_order_and_resumable() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let user = s
            .create_user(json!({"username": "ev1", "password": "Ev3nt-passw0rd", "first_name": "Eve"}))
            .await;
        let user_id = user["user_id"].as_str().expect("user_id").to_owned();
        let events = wait_for(&s, |e| e["kind"] == "user.created" && e["subject"] == user_id.as_str()).await;
        let seqs: Vec<i64> = events.iter().filter_map(|e| e["seq"].as_i64()).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as i64).collect::<Vec<_>>(),
            "{l}: numbered 1, 2, 3, … without gaps"
        );
        let created = events
            .iter()
            .find(|e| e["subject"] == user_id.as_str())
            .expect("created");
        assert_eq!(created["data"]["username"], "ev1", "{l}");
        assert_eq!(created["stream"], "directory", "{l}");
        let text = created.to_string();
        for secret in ["Ev3nt-passw0rd", "password_hash", "totp_key"] {
            assert!(!text.contains(secret), "{l}: the event carries no {secret}");
        }

        // A lock is published with what changed; a refused change publishes nothing.
        s.post(&format!("/api/users/{user_id}/lock"), &s.admin_token, json!({}))
            .await
            .expect(200);
        let events = wait_for(&s, |e| {
            e["kind"] == "user.updated" && e["data"]["changed"] == json!(["is_locked"])
        })
        .await;
        let count = events.len();
        s.post("/api/users", &s.admin_token, json!({"username": "EV1"}))
            .await
            .expect_problem(409, "E001002");
        tokio::time::sleep(Duration::from_millis(700)).await;
        let page = s
            .get("/api/events?stream=directory&after=0&limit=1000", &s.admin_token)
            .await
            .expect(200);
        assert_eq!(
            page.body["events"].as_array().map(Vec::len),
            Some(count),
            "{l}: refusals publish nothing"
        );
        assert_eq!(page.body["last_seq"], json!(count), "{l}");

        // SSE from the start, then resume after the second event with Last-Event-ID.
        let all = sse(&s, "&after=0", None, count).await;
        assert_eq!(
            all.iter().map(|e| e.0).collect::<Vec<_>>(),
            (1..=count as i64).collect::<Vec<_>>(),
            "{l}"
        );
        assert_eq!(
            all.last().map(|e| e.1.as_str()),
            Some("user.updated"),
            "{l}: the SSE event type is the kind"
        );
        let resumed = sse(&s, "", Some(2), count - 2).await;
        assert_eq!(
            resumed.first().map(|e| e.0),
            Some(3),
            "{l}: resumes right after Last-Event-ID"
        );

        // Live: a follower with no cursor gets only what happens after it connected.
        let follower = {
            let base = s.base.clone();
            let token = s.admin_token.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut resp = client
                    .get(format!("{base}/api/events?stream=directory"))
                    .bearer_auth(token)
                    .header("accept", "text/event-stream")
                    .send()
                    .await
                    .expect("live sse");
                let mut text = String::new();
                while !text.contains("\n\n") || !text.contains("id:") {
                    let chunk = resp.chunk().await.expect("chunk").expect("open");
                    text.push_str(&String::from_utf8_lossy(&chunk));
                }
                text
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.create_user(json!({"username": "ev2"})).await;
        let text = tokio::time::timeout(Duration::from_secs(10), follower)
            .await
            .expect("live event in time")
            .expect("task");
        assert!(
            text.contains(&format!("id: {}", count + 1)) || text.contains(&format!("id:{}", count + 1)),
            "{l}: {text}"
        );
        assert!(text.contains("ev2"), "{l}: {text}");

        // Refusals: unknown stream, regular users, no token, unknown parameters.
        s.get("/api/events?stream=nope", &s.admin_token)
            .await
            .expect_problem(400, "E008002");
        let (_, regular) = s.user_with_session("ev3", "Ev3nt-passw0rd").await;
        s.get("/api/events?stream=directory", &regular)
            .await
            .expect_problem(403, "E005005");
        s.call(Method::GET, "/api/events?stream=directory", None, None)
            .await
            .expect_problem(401, "E007001");
        s.get("/api/events?stream=directory&bogus=1", &s.admin_token)
            .await
            .expect(400);
    }
}

/// Ages the directory stream's events numbered up to `upto` by 40 days, straight in the
/// database (the API has no way to make old events).
async fn age_events(s: &Server, upto: i64) {
    let sql = if s.db_url.starts_with("sqlite:") {
        // Timestamps are microseconds since the epoch on SQLite.
        format!("UPDATE events SET at = at - 40 * 86400 * 1000000 WHERE stream = 'directory' AND seq <= {upto}")
    } else {
        format!("UPDATE events SET at = at - interval '40 days' WHERE stream = 'directory' AND seq <= {upto}")
    };
    let q = sqlx::AssertSqlSafe(sql);
    if s.db_url.starts_with("sqlite:") {
        let opts = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&s.db_url)
            .expect("sqlite url")
            .busy_timeout(Duration::from_secs(10));
        let pool = sqlx::SqlitePool::connect_with(opts).await.expect("sqlite");
        sqlx::query(q).execute(&pool).await.expect("age events");
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(&s.db_url).await.expect("postgres");
        sqlx::query(q).execute(&pool).await.expect("age events");
        pool.close().await;
    }
}

/// Events past their retention are deleted by `task_clean_up_events`; a reader or an SSE client
/// whose cursor is older than what is kept is told so with 410, not silently moved past.
#[tokio::test]
async fn events_past_their_retention_are_deleted_and_older_cursors_are_refused() {
    for s in Server::all(&[]).await {
        let l = s.label;
        for name in ["old1", "old2", "old3"] {
            s.create_user(json!({"username": name})).await;
        }
        let events = wait_for(&s, |e| e["data"]["username"] == "old3").await;
        let aged = events.len() as i64;
        age_events(&s, aged).await;
        s.create_user(json!({"username": "recent"})).await;
        wait_for(&s, |e| e["data"]["username"] == "recent").await;

        let r = s
            .post("/api/processes/task_clean_up_events", &s.admin_token, json!([]))
            .await
            .expect(201);
        let pid = r.body["id"].as_str().expect("process id").to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        let task = loop {
            let p = s
                .get(&format!("/api/processes/{pid}"), &s.admin_token)
                .await
                .expect(200)
                .body;
            if p["last_status"] == "completed" {
                break p;
            }
            assert!(Instant::now() < deadline, "{l}: the task did not complete: {p}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(task["current_state"]["deleted"], json!(aged), "{l}: {task}");
        assert_eq!(task["current_state"]["retention_days"], 30, "{l}");

        // What is kept starts right after the deleted ones; older cursors are refused.
        let page = s
            .get(&format!("/api/events?stream=directory&after={aged}"), &s.admin_token)
            .await
            .expect(200);
        let first = &page.body["events"][0];
        assert_eq!(first["seq"], json!(aged + 1), "{l}: {}", page.body);
        assert_eq!(first["data"]["username"], "recent", "{l}");
        // Without a cursor a page starts at the oldest event kept, and says where to go on.
        let page = s.get("/api/events?stream=directory", &s.admin_token).await.expect(200);
        assert_eq!(page.body["events"][0]["seq"], json!(aged + 1), "{l}: {}", page.body);
        assert_eq!(page.body["next_after"], page.body["last_seq"], "{l}: {}", page.body);
        for after in [0, aged - 1] {
            let r = s
                .get(&format!("/api/events?stream=directory&after={after}"), &s.admin_token)
                .await
                .expect_problem(410, "events_expired");
            let detail = r.body["detail"].as_str().unwrap_or("");
            assert!(detail.contains(&format!("up to {aged}")), "{l}: {detail}");
        }
        let sse = |last: i64| {
            s.request(Method::GET, "/api/events?stream=directory")
                .bearer_auth(&s.admin_token)
                .header("accept", "text/event-stream")
                .header("last-event-id", last.to_string())
                .send()
        };
        let refused = sse(1).await.expect("sse request");
        assert_eq!(refused.status(), 410, "{l}: a reconnect past retention is refused");
        let resumed = sse(aged).await.expect("sse request");
        assert_eq!(resumed.status(), 200, "{l}");
        drop(resumed);

        // Numbering goes on after the clean-up, without gaps.
        s.create_user(json!({"username": "later"})).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let kept = loop {
            let page = s
                .get(
                    &format!("/api/events?stream=directory&after={aged}&limit=1000"),
                    &s.admin_token,
                )
                .await
                .expect(200);
            let events = page.body["events"].as_array().cloned().unwrap_or_default();
            if events.iter().any(|e| e["data"]["username"] == "later") {
                break events;
            }
            assert!(Instant::now() < deadline, "{l}: {}", page.body);
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let seqs: Vec<i64> = kept.iter().filter_map(|e| e["seq"].as_i64()).collect();
        assert_eq!(
            seqs,
            (aged + 1..aged + 1 + seqs.len() as i64).collect::<Vec<_>>(),
            "{l}"
        );
    }
}
