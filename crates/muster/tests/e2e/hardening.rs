//! Regression tests for the findings of the security reviews: second factors and password
//! checks reachable from a session are throttled and cannot be bypassed, a refused login does
//! not burn its TOTP code, out-of-range times are refused instead of panicking; junk methods
//! and paths cannot grow the metrics, secrets in paths never reach the log, every response
//! carries the security headers (HTML a Content-Security-Policy, secrets `no-store`), control
//! characters in query strings are refused, a negative event cursor is malformed, and a
//! provider token on a directory route is forbidden rather than unauthenticated.

use crate::common;

use crate::common::{Resp, Server, totp_code as code};
use reqwest::Method;
use serde_json::{Value, json};

const PW: &str = "H4rdening-s3cret";

/// A user with TOTP on (key known to the test) and a session: (token, key, step spent).
async fn totp_user(s: &Server, name: &str) -> (String, String, u64) {
    let (_, token) = s.user_with_session(name, PW).await;
    let (key, step) = s.enrol_totp(&token, PW).await;
    (token, key, step)
}

#[tokio::test]
async fn replacing_an_active_totp_key_needs_a_current_code() {
    for s in Server::all(&[]).await {
        let (token, key, step) = totp_user(&s, "swap").await;
        s.post("/api/users/me/totp", &token, json!({"password": PW}))
            .await
            .expect_problem(403, "E005008");
        s.post(
            "/api/users/me/totp",
            &token,
            json!({"password": PW, "totp_code": "000000"}),
        )
        .await
        .expect_problem(403, "E005001");
        s.post(
            "/api/users/me/totp",
            &token,
            json!({"password": PW, "totp_code": code(&key, step + 1)}),
        )
        .await
        .expect(201);
    }
}

#[tokio::test]
async fn wrong_codes_count_against_the_throttle_when_disabling() {
    for s in Server::all(&[]).await {
        let (token, key, step) = totp_user(&s, "guess").await;
        for _ in 0..5 {
            s.post(
                "/api/users/me/totp/disable",
                &token,
                json!({"password": PW, "totp_code": "000000"}),
            )
            .await
            .expect_problem(403, "E005001");
        }
        s.post(
            "/api/users/me/totp/disable",
            &token,
            json!({"password": PW, "totp_code": code(&key, step + 1)}),
        )
        .await
        .expect_problem(429, "throttled");
    }
}

#[tokio::test]
async fn changing_ones_password_is_throttled_like_a_login() {
    for s in Server::all(&[]).await {
        let (_, token) = s.user_with_session("oracle", PW).await;
        for i in 0..5 {
            s.put(
                "/api/users/me/password",
                &token,
                json!({"old_password": format!("guess-{i}-xx"), "new_password": "N3w-s3cret-pw"}),
            )
            .await
            .expect_problem(403, "E005001");
        }
        s.put(
            "/api/users/me/password",
            &token,
            json!({"old_password": PW, "new_password": "N3w-s3cret-pw"}),
        )
        .await
        .expect_problem(429, "throttled");
    }
}

#[tokio::test]
async fn a_refused_login_does_not_burn_its_totp_code() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let (_, key, step) = totp_user(&s, "mustchange").await;
        let admin = s.admin_token.clone();
        let found = s.get("/api/users?username=mustchange", &admin).await.expect(200);
        let id = found.body["result"][0]["user_id"].as_str().expect("id").to_owned();
        s.patch(
            &format!("/api/users/{id}"),
            &admin,
            json!({"password_must_change": true}),
        )
        .await
        .expect(200);
        let c = code(&key, step + 1);
        s.try_login(json!({"username": "mustchange", "password": PW, "totp_code": c}))
            .await
            .expect_problem(403, "E003007");
        s.try_login(json!({"username": "mustchange", "password": PW, "totp_code": c, "new_password": "weak"}))
            .await
            .expect_problem(400, "E003002");
        let ok = s
            .try_login(
                json!({"username": "mustchange", "password": PW, "totp_code": c, "new_password": "Ch4nged-s3cret"}),
            )
            .await
            .expect(201);
        assert!(
            ok.body["token"].is_string(),
            "{l}: the same code still logs in after refusals that did not use it"
        );
        s.try_login(json!({"username": "mustchange", "password": "Ch4nged-s3cret", "totp_code": c}))
            .await
            .expect_problem(401, "E005001");
    }
}

#[tokio::test]
async fn times_beyond_utc_are_refused_not_panicked_on() {
    for s in Server::all(&[]).await {
        let (user, _) = s.user_with_session("farfuture", PW).await;
        let id = user["user_id"].as_str().expect("id");
        let admin = s.admin_token.clone();
        s.patch(
            &format!("/api/users/{id}"),
            &admin,
            json!({"password_expiry": "9999-12-31T23:59:59-23:59"}),
        )
        .await
        .expect_problem(400, "E008002");
        s.get("/api/audit?since=9999-12-31T23:59:59-23:59", &admin)
            .await
            .expect_problem(400, "E008002");
        s.get("/api/audit?until=-9999-01-01T00:00:00%2B23:59", &admin)
            .await
            .expect_problem(400, "E008002");
        s.get("/api/users/me", &admin).await.expect(200);
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics cardinality
// ---------------------------------------------------------------------------------------------

/// The series of the request counter in a `/metrics` scrape.
async fn request_series(s: &Server) -> (Vec<String>, String) {
    let r = s.send(s.request(Method::GET, "/metrics")).await.expect(200);
    let text = r.body.as_str().unwrap_or_default().to_owned();
    let series = text
        .lines()
        .filter(|l| l.starts_with("muster_http_requests_total{"))
        .map(|l| l.rsplit_once(' ').map_or(l, |(name, _)| name).to_owned())
        .collect();
    (series, text)
}

/// `n` requests with junk methods (1 KB each, all different) and junk paths.
async fn junk(s: &Server, from: usize, n: usize) {
    for i in from..from + n {
        let method = Method::from_bytes(format!("JUNK{i}{}", "X".repeat(1024)).as_bytes()).expect("a method token");
        let r = s.send(s.request(method, "/api/health")).await;
        assert_eq!(r.status.as_u16(), 405, "{}: junk method {i}: {}", s.label, r.body);
        let r = s
            .send(s.request(Method::GET, &format!("/junk-{i}/{}", uuid::Uuid::new_v4())))
            .await;
        assert_eq!(r.status.as_u16(), 404, "{}", s.label);
        let r = s
            .send(
                s.request(Method::GET, &format!("/api/users/musr-junk-{i}"))
                    .bearer_auth(&s.admin_token),
            )
            .await;
        assert!(r.status.is_client_error(), "{}: {}", s.label, r.status);
    }
}

#[tokio::test]
async fn junk_methods_and_paths_do_not_grow_the_metrics() {
    for s in Server::all(&[]).await {
        let l = s.label;
        junk(&s, 0, 20).await;
        let (before, _) = request_series(&s).await;
        junk(&s, 20, 200).await;
        let (after, text) = request_series(&s).await;
        // The scrape itself adds one series (GET /metrics) the first time.
        let grown: Vec<_> = after.iter().filter(|x| !before.contains(x)).collect();
        assert!(
            grown.iter().all(|x| x.contains("route=\"/metrics\"")),
            "{l}: 600 more junk requests added series: {grown:?}"
        );
        assert!(
            !text.contains("JUNK") && !text.contains("XXXX"),
            "{l}: a junk method became a label"
        );
        assert!(!text.contains("junk-"), "{l}: a junk path became a label");
        assert!(text.contains("method=\"other\""), "{l}: unknown methods count as other");
        assert!(
            text.contains("route=\"unmatched\""),
            "{l}: unknown paths count as unmatched"
        );
        assert!(
            text.contains("route=\"/api/users/{user_id}\""),
            "{l}: matched routes by template"
        );
        assert!(
            text.len() < 64 * 1024,
            "{l}: the scrape stays small ({} bytes)",
            text.len()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets in logs
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn callback_tokens_never_reach_the_log() {
    // Debug request events print the request's span on every request, as an error does on a
    // 5xx: whatever the span holds is in the output.
    for s in Server::all(&[("MUSTER_LOG", "info,tower_http=debug")]).await {
        let l = s.label;
        let secret = format!("cbsecret{}", uuid::Uuid::new_v4().simple());
        for pid in [uuid::Uuid::new_v4().to_string(), "not-a-uuid".to_owned()] {
            let r = s
                .send(
                    s.request(Method::POST, &format!("/api/processes/{pid}/callback/{secret}"))
                        .json(&json!({"ok": true})),
                )
                .await;
            assert!(r.status.is_client_error(), "{l}: {}", r.status);
        }
        // A path no route matches, with a secret in it.
        s.send(s.request(Method::GET, &format!("/api/nowhere/{secret}")))
            .await
            .expect(404);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let output = format!("{}\n{}", s.stdout(), s.stderr());
        assert!(
            output.contains("/api/processes/{id}/callback/{token}"),
            "{l}: requests are logged by route template: {output}"
        );
        assert!(!output.contains(&secret), "{l}: the token reached the log: {output}");
    }
}

// ---------------------------------------------------------------------------------------------
// Security headers
// ---------------------------------------------------------------------------------------------

#[track_caller]
fn header<'a>(r: &'a Resp, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

#[track_caller]
fn assert_common_headers(r: &Resp, what: &str) {
    assert_eq!(header(r, "x-content-type-options"), Some("nosniff"), "{what}");
    assert_eq!(header(r, "referrer-policy"), Some("no-referrer"), "{what}");
}

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
    object-src 'none'";

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let admin = s.admin_token.clone();
        let checks = [
            (Method::GET, "/api/health", None),
            (Method::GET, "/api/users/me", Some(admin.as_str())),
            (Method::GET, "/api/users/me", None),
            (Method::GET, "/no/such/thing", None),
            (Method::DELETE, "/api/health", None),
            (Method::GET, "/api/openapi.json", None),
            (Method::GET, "/metrics", None),
            (Method::GET, "/api/docs/swagger-ui.css", None),
        ];
        for (method, path, token) in checks {
            let r = s.call(method.clone(), path, token, None).await;
            let what = format!("{l}: {method} {path} ({})", r.status);
            assert_common_headers(&r, &what);
            assert_eq!(header(&r, "content-security-policy"), None, "{what}: not HTML");
        }
        // HTML, whichever handler made it, gets the Content-Security-Policy.
        let r = s.call(Method::GET, "/api/docs/", None, None).await.expect(200);
        assert!(
            header(&r, "content-type").is_some_and(|c| c.starts_with("text/html")),
            "{l}"
        );
        assert_common_headers(&r, l);
        assert_eq!(header(&r, "content-security-policy"), Some(CSP), "{l}");
        let html = r.body.as_str().unwrap_or_default();
        assert!(
            !html.contains("<script>") && !html.contains("<style>"),
            "{l}: no inline script or style: {html}"
        );

        // Answers that carry a secret shown once are never cached.
        let login = s
            .try_login(json!({"username": "admin", "password": common::ADMIN_PASSWORD}))
            .await
            .expect(201);
        assert_eq!(header(&login, "cache-control"), Some("no-store"), "{l}: login");
        let enrol = s
            .post(
                "/api/users/me/totp",
                &admin,
                json!({"password": common::ADMIN_PASSWORD}),
            )
            .await
            .expect(201);
        assert_eq!(header(&enrol, "cache-control"), Some("no-store"), "{l}: TOTP enrolment");
        let provider = s
            .post("/api/marketplace-service-providers/", &admin, json!({"name": "Hdr"}))
            .await
            .expect(201);
        let uuid = provider.body["uuid"].as_str().expect("uuid");
        let token = s
            .post(
                &format!("/api/marketplace-service-providers/{uuid}/api_tokens/"),
                &admin,
                json!({"name": "hdr-agent"}),
            )
            .await
            .expect(201);
        assert_eq!(header(&token, "cache-control"), Some("no-store"), "{l}: API token");
        assert_common_headers(&token, l);
        // A failed login is a problem document with the same headers.
        let r = s
            .try_login(json!({"username": "admin", "password": "Wr0ng-pass-word"}))
            .await
            .expect(401);
        assert_common_headers(&r, l);
    }
}

/// Debian's Chromium, which `.ci/run` installs.
const CHROMIUM: &str = "/usr/bin/chromium";

#[tokio::test]
async fn the_api_docs_work_under_their_content_security_policy() {
    if !std::path::Path::new(CHROMIUM).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{CHROMIUM} is missing; .ci/run installs it"
        );
        println!("skipped: {CHROMIUM} is missing; run `bash .ci/run` to install it");
        return;
    }
    let s = Server::start(muster_store::testing::TestDb::sqlite(), &[]).await;
    let profile = tempfile::tempdir().expect("a profile directory");
    let out = tokio::process::Command::new(CHROMIUM)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=15000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(s.url("/api/docs/"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), out)
        .await
        .expect("chromium finished within 120 s")
        .expect("chromium ran");
    let dom = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    // The page's scripts ran (none is inline) and drew the operations from the document.
    assert!(
        dom.contains("opblock-summary"),
        "no operations rendered; log: {log}\nDOM: {dom}"
    );
    assert!(dom.contains("/api/session"), "the document was fetched; DOM: {dom}");
    // No script or connection was blocked (an inline style attribute of the bundle's may be).
    for blocked in [
        "Refused to execute",
        "Refused to load the script",
        "Refused to connect",
        "Refused to evaluate",
    ] {
        assert!(
            !log.contains(blocked),
            "the policy blocked something the page needs: {log}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Control characters in filters
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn control_characters_in_query_strings_are_refused() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let admin = s.admin_token.clone();
        s.create_user(json!({"username": "filtered", "first_name": "Zed"}))
            .await;
        // Without the control character the filter matches nobody…
        let r = s.get("/api/users?name=zzzz", &admin).await.expect(200);
        assert_eq!(r.body["total"], json!(0), "{l}");
        // …and with one, every list refuses it instead of reading it as "match everything".
        for path in [
            "/api/users?name=%00zzzz",
            "/api/users?username=ad%00min",
            "/api/users?email=a%0A@b",
            "/api/audit?action=user.create%00",
            "/api/events?stream=directory%00",
            "/api/subscriptions?query=%1b",
            "/api/processes?filter=workflow_name%2Cx%00",
            "/api/products?tag=%7f",
            "/api/marketplace-offering-users/?query=%00zz",
            "/api/marketplace-offering-users/?user_username=%00",
            "/api/users?na%00me=x",
        ] {
            let r = s.get(path, &admin).await;
            assert_eq!(
                (r.status.as_u16(), r.code()),
                (400, "E008002"),
                "{l}: {path}: {}",
                r.body
            );
            assert!(!r.body["detail"].as_str().unwrap_or_default().contains('\0'), "{l}");
        }
        // Ordinary characters beyond ASCII are fine.
        s.get("/api/users?name=%C3%A9", &admin).await.expect(200);
    }
}

// ---------------------------------------------------------------------------------------------
// Smaller answers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_negative_event_cursor_is_malformed_not_expired() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let admin = s.admin_token.clone();
        let r = s.get("/api/events?stream=directory&after=-1", &admin).await;
        assert_eq!((r.status.as_u16(), r.code()), (400, "E008002"), "{l}: {}", r.body);
        assert_eq!(r.body["errors"][0]["field"], json!("after"), "{l}");
        let r = s
            .send(
                s.request(Method::GET, "/api/events?stream=directory")
                    .bearer_auth(&admin)
                    .header("accept", "text/event-stream")
                    .header("last-event-id", "-5"),
            )
            .await;
        assert_eq!((r.status.as_u16(), r.code()), (400, "E008002"), "{l}: SSE: {}", r.body);
        s.get("/api/events?stream=directory&after=0", &admin).await.expect(200);
    }
}

#[tokio::test]
async fn a_provider_token_on_a_directory_route_is_forbidden_not_unauthenticated() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let admin = s.admin_token.clone();
        let provider = s
            .post("/api/marketplace-service-providers/", &admin, json!({"name": "Tok"}))
            .await
            .expect(201);
        let uuid = provider.body["uuid"].as_str().expect("uuid");
        let created = s
            .post(
                &format!("/api/marketplace-service-providers/{uuid}/api_tokens/"),
                &admin,
                json!({"name": "tok-agent"}),
            )
            .await
            .expect(201);
        let key = created.body["key"].as_str().expect("key").to_owned();
        let me = s.get("/api/users/me", &admin).await.expect(200);
        let admin_id = me.body["user_id"].as_str().expect("id").to_owned();
        let with = |method: Method, path: &str, key: &str| {
            s.request(method, path).header("authorization", format!("Token {key}"))
        };
        for (method, path) in [
            (Method::GET, "/api/users/me".to_owned()),
            (Method::GET, format!("/api/users/{admin_id}")),
            (Method::GET, "/api/users".to_owned()),
            (Method::GET, "/api/session".to_owned()),
            (Method::GET, "/api/audit".to_owned()),
        ] {
            let r = s.send(with(method.clone(), &path, &key)).await;
            assert_eq!(
                (r.status.as_u16(), r.code()),
                (403, "session_required"),
                "{l}: {method} {path}: {}",
                r.body
            );
            // An unknown token is still unauthenticated.
            let r = s.send(with(method.clone(), &path, "not-a-real-key")).await;
            assert_eq!(r.status.as_u16(), 401, "{l}: {method} {path}: {}", r.body);
        }
        // Where tokens belong, the same token works.
        let r = s
            .send(with(Method::GET, "/api/marketplace-offering-users/", &key))
            .await;
        assert_eq!(r.status.as_u16(), 200, "{l}: {}", r.body);
        let _: Value = r.body;
    }
}
