//! Several nodes on one PostgreSQL database behave as one muster: a session opened on one node
//! works on the other, throttling counts failures from both, and both write one audit log.

use crate::common::Server;
use muster_store::testing::TestDb;
use serde_json::json;

#[tokio::test]
async fn two_nodes_share_sessions_throttling_and_audit() {
    let Some(db) = TestDb::postgres().await else {
        eprintln!("MUSTER_TEST_DATABASE_URL is not set: the multi-node test needs PostgreSQL");
        return;
    };
    // Both nodes need the same server key to read each other's encrypted TOTP keys.
    let key = ("MUSTER_SECRET_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
    let url = db.url.clone();
    let a = Server::start(db, &[key]).await;
    let b = Server::start_on("postgres", &url, &[key]).await;

    // A user created on A logs in on B; B's token works on A; logout on A ends it on B.
    a.create_user(json!({"username": "shared", "password": "Sh4red-s3cret", "is_totp_enabled": false}))
        .await;
    let token = b.login("shared", "Sh4red-s3cret").await;
    let me = a.get("/api/users/me", &token).await.expect(200);
    assert_eq!(me.body["username"], "shared");
    a.call(reqwest::Method::DELETE, "/api/session", Some(&token), None)
        .await
        .expect(204);
    b.get("/api/users/me", &token).await.expect_problem(401, "E007001");

    // Failures on either node count against the same account.
    for (i, node) in [&a, &b, &a, &b, &a].iter().enumerate() {
        node.try_login(json!({"username": "shared", "password": format!("wrong-{i}")}))
            .await
            .expect_problem(401, "E005001");
    }
    b.try_login(json!({"username": "shared", "password": "Sh4red-s3cret"}))
        .await
        .expect_problem(429, "throttled");

    // One audit log: both nodes' login failures are visible from either.
    let failures = a.audit("action=session.login&outcome=failure").await;
    assert!(failures["total"].as_i64().unwrap_or(0) >= 6, "{failures}");
    let same = b.audit("action=session.login&outcome=failure").await;
    assert_eq!(failures["total"], same["total"]);
}
