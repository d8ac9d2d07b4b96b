//! The binary starts on each database, answers health, and serves its docs offline.

use crate::common::Server;

#[tokio::test]
async fn serves_health_docs_and_metrics_on_every_database() {
    for s in Server::all(&[]).await {
        let h = s
            .call(reqwest::Method::GET, "/api/health", None, None)
            .await
            .expect(200);
        assert_eq!(h.body["status"], "ok", "{}", s.label);
        assert_eq!(h.body["database"], s.label);
        assert!(h.headers.contains_key("x-request-id"));
        let doc = s
            .call(reqwest::Method::GET, "/api/openapi.json", None, None)
            .await
            .expect(200);
        assert!(doc.body["paths"]["/api/users"]["post"].is_object(), "{}", s.label);
        let docs = s
            .request(reqwest::Method::GET, "/api/docs/")
            .send()
            .await
            .expect("docs");
        assert_eq!(docs.status(), 200);
        let html = docs.text().await.expect("html");
        assert!(html.contains("swagger"), "docs page is swagger ui");
        assert!(!html.contains("https://"), "docs load nothing from the internet");
        let metrics = s
            .request(reqwest::Method::GET, "/metrics")
            .send()
            .await
            .expect("metrics");
        assert_eq!(metrics.status(), 200);
        assert!(
            metrics
                .text()
                .await
                .expect("text")
                .contains("muster_http_requests_total")
        );
    }
}

#[tokio::test]
async fn the_form_protocol_is_not_logged_as_an_error() {
    let db = muster_store::testing::TestDb::sqlite();
    let s = Server::start(db, &[]).await;
    // An empty form asks for the first page: 510 is the protocol working, not a failure.
    let r = s
        .call(
            reqwest::Method::POST,
            "/api/processes/create_user_group",
            Some(&s.admin_token),
            Some(serde_json::json!([])),
        )
        .await;
    assert_eq!(r.status, 510, "{}", r.body);
    s.call(reqwest::Method::GET, "/api/health", None, None)
        .await
        .expect(200);
    let log = s.stderr();
    assert!(!log.contains(" ERROR "), "logged an error: {log}");
}
