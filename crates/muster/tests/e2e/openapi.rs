//! The served OpenAPI document, and answers schemathesis cannot provoke (it sends only UTF-8).

use crate::common::Server;
use reqwest::Method;

/// `GET /api/openapi.json` is the document `muster openapi` prints (and the one committed in
/// docs/openapi.json, see muster-server's tests): the shared answers are added to both.
#[tokio::test]
async fn the_served_document_is_the_generated_one() {
    let s = Server::start(muster_store::testing::TestDb::sqlite(), &[]).await;
    let served = s.call(Method::GET, "/api/openapi.json", None, None).await.expect(200);
    let printed = std::process::Command::new(env!("CARGO_BIN_EXE_muster"))
        .arg("openapi")
        .output()
        .expect("muster openapi");
    assert!(printed.status.success(), "muster openapi failed");
    let printed: serde_json::Value = serde_json::from_slice(&printed.stdout).expect("JSON");
    assert_eq!(served.body, printed);
    assert!(
        served.body["components"]["responses"]["Unauthorized"].is_object(),
        "the shared answers are in the served document"
    );
}

/// A path segment that is not UTF-8 once percent-decoded is a problem document (axum's own
/// answer is plain text), names the parameter and does not echo the bytes.
#[tokio::test]
async fn a_path_segment_that_is_not_utf8_is_a_problem() {
    for s in Server::all(&[]).await {
        let admin = s.admin_token.clone();
        for (method, path) in [
            (Method::GET, "/api/users/%FF%FEsecret"),
            (Method::GET, "/api/marketplace-offering-users/%FF%FEsecret/"),
            (Method::GET, "/api/processes/%FF%FEsecret"),
            (
                Method::DELETE,
                "/api/marketplace-service-providers/%FF%FEsecret/api_tokens/%C0/",
            ),
        ] {
            let r = s
                .call(method, path, Some(&admin), None)
                .await
                .expect_problem(400, "E008002");
            let text = r.body.to_string();
            assert!(text.contains("not valid UTF-8"), "{}: {path}: {text}", s.label);
            assert!(!text.contains("secret"), "{}: {path}: {text}", s.label);
            assert!(r.body["errors"][0]["field"].is_string(), "{}: {path}: {text}", s.label);
        }
        // Credentials are still checked first where the route authenticates before parsing.
        s.call(Method::GET, "/api/marketplace-offering-users/%FF/", None, None)
            .await
            .expect_problem(401, "E007001");
    }
}
