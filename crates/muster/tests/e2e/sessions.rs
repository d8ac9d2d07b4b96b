//! End-to-end tests of logins and sessions against the real binary, on every database:
//! login answers, generic failures and their timing, TOTP, account checks, session management,
//! idle and absolute expiry, throttling, the audit of logins, secrets kept out of logs, and the
//! bootstrap super-user.

use crate::common::{ADMIN, ADMIN_PASSWORD, Resp, Server};
use muster_core::credentials::totp;
use muster_store::testing::TestDb;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A password the default policy accepts.
const PW: &str = "Corr3ct-h0rse-b4ttery";
/// Another one, for password changes.
const PW2: &str = "Sec0nd-st4ple-l4dder";
/// A wrong one.
const WRONG: &str = "Wr0ng-gu3ss-n1ne";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Status and problem-code assertions that say which database and which step failed.
trait Check: Sized {
    fn ok(self, status: u16, ctx: &str) -> Self;
    fn problem(self, status: u16, code: &str, ctx: &str) -> Self;
}

impl Check for Resp {
    #[track_caller]
    fn ok(self, status: u16, ctx: &str) -> Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{ctx}: unexpected status; body: {}",
            self.body
        );
        self
    }

    #[track_caller]
    fn problem(self, status: u16, code: &str, ctx: &str) -> Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{ctx}: unexpected status; body: {}",
            self.body
        );
        let ct = self
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert_eq!(ct, "application/problem+json", "{ctx}: problem content type");
        assert_eq!(self.code(), code, "{ctx}: unexpected code; body: {}", self.body);
        self
    }
}

fn unix_now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The TOTP code of `key` (base32) for `step`.
fn code(key: &str, step: u64) -> String {
    totp::code_at_step(&totp::decode_key(key).expect("valid base32 key"), step)
}

/// A six-digit code that is valid for no step within two of now.
fn wrong_code(key: &str) -> String {
    let now = totp::step_of(unix_now());
    let near: Vec<String> = (now - 2..=now + 2).map(|s| code(key, s)).collect();
    (0..)
        .map(|i: u32| format!("{:06}", (i * 137_911) % 1_000_000))
        .find(|c| !near.contains(c))
        .expect("some code is wrong")
}

/// The current TOTP step, after waiting if needed so that at least 5 s of it remain: the
/// caller's next few logins then all happen in this step.
async fn fresh_step() -> u64 {
    let into = unix_now_f64() % totp::STEP_SECONDS as f64;
    if into > 24.0 {
        tokio::time::sleep(Duration::from_secs_f64(totp::STEP_SECONDS as f64 - into + 0.3)).await;
    }
    totp::step_of(unix_now())
}

async fn login_resp(s: &Server, username: &str, password: &str) -> Resp {
    s.try_login(json!({"username": username, "password": password})).await
}

#[track_caller]
fn token_of(r: &Resp) -> String {
    r.body["token"].as_str().expect("token in login answer").to_owned()
}

async fn session_of(s: &Server, token: &str) -> Resp {
    s.get("/api/session", token).await
}

async fn assert_alive(s: &Server, token: &str, ctx: &str) -> Value {
    session_of(s, token).await.ok(200, ctx).body
}

async fn assert_dead(s: &Server, token: &str, ctx: &str) {
    session_of(s, token).await.problem(401, "E007001", ctx);
}

async fn patch_user(s: &Server, user_id: &str, body: Value) -> Resp {
    s.patch(&format!("/api/users/{user_id}"), &s.admin_token, body).await
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).expect("formattable time")
}

#[track_caller]
fn parse_time(v: &Value, ctx: &str) -> OffsetDateTime {
    let s = v.as_str().unwrap_or_else(|| panic!("{ctx}: not a string: {v}"));
    OffsetDateTime::parse(s, &Rfc3339).unwrap_or_else(|e| panic!("{ctx}: not RFC 3339 ({e}): {s}"))
}

/// Whether any string anywhere in `v` contains `needle` (keys included).
fn mentions(v: &Value, needle: &str) -> bool {
    match v {
        Value::String(s) => s.contains(needle),
        Value::Array(a) => a.iter().any(|x| mentions(x, needle)),
        Value::Object(o) => o.iter().any(|(k, x)| k.contains(needle) || mentions(x, needle)),
        _ => false,
    }
}

/// Whether any object anywhere in `v` has the key `key`.
fn has_key(v: &Value, key: &str) -> bool {
    match v {
        Value::Array(a) => a.iter().any(|x| has_key(x, key)),
        Value::Object(o) => o.iter().any(|(k, x)| k == key || has_key(x, key)),
        _ => false,
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("no string {key} in {v}"))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn retry_after(r: &Resp) -> u64 {
    r.headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric Retry-After on {:?}", r.headers))
}

/// All `session.login` audit records, newest first.
async fn login_audit(s: &Server) -> Vec<Value> {
    s.audit("action=session.login&page_size=500").await["result"]
        .as_array()
        .expect("audit result array")
        .clone()
}

async fn login_with_request_id(s: &Server, request_id: &str, body: Value) -> Resp {
    s.send(
        s.request(Method::POST, "/api/session")
            .header("x-request-id", request_id)
            .json(&body),
    )
    .await
}

fn request_id_of(r: &Resp) -> String {
    r.headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-request-id on the response")
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// 1. Login
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn login_returns_a_token_that_opens_the_session() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let user = s.create_user(json!({"username": "alice", "password": PW})).await;
        let r = login_resp(&s, "alice", PW).await.ok(201, l);
        let token = token_of(&r);
        let random = token
            .strip_prefix("mst_")
            .unwrap_or_else(|| panic!("{l}: token has the mst_ prefix: {token}"));
        assert!(random.len() >= 43, "{l}: 256 bits after the prefix: {token}");
        assert!(
            random
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{l}: url-safe token: {token}"
        );
        let expires = parse_time(&r.body["expires_at"], l);
        let absolute = parse_time(&r.body["absolute_expires_at"], l);
        let now = OffsetDateTime::now_utc();
        assert!(expires > now && expires <= absolute, "{l}: {}", r.body);
        // Defaults: 30 min idle, 12 h absolute.
        assert!(
            (expires - now - time::Duration::minutes(30)).abs() < time::Duration::minutes(1),
            "{l}: idle expiry {expires}"
        );
        assert!(
            (absolute - now - time::Duration::hours(12)).abs() < time::Duration::minutes(1),
            "{l}: absolute expiry {absolute}"
        );
        let session_id = str_of(&r.body, "session_id").to_owned();
        uuid::Uuid::parse_str(&session_id).unwrap_or_else(|_| panic!("{l}: session_id is a UUID"));
        assert_eq!(r.body["user_id"], user["user_id"], "{l}");
        assert_eq!(r.body["warnings"], json!([]), "{l}");

        let cur = assert_alive(&s, &token, l).await;
        assert_eq!(cur["session_id"], json!(session_id), "{l}");
        assert_eq!(cur["current"], json!(true), "{l}");
        assert_eq!(cur["user_id"], user["user_id"], "{l}");
        assert_eq!(cur["current_app"], json!("muster"), "{l}: the default application");
        assert_eq!(cur["remote_addr"], json!("127.0.0.1"), "{l}");
        assert!(!has_key(&cur, "token") && !mentions(&cur, &token), "{l}: {cur}");

        let me = s.get("/api/users/me", &token).await.ok(200, l);
        assert_eq!(me.body["username"], json!("alice"), "{l}");
        assert_eq!(me.body["user_id"], user["user_id"], "{l}");

        // The username is not case-sensitive.
        login_resp(&s, "ALICE", PW).await.ok(201, l);

        // Only configured applications.
        s.try_login(json!({"username": "alice", "password": PW, "current_app": "crm"}))
            .await
            .problem(400, "E004001", l);
        // A garbage token is no session.
        assert_dead(&s, "mst_not-a-token", l).await;
        s.call(Method::GET, "/api/session", None, None)
            .await
            .problem(401, "E007001", l);
    }
}

#[tokio::test]
async fn login_names_one_of_the_configured_applications() {
    for s in Server::all(&[("MUSTER_APPS", "crm,erp")]).await {
        let l = s.label;
        s.create_user(json!({"username": "apps", "password": PW})).await;
        let r = s
            .try_login(json!({"username": "apps", "password": PW, "current_app": "erp"}))
            .await
            .ok(201, l);
        let cur = assert_alive(&s, &token_of(&r), l).await;
        assert_eq!(cur["current_app"], json!("erp"), "{l}");
        // Without current_app: the first configured one.
        let r = login_resp(&s, "apps", PW).await.ok(201, l);
        let cur = assert_alive(&s, &token_of(&r), l).await;
        assert_eq!(cur["current_app"], json!("crm"), "{l}");
        // The built-in default is not configured here.
        s.try_login(json!({"username": "apps", "password": PW, "current_app": "muster"}))
            .await
            .problem(400, "E004001", l);
    }
}

// ---------------------------------------------------------------------------------------------
// 2. One answer for every credential failure
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_user_wrong_password_and_wrong_totp_code_look_the_same() {
    for s in Server::all(&[]).await {
        let l = s.label;
        s.create_user(json!({"username": "bob", "password": PW})).await;
        let key = totp::generate_key();
        s.create_user(json!({"username": "carol", "password": PW, "is_totp_enabled": true, "totp_key": key}))
            .await;

        let unknown = login_resp(&s, "nobody-here", PW).await.problem(401, "E005001", l);
        let wrong_password = login_resp(&s, "bob", WRONG).await.problem(401, "E005001", l);
        let bad_code = s
            .try_login(json!({"username": "carol", "password": PW, "totp_code": wrong_code(&key)}))
            .await
            .problem(401, "E005001", l);
        let wrong_both = s
            .try_login(json!({"username": "carol", "password": WRONG, "totp_code": wrong_code(&key)}))
            .await
            .problem(401, "E005001", l);
        for (what, r) in [
            ("wrong password", &wrong_password),
            ("wrong TOTP code", &bad_code),
            ("wrong password and code", &wrong_both),
        ] {
            assert_eq!(r.status, unknown.status, "{l}: {what}");
            assert_eq!(
                r.body, unknown.body,
                "{l}: {what} gives the same body as an unknown user"
            );
            assert_eq!(
                r.headers.get("www-authenticate"),
                unknown.headers.get("www-authenticate"),
                "{l}: {what}"
            );
        }
        assert_eq!(unknown.body["detail"], json!("invalid credentials"), "{l}");
        assert!(unknown.body.get("errors").is_none(), "{l}: no field is singled out");

        // Strict input: unknown keys, missing keys, wrong types.
        let r = s
            .try_login(json!({"username": "bob", "password": PW, "remember_me": true}))
            .await
            .problem(400, "unknown_field", l);
        assert_eq!(r.body["errors"][0]["field"], json!("remember_me"), "{l}");
        s.try_login(json!({"username": "bob"})).await.problem(400, "E008003", l);
        let r = s
            .try_login(json!({"username": "bob", "password": 12345678}))
            .await
            .problem(400, "E008002", l);
        assert!(
            !mentions(&r.body, "12345678"),
            "{l}: the value is not echoed: {}",
            r.body
        );
        // None of those opened a session or changed anything: bob still logs in.
        login_resp(&s, "bob", PW).await.ok(201, l);
    }
}

#[tokio::test]
async fn unknown_users_cost_as_much_time_as_wrong_passwords() {
    // Throttling would answer quickly and spoil the measurement: lift it for this server.
    let env = [("MUSTER_LOGIN_FAILURES_PER_ACCOUNT_ADDRESS", "1000")];
    for s in Server::all(&env).await {
        let l = s.label;
        s.create_user(json!({"username": "timed", "password": PW})).await;
        let timed = |username: &'static str| {
            let s = &s;
            async move {
                let start = Instant::now();
                login_resp(s, username, WRONG).await.problem(401, "E005001", l);
                start.elapsed()
            }
        };
        // Warm up both paths.
        timed("ghost").await;
        timed("timed").await;
        // Interleaved, so that load from other tests weighs on both sides alike; a few rounds
        // so that a burst of load cannot fail the test on its own. Without the dummy argon2id
        // run for unknown users the ratio is far below 0.1 in every round.
        let mut ratios = Vec::new();
        for _ in 0..3 {
            let (mut unknown, mut known) = (Vec::new(), Vec::new());
            for i in 0..7 {
                if i % 2 == 0 {
                    unknown.push(timed("ghost").await);
                    known.push(timed("timed").await);
                } else {
                    known.push(timed("timed").await);
                    unknown.push(timed("ghost").await);
                }
            }
            let ratio = median(unknown).as_secs_f64() / median(known).as_secs_f64();
            ratios.push(ratio);
            if (0.5..=2.0).contains(&ratio) {
                break;
            }
        }
        assert!(
            ratios.iter().any(|r| (0.5..=2.0).contains(r)),
            "{l}: unknown-user / wrong-password login time ratios {ratios:?} should be near 1"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. TOTP
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn totp_codes_are_checked_with_one_step_of_skew_and_never_replayed() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let key = totp::generate_key();
        for name in ["tina", "tom", "tess"] {
            s.create_user(json!({"username": name, "password": PW, "is_totp_enabled": true, "totp_key": key}))
                .await;
        }
        let with_code = |username: &'static str, password: &'static str, code: String| {
            s.try_login(json!({"username": username, "password": password, "totp_code": code}))
        };

        // A code is needed, and that is said only to whoever knows the password.
        login_resp(&s, "tina", PW).await.problem(401, "E005008", l);
        login_resp(&s, "tina", WRONG).await.problem(401, "E005001", l);
        // The right code does not save a wrong password.
        let step = fresh_step().await;
        with_code("tina", WRONG, code(&key, step))
            .await
            .problem(401, "E005001", l);

        // The current code works once.
        let r = with_code("tina", PW, code(&key, step)).await.ok(201, l);
        assert_alive(&s, &token_of(&r), l).await;
        with_code("tina", PW, code(&key, step))
            .await
            .problem(401, "E005001", &format!("{l}: replayed code"));
        // The next step's code is within the allowed skew; afterwards, the earlier one is not.
        with_code("tina", PW, code(&key, step + 1)).await.ok(201, l);
        with_code("tina", PW, code(&key, step))
            .await
            .problem(401, "E005001", &format!("{l}: code of an earlier step"));

        // Tom has never used a code: a later step first, then the (unused) current step's code.
        with_code("tom", PW, code(&key, step + 1)).await.ok(201, l);
        with_code("tom", PW, code(&key, step)).await.problem(
            401,
            "E005001",
            &format!("{l}: earlier step after a later one"),
        );
        with_code("tom", PW, code(&key, step - 1)).await.problem(
            401,
            "E005001",
            &format!("{l}: earlier step after a later one"),
        );

        // Tess has never used a code: two steps away is outside the window either way, one
        // step back is inside.
        with_code("tess", PW, code(&key, step + 2))
            .await
            .problem(401, "E005001", &format!("{l}: two steps ahead"));
        with_code("tess", PW, code(&key, step - 2))
            .await
            .problem(401, "E005001", &format!("{l}: two steps back"));
        with_code("tess", PW, format!(" {} ", code(&key, step - 1)))
            .await
            .ok(201, &format!("{l}: one step back, with spaces"));
        with_code("tess", PW, "12345".into())
            .await
            .problem(401, "E005001", &format!("{l}: five digits"));
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Account checks
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn account_state_is_checked_after_the_credentials_in_zato_order() {
    for s in Server::all(&[]).await {
        let l = s.label;
        s.create_user(json!({"username": "locked", "password": PW, "is_locked": true}))
            .await;
        login_resp(&s, "locked", PW).await.problem(403, "E005002", l);
        login_resp(&s, "locked", WRONG)
            .await
            .problem(401, "E005001", &format!("{l}: credentials come first"));

        s.create_user(json!({"username": "unconfirmed", "password": PW, "sign_up_status": "before_confirmation"}))
            .await;
        login_resp(&s, "unconfirmed", PW).await.problem(403, "E005003", l);
        login_resp(&s, "unconfirmed", WRONG).await.problem(401, "E005001", l);

        s.create_user(
            json!({"username": "both", "password": PW, "is_locked": true, "sign_up_status": "before_confirmation"}),
        )
        .await;
        login_resp(&s, "both", PW)
            .await
            .problem(403, "E005002", &format!("{l}: locked is checked before sign-up"));
    }
}

#[tokio::test]
async fn a_password_that_must_change_is_replaced_at_login() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let user = s
            .create_user(json!({"username": "newbie", "password": PW, "password_must_change": true}))
            .await;
        let id = str_of(&user, "user_id");
        login_resp(&s, "newbie", PW).await.problem(403, "E003007", l);
        login_resp(&s, "newbie", WRONG).await.problem(401, "E005001", l);

        // A new password the policy refuses changes nothing.
        let r = s
            .try_login(json!({"username": "newbie", "password": PW, "new_password": "short"}))
            .await
            .problem(400, "E003002", l);
        assert_eq!(r.body["errors"][0]["field"], json!("new_password"), "{l}");
        s.try_login(json!({"username": "newbie", "password": PW, "new_password": "my-password-1"}))
            .await
            .problem(400, "E003001", l);
        s.try_login(json!({"username": "newbie", "password": PW, "new_password": PW}))
            .await
            .problem(400, "E008002", &format!("{l}: the same password again"));
        login_resp(&s, "newbie", PW)
            .await
            .problem(403, "E003007", &format!("{l}: still must change"));
        login_resp(&s, "newbie", PW2)
            .await
            .problem(401, "E005001", &format!("{l}: no refused password was stored"));
        let view = s.get(&format!("/api/users/{id}"), &s.admin_token).await.ok(200, l);
        assert_eq!(view.body["password_must_change"], json!(true), "{l}");

        let r = s
            .try_login(json!({"username": "newbie", "password": PW, "new_password": PW2}))
            .await
            .ok(201, l);
        assert_eq!(r.body["warnings"], json!([]), "{l}");
        assert_alive(&s, &token_of(&r), l).await;
        let r = login_resp(&s, "newbie", PW2)
            .await
            .ok(201, &format!("{l}: plain login with the new password"));
        assert_eq!(r.body["warnings"], json!([]), "{l}");
        login_resp(&s, "newbie", PW)
            .await
            .problem(401, "E005001", &format!("{l}: the old password is gone"));
        let view = s.get(&format!("/api/users/{id}"), &s.admin_token).await.ok(200, l);
        assert_eq!(view.body["password_must_change"], json!(false), "{l}");
    }
}

#[tokio::test]
async fn an_expired_password_ends_sessions_and_is_replaced_at_login() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let user = s.create_user(json!({"username": "eve", "password": PW})).await;
        let id = str_of(&user, "user_id");
        let old = s.login("eve", PW).await;
        assert_alive(&s, &old, l).await;

        let past = OffsetDateTime::now_utc() - time::Duration::hours(1);
        patch_user(&s, id, json!({"password_expiry": rfc3339(past)}))
            .await
            .ok(200, l);
        assert_dead(&s, &old, &format!("{l}: sessions end when the password expires")).await;
        login_resp(&s, "eve", PW).await.problem(403, "E003004", l);
        login_resp(&s, "eve", WRONG).await.problem(401, "E005001", l);
        s.try_login(json!({"username": "eve", "password": PW, "new_password": "tiny"}))
            .await
            .problem(400, "E003002", l);
        login_resp(&s, "eve", PW)
            .await
            .problem(403, "E003004", &format!("{l}: still expired"));

        let r = s
            .try_login(json!({"username": "eve", "password": PW, "new_password": PW2}))
            .await
            .ok(201, l);
        assert_eq!(r.body["warnings"], json!([]), "{l}");
        let r = login_resp(&s, "eve", PW2).await.ok(201, l);
        assert_alive(&s, &token_of(&r), l).await;
        let view = s.get(&format!("/api/users/{id}"), &s.admin_token).await.ok(200, l);
        let expiry = parse_time(&view.body["password_expiry"], l);
        assert!(
            expiry > OffsetDateTime::now_utc() + time::Duration::days(700),
            "{l}: the new password gets the configured lifetime: {expiry}"
        );
    }
}

#[tokio::test]
async fn a_password_about_to_expire_gives_a_warning() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let user = s.create_user(json!({"username": "soon", "password": PW})).await;
        let id = str_of(&user, "user_id");
        let r = login_resp(&s, "soon", PW).await.ok(201, l);
        assert_eq!(r.body["warnings"], json!([]), "{l}");

        let in_31_days = OffsetDateTime::now_utc() + time::Duration::days(31);
        patch_user(&s, id, json!({"password_expiry": rfc3339(in_31_days)}))
            .await
            .ok(200, l);
        let r = login_resp(&s, "soon", PW).await.ok(201, l);
        assert_eq!(r.body["warnings"], json!([]), "{l}: 31 days left");

        let in_10_days = OffsetDateTime::now_utc() + time::Duration::days(10);
        patch_user(&s, id, json!({"password_expiry": rfc3339(in_10_days)}))
            .await
            .ok(200, l);
        let r = login_resp(&s, "soon", PW).await.ok(201, l);
        assert_eq!(r.body["warnings"], json!(["W003005"]), "{l}: 10 days left");
        assert_alive(&s, &token_of(&r), l).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Session management
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn own_sessions_are_listed_without_tokens_and_can_be_ended() {
    for s in Server::all(&[]).await {
        let l = s.label;
        s.create_user(json!({"username": "frank", "password": PW})).await;
        let r1 = login_resp(&s, "frank", PW).await.ok(201, l);
        let r2 = login_resp(&s, "frank", PW).await.ok(201, l);
        let (t1, t2) = (token_of(&r1), token_of(&r2));
        let (id1, id2) = (str_of(&r1.body, "session_id"), str_of(&r2.body, "session_id"));

        let list = s.get("/api/sessions", &t1).await.ok(200, l).body;
        let items = list.as_array().expect("session list");
        assert_eq!(items.len(), 2, "{l}: {list}");
        assert!(!has_key(&list, "token"), "{l}: no token field: {list}");
        assert!(
            !mentions(&list, &t1) && !mentions(&list, &t2),
            "{l}: no token value: {list}"
        );
        for item in items {
            let is_first = item["session_id"] == json!(id1);
            assert!(is_first || item["session_id"] == json!(id2), "{l}: {item}");
            assert_eq!(
                item["current"],
                json!(is_first),
                "{l}: current flags the caller's: {item}"
            );
        }

        // Somebody else's session is not there to end.
        let admin_session = assert_alive(&s, &s.admin_token, l).await;
        let admin_sid = str_of(&admin_session, "session_id");
        s.delete(&format!("/api/sessions/{admin_sid}"), &t1)
            .await
            .problem(404, "not_found", l);
        s.delete("/api/sessions/not-a-uuid", &t1)
            .await
            .problem(404, "not_found", l);
        s.delete(&format!("/api/sessions/{}", uuid::Uuid::new_v4()), &t1)
            .await
            .problem(404, "not_found", l);
        assert_alive(&s, &s.admin_token, &format!("{l}: the admin's session survives")).await;

        // One's own other session can be ended.
        s.delete(&format!("/api/sessions/{id2}"), &t1).await.ok(204, l);
        assert_dead(&s, &t2, l).await;
        s.delete(&format!("/api/sessions/{id2}"), &t1)
            .await
            .problem(404, "not_found", &format!("{l}: already ended"));

        // Logout.
        s.delete("/api/session", &t1).await.ok(204, l);
        assert_dead(&s, &t1, l).await;
        s.get("/api/users/me", &t1).await.problem(401, "E007001", l);
        s.delete("/api/session", &t1).await.problem(401, "E007001", l);
    }
}

#[tokio::test]
async fn ending_all_sessions_can_keep_the_current_one() {
    for s in Server::all(&[]).await {
        let l = s.label;
        s.create_user(json!({"username": "gus", "password": PW})).await;
        let a = s.login("gus", PW).await;
        let b = s.login("gus", PW).await;
        let c = s.login("gus", PW).await;
        let r = s.delete("/api/sessions?keep_current=true", &a).await.ok(200, l);
        assert_eq!(r.body["revoked"], json!(2), "{l}");
        assert_alive(&s, &a, &format!("{l}: the current session is kept")).await;
        assert_dead(&s, &b, l).await;
        assert_dead(&s, &c, l).await;
        assert_alive(&s, &s.admin_token, &format!("{l}: other users' sessions are untouched")).await;

        let d = s.login("gus", PW).await;
        let r = s.delete("/api/sessions", &a).await.ok(200, l);
        assert_eq!(r.body["revoked"], json!(2), "{l}");
        assert_dead(&s, &a, l).await;
        assert_dead(&s, &d, l).await;
        s.delete("/api/sessions?keep_current=maybe", &s.admin_token)
            .await
            .problem(400, "E008002", l);
        s.delete("/api/sessions?keep_everything=true", &s.admin_token)
            .await
            .problem(400, "unknown_field", l);
        assert_alive(&s, &s.admin_token, l).await;
    }
}

#[tokio::test]
async fn renew_verify_and_user_sessions_for_super_users() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let henry = s.create_user(json!({"username": "henry", "password": PW})).await;
        let iris = s.create_user(json!({"username": "iris", "password": PW})).await;
        let hid = str_of(&henry, "user_id");
        let iid = str_of(&iris, "user_id");
        let r = login_resp(&s, "henry", PW).await.ok(201, l);
        let t1 = token_of(&r);
        let t2 = s.login("henry", PW).await;
        let iris_token = s.login("iris", PW).await;

        // Renew.
        let renewed = s
            .call(Method::POST, "/api/session/renew", Some(&t1), None)
            .await
            .ok(200, l)
            .body;
        assert_eq!(renewed["session_id"], r.body["session_id"], "{l}");
        assert_eq!(renewed["current"], json!(true), "{l}");
        assert_eq!(
            parse_time(&renewed["absolute_expires_at"], l),
            parse_time(&r.body["absolute_expires_at"], l),
            "{l}: renewal keeps the absolute expiry"
        );
        assert!(
            parse_time(&renewed["expires_at"], l) >= parse_time(&r.body["expires_at"], l),
            "{l}: {renewed}"
        );
        s.call(Method::POST, "/api/session/renew", Some("mst_bogus"), None)
            .await
            .problem(401, "E007001", l);

        // Verify: super-user only, and never an error about the token itself.
        let admin = s.admin_token.clone();
        let verify = |token: String| s.post("/api/session/verify", &admin, json!({"token": token}));
        let v = verify(t1.clone()).await.ok(200, l);
        assert_eq!(v.body, json!({"is_valid": true}), "{l}");
        let v = verify("mst_bogus".into()).await.ok(200, l);
        assert_eq!(v.body, json!({"is_valid": false}), "{l}");
        let v = verify(String::new()).await.ok(200, l);
        assert_eq!(v.body, json!({"is_valid": false}), "{l}");
        s.post("/api/session/verify", &iris_token, json!({"token": t1}))
            .await
            .problem(403, "E005005", l);
        s.post("/api/session/verify", &iris_token, json!({"token": iris_token}))
            .await
            .problem(403, "E005005", l);

        // A user's sessions, as the super-user.
        let list = s
            .get(&format!("/api/users/{hid}/sessions"), &admin)
            .await
            .ok(200, l)
            .body;
        assert_eq!(list.as_array().map(Vec::len), Some(2), "{l}: {list}");
        assert!(
            !has_key(&list, "token") && !mentions(&list, &t1) && !mentions(&list, &t2),
            "{l}"
        );
        assert!(
            list.as_array()
                .expect("list")
                .iter()
                .all(|x| x["user_id"] == json!(hid) && x["current"] == json!(false)),
            "{l}: {list}"
        );
        // ... but not as another regular user; oneself is fine.
        s.get(&format!("/api/users/{hid}/sessions"), &iris_token)
            .await
            .problem(403, "E005005", l);
        s.delete(&format!("/api/users/{hid}/sessions"), &iris_token)
            .await
            .problem(403, "E005005", l);
        let own = s
            .get(&format!("/api/users/{iid}/sessions"), &iris_token)
            .await
            .ok(200, l);
        assert_eq!(own.body.as_array().map(Vec::len), Some(1), "{l}");
        assert_alive(&s, &t1, &format!("{l}: refused calls changed nothing")).await;

        let r = s.delete(&format!("/api/users/{hid}/sessions"), &admin).await.ok(200, l);
        assert_eq!(r.body["revoked"], json!(2), "{l}");
        assert_dead(&s, &t1, l).await;
        assert_dead(&s, &t2, l).await;
        let v = verify(t1.clone()).await.ok(200, l);
        assert_eq!(v.body, json!({"is_valid": false}), "{l}: a revoked token");
        let list = s
            .get(&format!("/api/users/{hid}/sessions"), &admin)
            .await
            .ok(200, l)
            .body;
        assert_eq!(list, json!([]), "{l}");
        assert_alive(&s, &iris_token, &format!("{l}: other users keep theirs")).await;
        assert_alive(&s, &admin, l).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Expiry
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn idle_sessions_expire_and_renewal_restarts_the_idle_clock() {
    // One server at a time: the admin's session of a server started early would lapse too.
    for db in TestDb::all().await {
        let s = Server::start(db, &[("MUSTER_SESSION_IDLE_SECS", "2")]).await;
        let l = s.label;
        s.create_user(json!({"username": "idle", "password": PW})).await;
        let start = Instant::now();
        let r = login_resp(&s, "idle", PW).await.ok(201, l);
        let unused = token_of(&r);
        let renewed = s.login("idle", PW).await;
        let expires = parse_time(&r.body["expires_at"], l);
        let absolute = parse_time(&r.body["absolute_expires_at"], l);
        assert!(
            (expires - OffsetDateTime::now_utc()) <= time::Duration::seconds(2),
            "{l}: idle expiry in 2 s: {expires}"
        );
        assert!(absolute - expires > time::Duration::hours(11), "{l}");
        assert_alive(&s, &unused, l).await;

        tokio::time::sleep(Duration::from_millis(1200).saturating_sub(start.elapsed())).await;
        s.call(Method::POST, "/api/session/renew", Some(&renewed), None)
            .await
            .ok(200, l);
        tokio::time::sleep(Duration::from_millis(2400).saturating_sub(start.elapsed())).await;
        assert_alive(&s, &renewed, &format!("{l}: renewed 1.2 s ago")).await;
        tokio::time::sleep(Duration::from_millis(3000).saturating_sub(start.elapsed())).await;
        assert_dead(&s, &unused, &format!("{l}: unused for 3 s")).await;
        let list = s.get("/api/sessions", &renewed).await.ok(200, l).body;
        assert_eq!(
            list.as_array().map(Vec::len),
            Some(1),
            "{l}: idle sessions are not listed: {list}"
        );
    }
}

#[tokio::test]
async fn sessions_end_at_their_absolute_expiry_however_used() {
    let env = [
        ("MUSTER_SESSION_ABSOLUTE_SECS", "3"),
        ("MUSTER_SESSION_IDLE_SECS", "100"),
    ];
    for db in TestDb::all().await {
        let s = Server::start(db, &env).await;
        let l = s.label;
        s.create_user(json!({"username": "busy", "password": PW})).await;
        let start = Instant::now();
        let r = login_resp(&s, "busy", PW).await.ok(201, l);
        let token = token_of(&r);
        let expires = parse_time(&r.body["expires_at"], l);
        let absolute = parse_time(&r.body["absolute_expires_at"], l);
        assert_eq!(expires, absolute, "{l}: the idle expiry is capped by the absolute one");
        assert!(
            absolute - OffsetDateTime::now_utc() <= time::Duration::seconds(3),
            "{l}: {absolute}"
        );
        let mut died_at = None;
        for second in 1..=6u64 {
            tokio::time::sleep(Duration::from_secs(second).saturating_sub(start.elapsed())).await;
            if second % 2 == 0 {
                let renew = s.call(Method::POST, "/api/session/renew", Some(&token), None).await;
                assert!(
                    renew.status.as_u16() == 200 || renew.code() == "E007001",
                    "{l}: {renew:?}"
                );
            }
            let r = session_of(&s, &token).await;
            if r.status.as_u16() == 200 {
                assert!(died_at.is_none(), "{l}: a dead session came back at {second} s");
            } else {
                r.problem(401, "E007001", l);
                died_at.get_or_insert(second);
            }
        }
        let died_at = died_at.unwrap_or_else(|| panic!("{l}: the session outlived its absolute expiry"));
        assert!((3..=4).contains(&died_at), "{l}: died after {died_at} s, expected 3-4");
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Throttling
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn repeated_failures_throttle_the_account_name_whether_or_not_it_exists() {
    for s in Server::all(&[]).await {
        let l = s.label;
        s.create_user(json!({"username": "gina", "password": PW})).await;
        s.create_user(json!({"username": "hank", "password": PW})).await;
        for i in 1..=5 {
            login_resp(&s, "gina", WRONG)
                .await
                .problem(401, "E005001", &format!("{l}: failure {i}"));
        }
        let existing =
            login_resp(&s, "gina", PW)
                .await
                .problem(429, "throttled", &format!("{l}: 6th attempt, right password"));
        let wait = retry_after(&existing);
        assert!((1..=2).contains(&wait), "{l}: Retry-After {wait}");
        // The case of the name does not dodge the counter.
        login_resp(&s, "GINA", PW).await.problem(429, "throttled", l);

        for i in 1..=5 {
            login_resp(&s, "nobody", WRONG)
                .await
                .problem(401, "E005001", &format!("{l}: unknown user, failure {i}"));
        }
        let unknown = login_resp(&s, "nobody", WRONG).await.problem(429, "throttled", l);
        assert!(retry_after(&unknown) >= 1, "{l}");
        assert_eq!(
            unknown.body, existing.body,
            "{l}: throttling says nothing about existence"
        );

        // Other names from the same address are not held back by those counters.
        let r = login_resp(&s, "hank", PW).await.ok(201, l);
        assert_alive(&s, &token_of(&r), l).await;
        login_resp(&s, "hank", WRONG).await.problem(401, "E005001", l);
    }
}

#[tokio::test]
async fn the_account_counter_lapses_after_the_delay_and_resets_on_success() {
    for s in Server::all(&[("MUSTER_LOGIN_MAX_DELAY_SECS", "2")]).await {
        let l = s.label;
        s.create_user(json!({"username": "ivy", "password": PW})).await;
        for _ in 0..5 {
            login_resp(&s, "ivy", WRONG).await.problem(401, "E005001", l);
        }
        let r = login_resp(&s, "ivy", PW).await.problem(429, "throttled", l);
        let wait = retry_after(&r);
        assert!(
            (1..=2).contains(&wait),
            "{l}: Retry-After {wait} within the 2 s ceiling"
        );
        // Retry-After is in whole seconds; allow for its rounding (see the ignored test below).
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let r = login_resp(&s, "ivy", PW)
            .await
            .ok(201, &format!("{l}: after the delay"));
        assert_alive(&s, &token_of(&r), l).await;
        // The success reset the counter: four more failures are free again, and the right
        // password still gets in (without the reset, the first of them would be throttled).
        for i in 1..=4 {
            login_resp(&s, "ivy", WRONG)
                .await
                .problem(401, "E005001", &format!("{l}: failure {i} after the reset"));
        }
        login_resp(&s, "ivy", PW).await.ok(201, l);
    }
}

#[tokio::test]

async fn waiting_out_retry_after_is_enough() {
    for s in Server::all(&[("MUSTER_LOGIN_MAX_DELAY_SECS", "2")]).await {
        let l = s.label;
        s.create_user(json!({"username": "jay", "password": PW})).await;
        for attempt in 0..3 {
            for _ in 0..5 {
                login_resp(&s, "jay", WRONG).await.problem(401, "E005001", l);
            }
            let r = login_resp(&s, "jay", PW).await.problem(429, "throttled", l);
            let wait = retry_after(&r);
            tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(50)).await;
            login_resp(&s, "jay", PW).await.ok(
                201,
                &format!("{l}: attempt {attempt}, after waiting Retry-After: {wait} s"),
            );
        }
    }
}

#[tokio::test]
async fn an_address_failing_on_many_names_is_slowed_for_new_names_only() {
    // The policy changed: an address used to be throttled on every attempt after 50 failures,
    // which let one client lock every user behind a shared address out. Now it is held to a
    // number of distinct failing names, and only for names new to it.
    let env = [
        ("MUSTER_LOGIN_ACCOUNTS_PER_ADDRESS", "3"),
        ("MUSTER_LOGIN_MAX_DELAY_SECS", "2"),
    ];
    for s in Server::all(&env).await {
        let l = s.label;
        s.create_user(json!({"username": "kate", "password": PW})).await;
        login_resp(&s, "kate", WRONG).await.problem(401, "E005001", l);
        login_resp(&s, "someone", WRONG).await.problem(401, "E005001", l);
        login_resp(&s, "someone-else", WRONG).await.problem(401, "E005001", l);
        let r = login_resp(&s, "a-fourth-name", WRONG).await.problem(
            429,
            "throttled",
            &format!("{l}: a fourth failing name from 127.0.0.1"),
        );
        assert!((1..=2).contains(&retry_after(&r)), "{l}");
        // A name already failing from the address is held back by its own counter only.
        login_resp(&s, "someone", WRONG).await.problem(401, "E005001", l);
        let r = login_resp(&s, "kate", PW)
            .await
            .ok(201, &format!("{l}: kate's own counter has one failure"));
        assert_alive(&s, &token_of(&r), l).await;
        tokio::time::sleep(Duration::from_millis(2100)).await;
        login_resp(&s, "a-fourth-name", WRONG)
            .await
            .problem(401, "E005001", &format!("{l}: after the delay"));
    }
}

/// `POST /api/session` as if from `addr` (the test server trusts 127.0.0.1 as a proxy).
async fn login_from(s: &Server, addr: &str, username: &str, password: &str) -> Resp {
    s.send(
        s.request(Method::POST, "/api/session")
            .header("x-forwarded-for", addr)
            .json(&json!({"username": username, "password": password})),
    )
    .await
}

/// Settings for tests that log in from several addresses: 127.0.0.1 is a trusted proxy, and
/// no wait is longer than 2 s.
const FROM_ADDRESSES: [(&str, &str); 2] = [
    ("MUSTER_TRUSTED_PROXIES", "127.0.0.1"),
    ("MUSTER_LOGIN_MAX_DELAY_SECS", "2"),
];

#[tokio::test]
async fn failures_elsewhere_never_refuse_the_right_password_from_a_clean_address() {
    for s in Server::all(&FROM_ADDRESSES).await {
        let l = s.label;
        s.create_user(json!({"username": "lena", "password": PW})).await;
        // Strangers at six addresses: five failures each is all the pair allows…
        for a in 1..=6 {
            let attacker = format!("198.51.100.{a}");
            for _ in 0..5 {
                login_from(&s, &attacker, "lena", WRONG)
                    .await
                    .problem(401, "E005001", l);
            }
            let r = login_from(&s, &attacker, "lena", PW).await.problem(
                429,
                "throttled",
                &format!("{l}: the sixth try from {attacker}, even with the right password"),
            );
            assert!(retry_after(&r) >= 1, "{l}");
        }
        // …and thirty failures on the name, below its ceiling of 100, hold nobody else back.
        let r = login_from(&s, "203.0.113.7", "lena", PW)
            .await
            .ok(201, &format!("{l}: the real user from their own address"));
        assert_alive(&s, &token_of(&r), l).await;
    }
}

#[tokio::test]
async fn an_attacker_guessing_once_per_retry_after_never_locks_the_user_out() {
    for s in Server::all(&FROM_ADDRESSES).await {
        let l = s.label;
        s.create_user(json!({"username": "mona", "password": PW})).await;
        let attacker = "198.51.100.20";
        let (mut guesses, mut refused) = (0, 0);
        for round in 0..12 {
            let r = login_from(&s, attacker, "mona", WRONG).await;
            match r.status.as_u16() {
                401 => guesses += 1,
                429 => {
                    refused += 1;
                    // The attacker waits exactly as long as told, then guesses again.
                    tokio::time::sleep(Duration::from_secs(retry_after(&r)) + Duration::from_millis(50)).await;
                    login_from(&s, attacker, "mona", WRONG).await.problem(
                        401,
                        "E005001",
                        &format!("{l}: round {round}, after Retry-After"),
                    );
                    guesses += 1;
                }
                other => panic!("{l}: round {round}: {other} {}", r.body),
            }
            // Between any two guesses the real user logs in from their own address.
            let r = login_from(&s, "203.0.113.8", "mona", PW)
                .await
                .ok(201, &format!("{l}: round {round}: the real user"));
            assert_alive(&s, &token_of(&r), l).await;
        }
        assert!(
            refused >= 5,
            "{l}: the attacker was slowed ({refused} refusals, {guesses} guesses)"
        );
    }
}

#[tokio::test]
async fn past_the_account_ceiling_only_that_name_is_slowed_and_known_addresses_still_get_in() {
    let env = [
        FROM_ADDRESSES[0],
        FROM_ADDRESSES[1],
        ("MUSTER_LOGIN_FAILURES_PER_ACCOUNT", "10"),
    ];
    for s in Server::all(&env).await {
        let l = s.label;
        s.create_user(json!({"username": "nina", "password": PW})).await;
        s.create_user(json!({"username": "otto", "password": PW})).await;
        let home = "203.0.113.9";
        login_from(&s, home, "nina", PW)
            .await
            .ok(201, &format!("{l}: nina at home"));
        // Ten failures from two addresses, five each (all each pair allows without a wait).
        for a in 1..=2 {
            for _ in 0..5 {
                login_from(&s, &format!("198.51.100.{}", 30 + a), "nina", WRONG)
                    .await
                    .problem(401, "E005001", l);
            }
        }
        let fresh = "192.0.2.44";
        let r = login_from(&s, fresh, "nina", PW).await.problem(
            429,
            "throttled",
            &format!("{l}: past the ceiling, nina is slowed from an address she never used"),
        );
        assert!((1..=2).contains(&retry_after(&r)), "{l}");
        login_from(&s, fresh, "otto", PW)
            .await
            .ok(201, &format!("{l}: only nina's name is slowed"));
        let r = login_from(&s, home, "nina", PW)
            .await
            .ok(201, &format!("{l}: from home nina still gets in"));
        assert_alive(&s, &token_of(&r), l).await;
        // Her login ended the run of consecutive failures: the fresh address is fine again.
        login_from(&s, fresh, "nina", PW)
            .await
            .ok(201, &format!("{l}: after a success the ceiling counts from zero"));
    }
}

#[tokio::test]
async fn spraying_random_names_from_one_address_does_not_lock_out_the_users_behind_it() {
    for s in Server::all(&FROM_ADDRESSES).await {
        let l = s.label;
        let shared = "198.51.100.77";
        for name in ["pat", "quinn", "rosa", "sam"] {
            s.create_user(json!({"username": name, "password": PW})).await;
        }
        // pat logs in from the shared address every day.
        login_from(&s, shared, "pat", PW).await.ok(201, l);
        // Someone behind the same address tries 45 random names.
        for i in 0..45 {
            login_from(
                &s,
                shared,
                &format!("spray-{i}-{}", uuid::Uuid::new_v4().simple()),
                WRONG,
            )
            .await
            .problem(401, "E005001", &format!("{l}: sprayed name {i}"));
        }
        // Everyone behind it still gets in, first-timers included.
        for name in ["pat", "quinn", "rosa"] {
            login_from(&s, shared, name, PW)
                .await
                .ok(201, &format!("{l}: {name} behind the sprayed address"));
        }
        // Past 50 distinct failing names, new names from the address are slowed…
        let mut slowed = None;
        for i in 45..70 {
            let r = login_from(
                &s,
                shared,
                &format!("spray-{i}-{}", uuid::Uuid::new_v4().simple()),
                WRONG,
            )
            .await;
            if r.status.as_u16() == 429 {
                slowed = Some(r);
                break;
            }
            r.problem(401, "E005001", &format!("{l}: sprayed name {i}"));
        }
        let slowed = slowed.unwrap_or_else(|| panic!("{l}: the sprayer was never slowed"));
        assert!((1..=2).contains(&retry_after(&slowed)), "{l}");
        // …but a name that logged in from it before is not…
        login_from(&s, shared, "pat", PW)
            .await
            .ok(201, &format!("{l}: a known address is never held back by the spray"));
        // …and a first-timer waits at most the Retry-After the sprayer gets.
        let r = login_from(&s, shared, "sam", PW).await;
        if r.status.as_u16() == 429 {
            tokio::time::sleep(Duration::from_secs(retry_after(&r)) + Duration::from_millis(50)).await;
            login_from(&s, shared, "sam", PW)
                .await
                .ok(201, &format!("{l}: sam after waiting"));
        } else {
            r.ok(201, l);
        }
    }
}

/// Every text stored in the throttle's tables, as one string per row.
async fn throttle_rows(url: &str) -> Vec<String> {
    let sql = [
        "SELECT key FROM login_throttle",
        "SELECT address_key || ' ' || account_key FROM login_address_failures",
        "SELECT account_key || ' ' || address_key FROM login_known_addresses",
    ];
    let mut rows = Vec::new();
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.expect("sqlite");
        for q in sql {
            rows.extend(sqlx::query_scalar::<_, String>(q).fetch_all(&pool).await.expect(q));
        }
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(url).await.expect("postgres");
        for q in sql {
            rows.extend(sqlx::query_scalar::<_, String>(q).fetch_all(&pool).await.expect(q));
        }
        pool.close().await;
    }
    rows
}

#[tokio::test]
async fn the_throttle_stores_neither_typed_names_nor_addresses() {
    for s in Server::all(&FROM_ADDRESSES).await {
        let l = s.label;
        s.create_user(json!({"username": "uma", "password": PW})).await;
        // A password typed into the username field, and a real name.
        let typed = "Hunter2-typed-in-the-wrong-field";
        login_from(&s, "198.51.100.99", typed, WRONG)
            .await
            .problem(401, "E005001", l);
        login_from(&s, "198.51.100.99", "uma", WRONG)
            .await
            .problem(401, "E005001", l);
        login_from(&s, "203.0.113.99", "uma", PW).await.ok(201, l);
        let rows = throttle_rows(&s.db_url).await;
        assert!(
            rows.len() >= 4,
            "{l}: counters, a failing name and a known address: {rows:?}"
        );
        for row in &rows {
            for secret in [typed, &typed.to_lowercase(), "uma", "198.51.100", "203.0.113"] {
                assert!(!row.contains(secret), "{l}: {secret:?} stored in {row:?}");
            }
        }
    }
}

#[tokio::test]

async fn concurrent_guesses_do_not_bypass_the_account_throttle() {
    for s in Server::all(&[]).await {
        let l = s.label;
        s.create_user(json!({"username": "target", "password": PW})).await;
        // Twenty guesses at once, as an attacker with a fast connection would send them.
        let mut attempts = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let req = s
                .request(Method::POST, "/api/session")
                .json(&json!({"username": "target", "password": WRONG}));
            attempts.spawn(async move { req.send().await.map(|r| r.status().as_u16()) });
        }
        let mut statuses = Vec::new();
        while let Some(joined) = attempts.join_next().await {
            statuses.push(joined.expect("task").expect("response"));
        }
        let guessed = statuses.iter().filter(|&&st| st == 401).count();
        let throttled = statuses.iter().filter(|&&st| st == 429).count();
        assert_eq!(guessed + throttled, 20, "{l}: {statuses:?}");
        // Five failures are free; allow a few more for guesses already being hashed.
        assert!(
            guessed <= 8,
            "{l}: {guessed} of 20 concurrent guesses were checked against the password (5 are free)"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 8. Audit of logins
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn logins_are_audited_without_the_attempted_credentials() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let user = s
            .create_user(json!({"username": "audited-person", "password": PW}))
            .await;
        let uid = str_of(&user, "user_id").to_owned();
        let wrong_pw = "Att3mpted-s3cret-guess";
        let ghost = "ghost-account-name";
        let ghost_pw = "Gh0st-s3cret-guess";

        let r = login_with_request_id(
            &s,
            "fail-known-1",
            json!({"username": "audited-person", "password": wrong_pw}),
        )
        .await
        .problem(401, "E005001", l);
        assert_eq!(request_id_of(&r), "fail-known-1", "{l}: the request id is echoed");
        login_with_request_id(&s, "fail-unknown-1", json!({"username": ghost, "password": ghost_pw}))
            .await
            .problem(401, "E005001", l);
        let ok = login_with_request_id(&s, "ok-1", json!({"username": "audited-person", "password": PW}))
            .await
            .ok(201, l);
        assert_eq!(request_id_of(&ok), "ok-1", "{l}");
        let token = token_of(&ok);

        let records = login_audit(&s).await;
        let by_cid = |cid: &str| -> Value {
            let found: Vec<&Value> = records.iter().filter(|r| r["cid"] == json!(cid)).collect();
            assert_eq!(found.len(), 1, "{l}: one record with cid {cid}: {records:?}");
            found[0].clone()
        };
        let unknown = by_cid("fail-unknown-1");
        assert_eq!(unknown["outcome"], json!("failure"), "{l}: {unknown}");
        assert_eq!(unknown["reason"], json!("E005001"), "{l}: {unknown}");
        assert_eq!(
            unknown["target"],
            Value::Null,
            "{l}: no target for an unknown user: {unknown}"
        );
        assert_eq!(unknown["remote_addr"], json!("127.0.0.1"), "{l}: {unknown}");
        let success = by_cid("ok-1");
        assert_eq!(success["outcome"], json!("success"), "{l}: {success}");
        assert_eq!(success["target"], json!(uid), "{l}: {success}");
        assert_eq!(
            success["details"]["session_id"], ok.body["session_id"],
            "{l}: {success}"
        );
        assert_eq!(success["current_app"], json!("muster"), "{l}: {success}");
        let known = by_cid("fail-known-1");
        assert_eq!(known["outcome"], json!("failure"), "{l}: {known}");
        assert_eq!(known["reason"], json!("E005001"), "{l}: {known}");

        let all = Value::Array(records.clone());
        for secret in [wrong_pw, ghost, ghost_pw, PW, "audited-person", token.as_str()] {
            assert!(!mentions(&all, secret), "{l}: the audit shows {secret:?}: {all}");
        }

        // Request ids that could smuggle text are replaced, and the replacement is the cid.
        for bad in ["has a space".to_owned(), "x".repeat(129)] {
            let r = login_with_request_id(&s, &bad, json!({"username": ghost, "password": ghost_pw}))
                .await
                .problem(401, "E005001", l);
            let got = request_id_of(&r);
            assert_ne!(got, bad, "{l}: {bad:?} is replaced");
            assert!(!got.is_empty() && got.len() <= 128 && !got.contains(' '), "{l}: {got}");
            let records = login_audit(&s).await;
            assert!(
                records.iter().any(|r| r["cid"] == json!(got)),
                "{l}: cid {got} recorded"
            );
            assert!(
                !records.iter().any(|r| r["cid"] == json!(bad)),
                "{l}: {bad:?} not recorded"
            );
        }
        let longest = "y".repeat(128);
        let r = login_with_request_id(&s, &longest, json!({"username": ghost, "password": ghost_pw})).await;
        assert_eq!(request_id_of(&r), longest, "{l}: 128 characters are kept");
        // Without one, one is generated.
        let r = login_resp(&s, ghost, ghost_pw).await;
        assert!(!request_id_of(&r).is_empty(), "{l}");
    }
}

#[tokio::test]

async fn failed_logins_of_existing_users_name_the_user_in_the_audit() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let key = totp::generate_key();
        let user = s.create_user(json!({"username": "known", "password": PW})).await;
        let totp_user = s
            .create_user(json!({"username": "known-totp", "password": PW, "is_totp_enabled": true, "totp_key": key}))
            .await;
        login_with_request_id(&s, "wrong-password", json!({"username": "known", "password": WRONG}))
            .await
            .problem(401, "E005001", l);
        login_with_request_id(
            &s,
            "wrong-code",
            json!({"username": "known-totp", "password": PW, "totp_code": wrong_code(&key)}),
        )
        .await
        .problem(401, "E005001", l);
        let records = login_audit(&s).await;
        let target_of = |cid: &str| {
            records
                .iter()
                .find(|r| r["cid"] == json!(cid))
                .map(|r| r["target"].clone())
                .unwrap_or_else(|| panic!("{l}: no record {cid}"))
        };
        assert_eq!(target_of("wrong-code"), totp_user["user_id"], "{l}: wrong TOTP code");
        assert_eq!(target_of("wrong-password"), user["user_id"], "{l}: wrong password");
    }
}

// ---------------------------------------------------------------------------------------------
// 9. Secrets stay out of the logs
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    for s in Server::all(&[("MUSTER_LOG", "debug")]).await {
        let l = s.label;
        let key = totp::generate_key();
        let pw_totp = "L0g-t0tp-s3cret";
        let pw_plain = "L0g-pl4in-s3cret";
        let pw_changed = "L0g-ch4nged-s3cret";
        let pw_set = "L0g-s3t-by-4dmin";
        let pw_forced = "L0g-f0rced-n3w";
        let wrong = "L0g-wr0ng-gu3ss";

        let totp_user = s
            .create_user(
                json!({"username": "logged-totp", "password": pw_totp, "is_totp_enabled": true, "totp_key": key}),
            )
            .await;
        s.create_user(json!({"username": "logged", "password": pw_plain})).await;
        let step = fresh_step().await;
        let r = s
            .try_login(json!({"username": "logged-totp", "password": pw_totp, "totp_code": code(&key, step)}))
            .await
            .ok(201, l);
        let totp_token = token_of(&r);
        let token = s.login("logged", pw_plain).await;
        login_resp(&s, "logged", wrong).await.problem(401, "E005001", l);
        s.try_login(json!({"username": "logged", "password": wrong, "unexpected": wrong}))
            .await
            .problem(400, "unknown_field", l);
        s.try_login(json!({"username": "logged", "password": 987_654_321_012u64}))
            .await
            .problem(400, "E008002", l);
        s.put(
            "/api/users/me/password",
            &token,
            json!({"old_password": pw_plain, "new_password": pw_changed}),
        )
        .await
        .ok(204, l);
        let tid = str_of(&totp_user, "user_id");
        s.put(
            &format!("/api/users/{tid}/password"),
            &s.admin_token,
            json!({"new_password": pw_set, "password_must_change": true}),
        )
        .await
        .ok(204, l);
        s.try_login(json!({"username": "logged-totp", "password": pw_set, "totp_code": code(&key, step + 1), "new_password": pw_forced}))
            .await
            .ok(201, l);
        s.post("/api/session/verify", &s.admin_token, json!({"token": totp_token}))
            .await
            .ok(200, l);
        // Let the last log lines through the pipe.
        tokio::time::sleep(Duration::from_millis(300)).await;

        let stderr = s.stderr();
        let stdout = s.stdout();
        assert!(
            stderr.contains("DEBUG"),
            "{l}: debug logging is on, so the check means something: {stderr}"
        );
        assert!(stderr.contains("/api/session"), "{l}: requests are logged");
        for secret in [
            pw_totp,
            pw_plain,
            pw_changed,
            pw_set,
            pw_forced,
            wrong,
            "987654321012",
            key.as_str(),
            &key.to_lowercase(),
            totp_token.as_str(),
            token.as_str(),
            ADMIN_PASSWORD,
            s.admin_token.as_str(),
        ] {
            assert!(!stderr.contains(secret), "{l}: stderr shows {secret:?}");
            assert!(!stdout.contains(secret), "{l}: stdout shows {secret:?}");
        }
        // The token without its prefix, too (e.g. a Debug of the random part).
        for t in [&totp_token, &token, &s.admin_token] {
            let random = t.trim_start_matches("mst_");
            assert!(!stderr.contains(random), "{l}: stderr shows a token");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 10. Bootstrap
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_bootstrap_super_user_must_replace_a_printed_one_time_password() {
    for db in TestDb::all().await {
        let s = Server::start_with(db, &[], false).await;
        let l = s.label;
        let stdout = s.stdout();
        let one_time = stdout
            .lines()
            .find_map(|line| line.split_once("one-time password: ").map(|(_, rest)| rest.trim()))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("{l}: no one-time password on stdout: {stdout}"))
            .to_owned();
        assert!(one_time.len() >= 24, "{l}: a strong one-time password: {one_time}");
        assert!(
            !s.stderr().contains(&one_time),
            "{l}: the one-time password is not logged"
        );

        login_resp(&s, ADMIN, &one_time).await.problem(403, "E003007", l);
        login_resp(&s, ADMIN, WRONG).await.problem(401, "E005001", l);
        let r = s
            .try_login(json!({"username": ADMIN, "password": one_time, "new_password": PW}))
            .await
            .ok(201, l);
        let token = token_of(&r);
        let me = s.get("/api/users/me", &token).await.ok(200, l);
        assert_eq!(me.body["is_super_user"], json!(true), "{l}: {}", me.body);
        assert_eq!(me.body["password_must_change"], json!(false), "{l}");
        login_resp(&s, ADMIN, &one_time)
            .await
            .problem(401, "E005001", &format!("{l}: the one-time password is spent"));
        login_resp(&s, ADMIN, PW).await.ok(201, l);

        // No super-user is made over HTTP.
        let r = s
            .post(
                "/api/users",
                &token,
                json!({"username": "sneaky", "password": PW, "is_super_user": true}),
            )
            .await
            .problem(400, "unknown_field", l);
        assert_eq!(r.body["errors"][0]["field"], json!("is_super_user"), "{l}");
        let found = s.get("/api/users?username=sneaky", &token).await.ok(200, l);
        assert_eq!(found.body["total"], json!(0), "{l}: {}", found.body);
        login_resp(&s, "sneaky", PW).await.problem(401, "E005001", l);
    }
}

#[tokio::test]
async fn a_configured_admin_password_is_not_printed_and_needs_no_change() {
    for s in Server::all(&[]).await {
        let l = s.label;
        assert!(!s.stdout().contains("one-time password"), "{l}: {}", s.stdout());
        let me = s.get("/api/users/me", &s.admin_token).await.ok(200, l);
        assert_eq!(me.body["is_super_user"], json!(true), "{l}");
        assert_eq!(me.body["password_must_change"], json!(false), "{l}");
        // Regular users see no super-user fields and cannot create users.
        let (_, token) = s.user_with_session("plain", PW).await;
        let me = s.get("/api/users/me", &token).await.ok(200, l);
        assert!(me.body.get("is_super_user").is_none(), "{l}: {}", me.body);
        s.post("/api/users", &token, json!({"username": "other"}))
            .await
            .problem(403, "E005005", l);
    }
}
