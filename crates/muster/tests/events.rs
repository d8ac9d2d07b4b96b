//! The event stream over HTTP: directory changes appear in order, numbered without gaps; a
//! Server-Sent Events client resumes exactly after the last event it saw.

mod common;

use common::Server;
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
