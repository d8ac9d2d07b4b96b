//! Regression tests for the findings of the first security review: second factors and
//! password checks reachable from a session are throttled and cannot be bypassed, a refused
//! login does not burn its TOTP code, and out-of-range times are refused instead of panicking.

mod common;

use common::{Server, totp_code as code};
use serde_json::json;

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
