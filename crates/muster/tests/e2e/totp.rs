//! Self-service TOTP enrolment: a pending key shown once, activated by a code from it;
//! disabling needs the password and a current code.

use crate::common::{Server, totp_code as code, totp_step_now as now_step};
use serde_json::json;

const PW: &str = "T0tp-enrol-s3cret";

#[tokio::test]
async fn enrolment_is_pending_until_a_code_confirms_it() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let (user, token) = s.user_with_session("otp1", PW).await;
        let user_id = user["user_id"].as_str().expect("id").to_owned();

        s.post("/api/users/me/totp", &token, json!({"password": "wrong-password"}))
            .await
            .expect_problem(403, "E005001");
        s.post("/api/users/me/totp/confirm", &token, json!({"totp_code": "123456"}))
            .await
            .expect_problem(400, "E008001");
        let started = s
            .post("/api/users/me/totp", &token, json!({"password": PW}))
            .await
            .expect(201);
        let key = started.body["totp_key"].as_str().expect("key").to_owned();
        assert_eq!(key.len(), 32, "{l}: 160-bit key");
        let uri = started.body["otpauth_uri"].as_str().expect("uri");
        assert!(uri.starts_with("otpauth://totp/muster:otp1?secret="), "{l}: {uri}");
        assert!(uri.contains(&key), "{l}");

        // Pending: nothing changed yet.
        assert_eq!(
            s.get("/api/users/me", &token).await.expect(200).body["is_totp_enabled"],
            false,
            "{l}"
        );
        s.login("otp1", PW).await;

        let step = now_step();
        s.post("/api/users/me/totp/confirm", &token, json!({"totp_code": "000000"}))
            .await
            .expect_problem(400, "E008002");
        let on = s
            .post(
                "/api/users/me/totp/confirm",
                &token,
                json!({"totp_code": code(&key, step)}),
            )
            .await
            .expect(200);
        assert_eq!(on.body["is_totp_enabled"], true, "{l}");

        // Now logins need a code; the confirming code was spent.
        s.try_login(json!({"username": "otp1", "password": PW}))
            .await
            .expect_problem(401, "E005008");
        s.try_login(json!({"username": "otp1", "password": PW, "totp_code": code(&key, step)}))
            .await
            .expect_problem(401, "E005001");
        s.try_login(json!({"username": "otp1", "password": PW, "totp_code": code(&key, step + 1)}))
            .await
            .expect(201);
        // The enrolment was used up.
        s.post(
            "/api/users/me/totp/confirm",
            &token,
            json!({"totp_code": code(&key, step)}),
        )
        .await
        .expect_problem(400, "E008001");

        // Audited and published, never with the key.
        let audit = s.audit(&format!("target={user_id}")).await;
        let actions: Vec<&str> = audit["result"]
            .as_array()
            .expect("rows")
            .iter()
            .filter_map(|r| r["action"].as_str())
            .collect();
        for a in ["user.totp_enroll", "user.totp_enable"] {
            assert!(actions.contains(&a), "{l}: {a} audited: {actions:?}");
        }
        assert!(
            !audit.to_string().contains(&key),
            "{l}: the key is not in the audit log"
        );
        let events = s
            .get("/api/events?stream=directory&after=0&limit=1000", &s.admin_token)
            .await
            .expect(200);
        assert!(!events.body.to_string().contains(&key), "{l}: the key is not in events");
    }
}

#[tokio::test]
async fn disabling_needs_the_password_and_a_current_code() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let (_, token) = s.user_with_session("otp2", PW).await;
        s.post(
            "/api/users/me/totp/disable",
            &token,
            json!({"password": PW, "totp_code": "123456"}),
        )
        .await
        .expect_problem(400, "E008001");
        let (key, step) = s.enrol_totp(&token, PW).await;

        s.post(
            "/api/users/me/totp/disable",
            &token,
            json!({"password": "wrong", "totp_code": code(&key, step + 1)}),
        )
        .await
        .expect_problem(403, "E005001");
        s.post(
            "/api/users/me/totp/disable",
            &token,
            json!({"password": PW, "totp_code": "000000"}),
        )
        .await
        .expect_problem(403, "E005001");
        s.post("/api/users/me/totp/disable", &token, json!({"password": PW}))
            .await
            .expect_problem(400, "E008003");
        let off = s
            .post(
                "/api/users/me/totp/disable",
                &token,
                json!({"password": PW, "totp_code": code(&key, step + 1)}),
            )
            .await
            .expect(200);
        assert_eq!(off.body["is_totp_enabled"], false, "{l}");
        s.login("otp2", PW).await;
        // The old key is gone: enabling again needs a new enrolment.
        s.post(
            "/api/users/me/totp/confirm",
            &token,
            json!({"totp_code": code(&key, step + 1)}),
        )
        .await
        .expect_problem(400, "E008001");
    }
}

#[tokio::test]
async fn re_authentication_is_throttled_like_logins() {
    for s in Server::all(&[]).await {
        let (_, token) = s.user_with_session("otp3", PW).await;
        for _ in 0..5 {
            s.post("/api/users/me/totp", &token, json!({"password": "guess"}))
                .await
                .expect_problem(403, "E005001");
        }
        let r = s
            .post("/api/users/me/totp", &token, json!({"password": PW}))
            .await
            .expect_problem(429, "throttled");
        assert!(r.headers.contains_key("retry-after"), "{}", s.label);
    }
}
