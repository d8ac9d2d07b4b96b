//! End-to-end tests of `/api/users`: Zato SSO `create_user` semantics (enrichment, defaults,
//! approval), refusals that change nothing, problem documents, visibility, updates, lock,
//! delete, passwords, search and the audit trail. Every test runs on every database.

use crate::common;

use crate::common::{ADMIN, ADMIN_PASSWORD, Resp, Server};
use muster_store::testing::TestDb;
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// A password every policy accepts.
const PASSWORD: &str = "Sturdy-Kettle-42";
/// Another acceptable password.
const PASSWORD_2: &str = "Granite-Lantern-77";
/// A third acceptable password.
const PASSWORD_3: &str = "Velvet-Compass-19";

/// Crockford's base32 alphabet, lowercase: `[0-9a-hjkmnp-tv-z]`.
const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Fields everyone allowed to see a user gets.
const REGULAR_KEYS: &[&str] = &[
    "user_id",
    "uuid",
    "username",
    "email",
    "display_name",
    "first_name",
    "middle_name",
    "last_name",
    "is_totp_enabled",
    "totp_label",
];

/// Fields only super-users get.
const ADMIN_ONLY_KEYS: &[&str] = &[
    "is_active",
    "is_internal",
    "is_super_user",
    "is_approval_needed",
    "approval_status",
    "approval_status_mod_by",
    "approval_status_mod_time",
    "is_locked",
    "locked_time",
    "locked_by",
    "password_is_set",
    "password_must_change",
    "password_last_set",
    "password_expiry",
    "sign_up_status",
    "sign_up_time",
];

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn new_cid() -> String {
    format!("test-cid-{}", Uuid::new_v4())
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

fn key_set(list: &[&[&str]]) -> BTreeSet<String> {
    list.iter().flat_map(|l| l.iter()).map(|k| (*k).to_owned()).collect()
}

fn regular_keys() -> BTreeSet<String> {
    key_set(&[REGULAR_KEYS])
}

fn full_keys() -> BTreeSet<String> {
    key_set(&[REGULAR_KEYS, ADMIN_ONLY_KEYS])
}

fn str_of<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is not a string in {v}"))
}

fn ts(v: &Value, field: &str) -> OffsetDateTime {
    OffsetDateTime::parse(str_of(v, field), &Rfc3339).unwrap_or_else(|e| panic!("{field} is not RFC 3339: {e}; {v}"))
}

/// Decodes `musr` + 26 Crockford base32 characters into the 128-bit value they carry.
fn decode_user_id(user_id: &str) -> Option<u128> {
    let rest = user_id.strip_prefix("musr")?;
    if rest.len() != 26 {
        return None;
    }
    let mut value: u128 = 0;
    for (i, c) in rest.bytes().enumerate() {
        let digit = CROCKFORD.iter().position(|&a| a == c)? as u128;
        if i == 0 && digit > 0b111 {
            return None;
        }
        value = (value << 5) | digit;
    }
    Some(value)
}

/// `^musr[0-9a-hjkmnp-tv-z]{26}$`
fn has_user_id_shape(user_id: &str) -> bool {
    user_id.len() == 30 && user_id.starts_with("musr") && user_id[4..].bytes().all(|c| CROCKFORD.contains(&c))
}

fn create_req(s: &Server, token: &str, body: &Value) -> RequestBuilder {
    s.request(Method::POST, "/api/users").bearer_auth(token).json(body)
}

/// A call carrying `X-Request-Id: cid`; checks the id is echoed.
async fn call_cid(s: &Server, method: Method, path: &str, token: &str, body: Option<Value>, cid: &str) -> Resp {
    let mut req = s.request(method, path).bearer_auth(token).header("x-request-id", cid);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = s.send(req).await;
    let echoed = r
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert_eq!(echoed, cid, "{}: X-Request-Id is echoed", s.label);
    r
}

/// POST without a body (lock, unlock, approve, reject).
async fn post_empty(s: &Server, path: &str, token: &str) -> Resp {
    s.call(Method::POST, path, Some(token), None).await
}

async fn me(s: &Server, token: &str) -> Resp {
    s.get("/api/users/me", token).await
}

async fn admin_id(s: &Server) -> String {
    let r = me(s, &s.admin_token).await.expect(200);
    str_of(&r.body, "user_id").to_owned()
}

/// A user as the super-user sees it.
async fn user(s: &Server, id: &str) -> Value {
    s.get(&format!("/api/users/{id}"), &s.admin_token)
        .await
        .expect(200)
        .body
}

async fn login(s: &Server, username: &str, password: &str) -> Resp {
    s.try_login(json!({"username": username, "password": password})).await
}

#[track_caller]
fn token_of(r: &Resp) -> String {
    str_of(&r.body, "token").to_owned()
}

async fn assert_alive(s: &Server, token: &str, what: &str) {
    let r = me(s, token).await;
    assert_eq!(
        r.status.as_u16(),
        200,
        "{}: {what}: session should work; {}",
        s.label,
        r.body
    );
}

async fn assert_dead(s: &Server, token: &str, what: &str) {
    let r = me(s, token).await;
    assert_eq!(
        r.status.as_u16(),
        401,
        "{}: {what}: session should have ended; {}",
        s.label,
        r.body
    );
    assert_eq!(r.code(), "E007001", "{}: {what}", s.label);
}

/// `GET /api/users?<query>` as the super-user.
async fn search(s: &Server, query: &str) -> Value {
    s.get(&format!("/api/users?{query}"), &s.admin_token)
        .await
        .expect(200)
        .body
}

fn total(v: &Value) -> i64 {
    v["total"].as_i64().unwrap_or_else(|| panic!("no total in {v}"))
}

fn usernames(page: &Value) -> Vec<String> {
    page["result"]
        .as_array()
        .unwrap_or_else(|| panic!("no result in {page}"))
        .iter()
        .map(|u| str_of(u, "username").to_owned())
        .collect()
}

/// How many users have `username` (case-insensitively).
async fn count_username(s: &Server, username: &str) -> i64 {
    let req = s
        .request(Method::GET, "/api/users")
        .bearer_auth(&s.admin_token)
        .query(&[("username", username)]);
    total(&s.send(req).await.expect(200).body)
}

/// The user with `username`, as the super-user sees it.
async fn user_by_name(s: &Server, username: &str) -> Value {
    let req = s
        .request(Method::GET, "/api/users")
        .bearer_auth(&s.admin_token)
        .query(&[("username", username)]);
    let page = s.send(req).await.expect(200).body;
    assert_eq!(total(&page), 1, "{}: one user named {username}: {page}", s.label);
    page["result"][0].clone()
}

async fn audit_total(s: &Server, query: &str) -> i64 {
    total(&s.audit(query).await)
}

/// The one audit record written under `cid`.
async fn only_record(s: &Server, cid: &str) -> Value {
    let page = s.audit(&format!("cid={cid}")).await;
    assert_eq!(
        total(&page),
        1,
        "{}: exactly one audit record for {cid}: {page}",
        s.label
    );
    page["result"][0].clone()
}

/// What a refused call must not change.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    users: i64,
    successes: i64,
    create_successes: i64,
}

async fn snapshot(s: &Server) -> Snapshot {
    Snapshot {
        users: total(&search(s, "page_size=1").await),
        successes: audit_total(s, "outcome=success").await,
        create_successes: audit_total(s, "action=user.create&outcome=success").await,
    }
}

/// Sends `req`, which must be refused with `status` (and `code` when given), and checks that
/// no user and no success audit record were added, and that `username` (if any) did not
/// gain a user.
async fn refused(s: &Server, req: RequestBuilder, username: Option<&str>, status: u16, code: Option<&str>) -> Resp {
    let before = snapshot(s).await;
    let named_before = match username {
        Some(u) => Some(count_username(s, u).await),
        None => None,
    };
    let r = s.send(req).await;
    assert_eq!(
        r.status.as_u16(),
        status,
        "{}: refusal status for {:?}; body: {}",
        s.label,
        username,
        r.body
    );
    if let Some(code) = code {
        assert_eq!(
            r.code(),
            code,
            "{}: refusal code for {:?}; body: {}",
            s.label,
            username,
            r.body
        );
    }
    assert_problem_shape(s, &r);
    let after = snapshot(s).await;
    assert_eq!(
        before, after,
        "{}: a refused call ({:?}) changed something",
        s.label, username
    );
    if let (Some(u), Some(n)) = (username, named_before) {
        assert_eq!(count_username(s, u).await, n, "{}: refused create added {u}", s.label);
    }
    r
}

/// Every error is an RFC 9457 problem document with muster's fields.
#[track_caller]
fn assert_problem_shape(s: &Server, r: &Resp) {
    let ct = r
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert_eq!(
        ct, "application/problem+json",
        "{}: problem content type; {}",
        s.label, r.body
    );
    for field in ["type", "title", "detail", "code"] {
        assert!(
            r.body[field].as_str().is_some_and(|v| !v.is_empty()),
            "{}: problem field {field} missing: {}",
            s.label,
            r.body
        );
    }
    assert_eq!(
        r.body["status"].as_u64(),
        Some(u64::from(r.status.as_u16())),
        "{}: problem status: {}",
        s.label,
        r.body
    );
}

/// The field named in the problem's `errors`, if any.
fn error_field(r: &Resp) -> Option<&str> {
    r.body["errors"][0]["field"].as_str()
}

// ---------------------------------------------------------------------------------------------
// 1. Creation: enrichment with every server-assigned value
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_user_enriches_with_every_server_assigned_field() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let admin = admin_id(&s).await;
        let before = OffsetDateTime::now_utc() - Duration::seconds(2);
        let u = s.create_user(json!({"username": "enriched"})).await;
        let after = OffsetDateTime::now_utc() + Duration::seconds(2);

        assert_eq!(
            keys(&u),
            full_keys(),
            "{l}: the answer has exactly the user's fields: {u}"
        );
        let id = str_of(&u, "user_id");
        assert!(has_user_id_shape(id), "{l}: user_id shape: {id}");
        let uuid = Uuid::parse_str(str_of(&u, "uuid")).expect("uuid parses");
        assert_eq!(uuid.get_version_num(), 4, "{l}: random uuid");
        assert_eq!(decode_user_id(id), Some(uuid.as_u128()), "{l}: user_id encodes uuid");

        let expected = [
            ("username", json!("enriched")),
            ("email", Value::Null),
            ("display_name", Value::Null),
            ("first_name", Value::Null),
            ("middle_name", Value::Null),
            ("last_name", Value::Null),
            ("is_active", json!(true)),
            ("is_internal", json!(false)),
            ("is_super_user", json!(false)),
            ("is_approval_needed", json!(false)),
            ("approval_status", json!("approved")),
            ("approval_status_mod_by", json!(admin)),
            ("is_locked", json!(false)),
            ("locked_time", Value::Null),
            ("locked_by", Value::Null),
            ("password_is_set", json!(true)),
            ("password_must_change", json!(false)),
            ("sign_up_status", json!("final")),
            ("is_totp_enabled", json!(false)),
            ("totp_label", json!("muster")),
        ];
        for (field, value) in expected {
            assert_eq!(u[field], value, "{l}: {field} in {u}");
        }
        for field in ["approval_status_mod_time", "password_last_set", "sign_up_time"] {
            let t = ts(&u, field);
            assert!(before <= t && t <= after, "{l}: {field} {t} is now");
        }
        assert_eq!(
            ts(&u, "password_expiry") - ts(&u, "password_last_set"),
            Duration::days(730),
            "{l}: password expires 730 days after it is set"
        );

        // display_name is derived "first middle last" from the names present, unless given
        let ada = s
            .create_user(
                json!({"username": "ada", "first_name": "Ada", "middle_name": "King", "last_name": "Lovelace"}),
            )
            .await;
        assert_eq!(ada["display_name"], "Ada King Lovelace", "{l}");
        assert_eq!(ada["middle_name"], "King", "{l}");
        let grace = s
            .create_user(json!({"username": "grace", "first_name": "Grace", "last_name": "Hopper"}))
            .await;
        assert_eq!(grace["display_name"], "Grace Hopper", "{l}");
        let alan = s
            .create_user(json!({"username": "alan", "display_name": "Dr Turing", "first_name": "Alan"}))
            .await;
        assert_eq!(alan["display_name"], "Dr Turing", "{l}: a given display_name is kept");

        // A chosen password and TOTP key are never returned
        let totp_key = "JBSWY3DPEHPK3PXPJBSWY3DP";
        let with_pw = s
            .create_user(json!({
                "username": "withpw", "password": PASSWORD, "totp_key": totp_key, "totp_label": "Work",
                "email": "withpw@example.org", "password_must_change": true,
            }))
            .await;
        assert_eq!(keys(&with_pw), full_keys(), "{l}: {with_pw}");
        let text = with_pw.to_string();
        assert!(!text.contains(PASSWORD), "{l}: the password is not echoed");
        assert!(!text.contains(totp_key), "{l}: the TOTP key is not echoed");
        assert_eq!(with_pw["totp_label"], "Work", "{l}");
        assert_eq!(with_pw["password_must_change"], true, "{l}");
        assert_eq!(with_pw["email"], "withpw@example.org", "{l}");

        // GET by user_id and by uuid give the same user as the creation answer
        for created in [&u, &ada, &with_pw] {
            let id = str_of(created, "user_id");
            let uuid = str_of(created, "uuid");
            let by_id = user(&s, id).await;
            let by_uuid = user(&s, uuid).await;
            assert_eq!(by_id, by_uuid, "{l}: same user by user_id and by uuid");
            assert_eq!(&by_id, created, "{l}: the stored user is what creation answered");
            assert!(!by_id.to_string().contains(PASSWORD), "{l}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Approval
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn approval_required_gates_login_until_approved_and_rejection_ends_sessions() {
    for db in TestDb::all().await {
        let s = Server::start(db, &[("MUSTER_APPROVAL_REQUIRED", "true")]).await;
        let l = s.label;
        let admin = admin_id(&s).await;
        let u = s
            .create_user(json!({"username": "pending", "password": PASSWORD}))
            .await;
        let id = str_of(&u, "user_id").to_owned();
        assert_eq!(u["approval_status"], "before_decision", "{l}: {u}");
        assert_eq!(u["is_approval_needed"], true, "{l}");
        assert_eq!(u["approval_status_mod_by"], admin.as_str(), "{l}");
        let created_mod_time = ts(&u, "approval_status_mod_time");

        login(&s, "pending", PASSWORD).await.expect_problem(403, "E005004");
        // The password is checked first: a wrong one does not reveal the approval state
        login(&s, "pending", "Wrong-Password-1")
            .await
            .expect_problem(401, "E005001");

        let page = search(&s, "approval_status=before_decision").await;
        assert_eq!(usernames(&page), vec!["pending"], "{l}: {page}");

        // A regular user (the admin creates and approves one) cannot approve or reject
        let other = s.create_user(json!({"username": "other", "password": PASSWORD})).await;
        let other_id = str_of(&other, "user_id");
        post_empty(&s, &format!("/api/users/{other_id}/approve"), &s.admin_token)
            .await
            .expect(200);
        let other_token = s.login("other", PASSWORD).await;
        post_empty(&s, &format!("/api/users/{id}/approve"), &other_token)
            .await
            .expect_problem(403, "E005005");
        post_empty(&s, &format!("/api/users/{id}/reject"), &other_token)
            .await
            .expect_problem(403, "E005005");
        assert_eq!(user(&s, &id).await["approval_status"], "before_decision", "{l}");

        let approved = post_empty(&s, &format!("/api/users/{id}/approve"), &s.admin_token)
            .await
            .expect(200)
            .body;
        assert_eq!(approved["approval_status"], "approved", "{l}: {approved}");
        assert_eq!(approved["approval_status_mod_by"], admin.as_str(), "{l}");
        assert!(ts(&approved, "approval_status_mod_time") >= created_mod_time, "{l}");
        assert_eq!(user(&s, &id).await, approved, "{l}: stored as answered");

        let token = token_of(&login(&s, "pending", PASSWORD).await.expect(201));
        assert_alive(&s, &token, "approved user").await;

        let rejected = post_empty(&s, &format!("/api/users/{id}/reject"), &s.admin_token)
            .await
            .expect(200)
            .body;
        assert_eq!(rejected["approval_status"], "rejected", "{l}");
        assert_dead(&s, &token, "after rejection").await;
        login(&s, "pending", PASSWORD).await.expect_problem(403, "E005004");
        // Rejection keeps the user
        assert_eq!(user(&s, &id).await["approval_status"], "rejected", "{l}");
        assert_eq!(total(&search(&s, "approval_status=rejected").await), 1, "{l}");

        // The super-user cannot withdraw their own approval
        post_empty(&s, &format!("/api/users/{admin}/reject"), &s.admin_token)
            .await
            .expect_problem(400, "E008001");
        assert_alive(&s, &s.admin_token, "admin after refused self-rejection").await;

        // Approving again lets the user back in
        post_empty(&s, &format!("/api/users/{id}/approve"), &s.admin_token)
            .await
            .expect(200);
        login(&s, "pending", PASSWORD).await.expect(201);
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Generated passwords
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn generated_password_is_never_shown_and_cannot_be_guessed() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let cid = new_cid();
        let r = call_cid(
            &s,
            Method::POST,
            "/api/users",
            &s.admin_token,
            Some(json!({"username": "nopw"})),
            &cid,
        )
        .await
        .expect(201);
        assert_eq!(keys(&r.body), full_keys(), "{l}: no password key: {}", r.body);
        assert_eq!(r.body["password_is_set"], true, "{l}");
        let record = only_record(&s, &cid).await;
        assert_eq!(record["details"]["password_generated"], true, "{l}: {record}");

        for guess in ["", "password", "nopw", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
            login(&s, "nopw", guess).await.expect_problem(401, "E005001");
        }
        // An unknown user gets the very same answer
        let unknown = login(&s, "nobody-here", "whatever-pass")
            .await
            .expect_problem(401, "E005001");
        let known = login(&s, "nopw", "whatever-pass").await.expect_problem(401, "E005001");
        assert_eq!(unknown.body, known.body, "{l}: no enumeration through login");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Refusals change nothing
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn refused_creates_change_nothing() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let admin = s.admin_token.clone();
        let (regular, regular_token) = s.user_with_session("regular", PASSWORD).await;
        let regular_id = str_of(&regular, "user_id").to_owned();
        s.create_user(json!({"username": "alice"})).await;

        // Not a super-user: 403, and the refusal is audited as a failure
        let cid = new_cid();
        let req = create_req(&s, &regular_token, &json!({"username": "by-regular"})).header("x-request-id", &cid);
        refused(&s, req, Some("by-regular"), 403, Some("E005005")).await;
        let record = only_record(&s, &cid).await;
        assert_eq!(record["action"], "user.create", "{l}: {record}");
        assert_eq!(record["outcome"], "failure", "{l}");
        assert_eq!(record["reason"], "E005005", "{l}");
        assert_eq!(record["actor"], regular_id.as_str(), "{l}");
        assert_eq!(
            audit_total(&s, &format!("action=user.create&outcome=failure&actor={regular_id}")).await,
            1,
            "{l}"
        );

        // No token, an invalid token
        let req = s.request(Method::POST, "/api/users").json(&json!({"username": "anon"}));
        let r = refused(&s, req, Some("anon"), 401, Some("E007001")).await;
        assert_eq!(
            r.headers.get("www-authenticate").and_then(|v| v.to_str().ok()),
            Some("Bearer"),
            "{l}"
        );
        let req = create_req(&s, "mst_not-a-real-token", &json!({"username": "badtoken"}));
        refused(&s, req, Some("badtoken"), 401, Some("E007001")).await;

        // Duplicate username, in another case
        let req = create_req(&s, &admin, &json!({"username": "Alice"}));
        refused(&s, req, Some("alice"), 409, Some("E001002")).await;
        let req = create_req(&s, &admin, &json!({"username": "ALICE", "password": PASSWORD}));
        refused(&s, req, Some("alice"), 409, Some("E001002")).await;

        // Unknown key: named in the answer
        let req = create_req(&s, &admin, &json!({"username": "sneaky", "is_super_user": true}));
        let r = refused(&s, req, Some("sneaky"), 400, Some("unknown_field")).await;
        assert_eq!(error_field(&r), Some("is_super_user"), "{l}: {}", r.body);
        assert!(str_of(&r.body, "detail").contains("is_super_user"), "{l}: {}", r.body);

        // Wrong types
        let req = create_req(&s, &admin, &json!({"username": "wt", "is_locked": "yes"}));
        let r = refused(&s, req, Some("wt"), 400, Some("E008002")).await;
        assert_eq!(error_field(&r), Some("is_locked"), "{l}: {}", r.body);
        let req = create_req(&s, &admin, &json!({"username": 5}));
        let r = refused(&s, req, None, 400, Some("E008002")).await;
        assert_eq!(error_field(&r), Some("username"), "{l}: {}", r.body);
        let req = create_req(&s, &admin, &json!(["username", "x"]));
        refused(&s, req, None, 400, None).await;

        // Missing username
        let req = create_req(&s, &admin, &json!({"first_name": "Nameless"}));
        refused(&s, req, None, 400, Some("E001001")).await;

        // Malformed JSON, no content type, too large
        let req = s
            .request(Method::POST, "/api/users")
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body(r#"{"username": "broken""#);
        refused(&s, req, Some("broken"), 400, Some("malformed_json")).await;
        let req = s
            .request(Method::POST, "/api/users")
            .bearer_auth(&admin)
            .body(r#"{"username": "untyped"}"#);
        refused(&s, req, Some("untyped"), 415, Some("unsupported_media_type")).await;
        let req = create_req(
            &s,
            &admin,
            &json!({"username": "huge", "display_name": "x".repeat(70 * 1024)}),
        );
        refused(&s, req, Some("huge"), 413, Some("body_too_large")).await;

        // Password policy
        let req = create_req(&s, &admin, &json!({"username": "shortpw", "password": "Ab1-xyz"}));
        let r = refused(&s, req, Some("shortpw"), 400, Some("E003002")).await;
        assert_eq!(error_field(&r), Some("password"), "{l}: {}", r.body);
        let req = create_req(&s, &admin, &json!({"username": "commonpw", "password": "MyPassword1"}));
        refused(&s, req, Some("commonpw"), 400, Some("E003001")).await;
        let req = create_req(&s, &admin, &json!({"username": "longpw", "password": "k".repeat(257)}));
        refused(&s, req, Some("longpw"), 400, Some("E003003")).await;

        // Username, email, TOTP key
        let req = create_req(&s, &admin, &json!({"username": "has space"}));
        refused(&s, req, Some("has space"), 400, Some("E001004")).await;
        let req = create_req(&s, &admin, &json!({"username": "u".repeat(129)}));
        refused(&s, req, None, 400, Some("E001003")).await;
        let req = create_req(&s, &admin, &json!({"username": ""}));
        refused(&s, req, None, 400, Some("E001001")).await;
        let req = create_req(&s, &admin, &json!({"username": "bademail", "email": "not-an-address"}));
        let r = refused(&s, req, Some("bademail"), 400, Some("E002001")).await;
        assert_eq!(error_field(&r), Some("email"), "{l}: {}", r.body);
        let bad_key = "NOT-BASE32-SECRET!";
        let req = create_req(&s, &admin, &json!({"username": "badtotp", "totp_key": bad_key}));
        let r = refused(&s, req, Some("badtotp"), 400, Some("E008002")).await;
        assert_eq!(error_field(&r), Some("totp_key"), "{l}: {}", r.body);
        assert!(!r.body.to_string().contains(bad_key), "{l}: the key is not echoed");
        let req = create_req(&s, &admin, &json!({"username": "shorttotp", "totp_key": "JBSWY3DP"}));
        refused(&s, req, Some("shorttotp"), 400, Some("E008002")).await;
        let req = create_req(
            &s,
            &admin,
            &json!({"username": "badstatus", "sign_up_status": "confirmed"}),
        );
        refused(&s, req, Some("badstatus"), 400, Some("E008002")).await;

        // After all that, a valid create still works (and is the only new success)
        let before = snapshot(&s).await;
        s.create_user(json!({"username": "valid-after"})).await;
        let after = snapshot(&s).await;
        assert_eq!(after.users, before.users + 1, "{l}");
        assert_eq!(after.create_successes, before.create_successes + 1, "{l}");
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Error bodies
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn errors_are_problem_documents_that_never_echo_secrets() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let admin = s.admin_token.clone();
        let r = s
            .post(
                "/api/users",
                &admin,
                json!({"username": "typed", "password": 987654321123_u64}),
            )
            .await;
        assert_eq!(r.status.as_u16(), 400, "{l}: {}", r.body);
        assert_problem_shape(&s, &r);
        assert_eq!(r.code(), "E008002", "{l}: {}", r.body);
        assert_eq!(error_field(&r), Some("password"), "{l}: {}", r.body);
        assert!(
            !r.body.to_string().contains("987654321123"),
            "{l}: value echoed: {}",
            r.body
        );
        assert_eq!(r.body["title"], "Bad Request", "{l}");

        // A secret-looking string in a field of another type is not echoed either
        let r = s
            .post(
                "/api/users",
                &admin,
                json!({"username": "typed", "is_locked": "hunter2-secret"}),
            )
            .await;
        assert_eq!(r.status.as_u16(), 400, "{l}");
        assert!(!r.body.to_string().contains("hunter2-secret"), "{l}: {}", r.body);

        // A rejected password is not echoed
        let r = s
            .post(
                "/api/users",
                &admin,
                json!({"username": "typed", "password": "qwerty-secret-thing"}),
            )
            .await
            .expect_problem(400, "E003001");
        assert!(!r.body.to_string().contains("qwerty-secret-thing"), "{l}: {}", r.body);

        // Every kind of refusal answers the same shape
        for r in [
            s.get("/api/users/me", "nope").await,
            s.get("/api/users/not-a-user-id", &admin).await,
            s.get(&format!("/api/users/{}", Uuid::new_v4()), &admin).await,
            s.post("/api/users", &admin, json!({"username": "admin"})).await,
            s.get("/api/users?bogus=1", &admin).await,
        ] {
            assert!(r.status.is_client_error(), "{l}: {}", r.body);
            assert_problem_shape(&s, &r);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Visibility
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn regular_users_see_only_themselves_and_only_regular_fields() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let (bob, bob_token) = s.user_with_session("bob", PASSWORD).await;
        let bob_id = str_of(&bob, "user_id").to_owned();
        let carol = s
            .create_user(json!({"username": "carol", "email": "carol@example.org"}))
            .await;
        let carol_id = str_of(&carol, "user_id").to_owned();

        let mine = me(&s, &bob_token).await.expect(200).body;
        assert_eq!(keys(&mine), regular_keys(), "{l}: regular fields only: {mine}");
        assert_eq!(mine["user_id"], bob_id.as_str(), "{l}");
        assert_eq!(mine["uuid"], bob["uuid"], "{l}");
        assert_eq!(mine["username"], "bob", "{l}");
        for k in REGULAR_KEYS {
            assert_eq!(mine[*k], bob[*k], "{l}: {k} matches the admin view");
        }
        // Own record by id and by uuid: the same regular view
        let by_id = s
            .get(&format!("/api/users/{bob_id}"), &bob_token)
            .await
            .expect(200)
            .body;
        let by_uuid = s
            .get(&format!("/api/users/{}", str_of(&bob, "uuid")), &bob_token)
            .await
            .expect(200)
            .body;
        assert_eq!(by_id, mine, "{l}");
        assert_eq!(by_uuid, mine, "{l}");

        // Someone else is indistinguishable from nobody
        let other = s
            .get(&format!("/api/users/{carol_id}"), &bob_token)
            .await
            .expect_problem(404, "not_found");
        let other_by_uuid = s
            .get(&format!("/api/users/{}", str_of(&carol, "uuid")), &bob_token)
            .await
            .expect_problem(404, "not_found");
        let nobody = s
            .get(&format!("/api/users/{}", Uuid::new_v4()), &bob_token)
            .await
            .expect_problem(404, "not_found");
        assert_eq!(other.body, nobody.body, "{l}: no enumeration");
        assert_eq!(other_by_uuid.body, nobody.body, "{l}: no enumeration");
        assert!(!other.body.to_string().contains("carol"), "{l}");
        // The admin too
        let admin_uid = admin_id(&s).await;
        let r = s
            .get(&format!("/api/users/{admin_uid}"), &bob_token)
            .await
            .expect_problem(404, "not_found");
        assert_eq!(r.body, nobody.body, "{l}");

        // Malformed ids
        for bad in [
            "not-an-id".to_owned(),
            "musr".to_owned(),
            format!("musr{}", "z".repeat(26)),
            format!("musr{}", "0".repeat(25)),
            format!("musr{}", "0".repeat(27)),
            "zusr1e2xwnk9p89ty8y0skcpy795c9".to_owned(),
        ] {
            s.get(&format!("/api/users/{bad}"), &bob_token)
                .await
                .expect_problem(400, "E001100");
            s.get(&format!("/api/users/{bad}"), &s.admin_token)
                .await
                .expect_problem(400, "E001100");
        }

        // The super-user sees everything, of others and of themselves
        let as_admin = user(&s, &carol_id).await;
        assert_eq!(keys(&as_admin), full_keys(), "{l}");
        assert_eq!(as_admin["email"], "carol@example.org", "{l}");
        let admin_me = me(&s, &s.admin_token).await.expect(200).body;
        assert_eq!(keys(&admin_me), full_keys(), "{l}");
        assert_eq!(admin_me["is_super_user"], true, "{l}");
        assert_eq!(admin_me["username"], ADMIN, "{l}");
        assert_eq!(
            admin_me["approval_status_mod_by"], "auto",
            "{l}: bootstrap is auto-approved"
        );

        // Search is super-user only
        s.get("/api/users", &bob_token).await.expect_problem(403, "E005005");
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Update rules
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn owners_update_regular_fields_and_super_users_the_rest() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let admin = s.admin_token.clone();
        let admin_uid = admin_id(&s).await;
        let (dan, dan_token) = s.user_with_session("dan", PASSWORD).await;
        let dan_id = str_of(&dan, "user_id").to_owned();
        s.create_user(json!({"username": "erin"})).await;

        // The owner changes the regular fields
        let changes = json!({
            "email": "dan@example.org", "display_name": "Daniel D", "first_name": "Daniel",
            "middle_name": "X", "last_name": "Dee", "totp_label": "Phone",
        });
        let r = s
            .patch("/api/users/me", &dan_token, changes.clone())
            .await
            .expect(200)
            .body;
        assert_eq!(keys(&r), regular_keys(), "{l}: the owner gets the regular view: {r}");
        let stored = user(&s, &dan_id).await;
        for (k, v) in changes.as_object().expect("object") {
            assert_eq!(&r[k], v, "{l}: {k} answered");
            assert_eq!(&stored[k], v, "{l}: {k} stored");
        }
        // Through /api/users/{own id} too
        let r = s
            .patch(&format!("/api/users/{dan_id}"), &dan_token, json!({"middle_name": "Y"}))
            .await
            .expect(200)
            .body;
        assert_eq!(r["middle_name"], "Y", "{l}");
        // null clears
        let r = s
            .patch(
                "/api/users/me",
                &dan_token,
                json!({"email": null, "display_name": null, "middle_name": null, "totp_label": null}),
            )
            .await
            .expect(200)
            .body;
        let stored = user(&s, &dan_id).await;
        for k in ["email", "display_name", "middle_name"] {
            assert_eq!(r[k], Value::Null, "{l}: {k} cleared");
            assert_eq!(stored[k], Value::Null, "{l}: {k} cleared in store");
        }
        assert_eq!(stored["totp_label"], "", "{l}: totp_label cleared");
        assert_eq!(stored["first_name"], "Daniel", "{l}: absent keys are left alone");
        assert_eq!(stored["last_name"], "Dee", "{l}");

        // The owner may not touch the super-user fields; nothing changes, even alongside allowed keys
        let before = user(&s, &dan_id).await;
        let successes = audit_total(&s, "outcome=success").await;
        let forbidden = [
            json!({"username": "dan2"}),
            json!({"is_locked": false}),
            json!({"is_totp_enabled": true}),
            json!({"approval_status": "approved"}),
            json!({"password_expiry": "2099-01-01T00:00:00Z"}),
            json!({"password_must_change": true}),
            json!({"sign_up_status": "final"}),
            json!({"email": "sneaky@example.org", "username": "dan2"}),
            json!({"username": null}),
        ];
        for body in forbidden {
            let r = s.patch("/api/users/me", &dan_token, body.clone()).await;
            assert_eq!(r.status.as_u16(), 403, "{l}: owner {body}: {}", r.body);
            assert_eq!(r.code(), "E005005", "{l}: owner {body}");
            assert_problem_shape(&s, &r);
            let r = s.patch(&format!("/api/users/{dan_id}"), &dan_token, body.clone()).await;
            assert_eq!(r.status.as_u16(), 403, "{l}: owner by id {body}: {}", r.body);
        }
        assert_eq!(user(&s, &dan_id).await, before, "{l}: refused updates changed nothing");
        assert_eq!(
            audit_total(&s, "outcome=success").await,
            successes,
            "{l}: no success recorded"
        );
        assert_eq!(
            audit_total(&s, &format!("action=user.update&outcome=failure&target={dan_id}")).await,
            18,
            "{l}: each refusal recorded as a failure"
        );
        assert_alive(&s, &dan_token, "after refused updates").await;

        // The owner cannot update someone else: 404, as for nobody
        let erin_id = str_of(&user_by_name(&s, "erin").await, "user_id").to_owned();
        let r = s
            .patch(
                &format!("/api/users/{erin_id}"),
                &dan_token,
                json!({"email": "x@example.org"}),
            )
            .await
            .expect_problem(404, "not_found");
        let nobody = s
            .patch(
                &format!("/api/users/{}", Uuid::new_v4()),
                &dan_token,
                json!({"email": "x@example.org"}),
            )
            .await
            .expect_problem(404, "not_found");
        assert_eq!(r.body, nobody.body, "{l}");
        assert_eq!(user(&s, &erin_id).await["email"], Value::Null, "{l}");

        // Invalid input: 400, nothing changes
        let before = user(&s, &dan_id).await;
        for (body, status, code) in [
            (json!({"email": "not-an-address"}), 400, "E002001"),
            (json!({"is_super_user": true}), 400, "unknown_field"),
            (json!({"password": PASSWORD_2}), 400, "unknown_field"),
            (json!({"first_name": 7}), 400, "E008002"),
            (json!({"totp_label": "t".repeat(192)}), 400, "E008002"),
        ] {
            let r = s.patch("/api/users/me", &dan_token, body.clone()).await;
            assert_eq!(r.status.as_u16(), status, "{l}: {body}: {}", r.body);
            assert_eq!(r.code(), code, "{l}: {body}: {}", r.body);
        }
        let r = s
            .patch(&format!("/api/users/{dan_id}"), &admin, json!({"username": null}))
            .await
            .expect_problem(400, "E008002");
        assert_eq!(error_field(&r), Some("username"), "{l}: {}", r.body);
        s.patch(
            &format!("/api/users/{dan_id}"),
            &admin,
            json!({"username": "has space"}),
        )
        .await
        .expect_problem(400, "E001004");
        s.patch(&format!("/api/users/{dan_id}"), &admin, json!({"is_locked": null}))
            .await
            .expect_problem(400, "E008002");
        s.patch(
            &format!("/api/users/{dan_id}"),
            &admin,
            json!({"approval_status": "maybe"}),
        )
        .await
        .expect_problem(400, "E008002");
        s.patch(
            &format!("/api/users/{dan_id}"),
            &admin,
            json!({"password_expiry": "tomorrow"}),
        )
        .await
        .expect_problem(400, "E008002");
        // Renaming onto an existing username (any case): 409
        for taken in ["erin", "ERIN", "Admin"] {
            s.patch(&format!("/api/users/{dan_id}"), &admin, json!({"username": taken}))
                .await
                .expect_problem(409, "E001002");
        }
        s.patch(
            &format!("/api/users/{dan_id}"),
            &admin,
            json!({"username": "erin", "email": "moved@example.org"}),
        )
        .await
        .expect_problem(409, "E001002");
        assert_eq!(user(&s, &dan_id).await, before, "{l}: refused updates changed nothing");
        assert_eq!(count_username(&s, "erin").await, 1, "{l}");

        // The super-user may change every field
        let r = s
            .patch(
                &format!("/api/users/{dan_id}"),
                &admin,
                json!({"username": "Daniel.Dee", "email": "daniel@example.org", "password_must_change": true,
                       "password_expiry": "2031-02-28T13:33:13.359733+02:00"}),
            )
            .await
            .expect(200)
            .body;
        assert_eq!(keys(&r), full_keys(), "{l}: the super-user gets the full view");
        assert_eq!(r["username"], "Daniel.Dee", "{l}");
        assert_eq!(r["email"], "daniel@example.org", "{l}");
        assert_eq!(r["password_must_change"], true, "{l}");
        let expected_expiry = OffsetDateTime::parse("2031-02-28T11:33:13.359733Z", &Rfc3339).expect("time");
        assert_eq!(ts(&r, "password_expiry"), expected_expiry, "{l}");
        let stored = user(&s, &dan_id).await;
        assert_eq!(stored, r, "{l}: stored as answered");
        assert_eq!(count_username(&s, "daniel.dee").await, 1, "{l}");
        assert_eq!(count_username(&s, "dan").await, 0, "{l}");
        // Must change now: login needs new_password
        login(&s, "daniel.dee", PASSWORD).await.expect_problem(403, "E003007");
        // Changing only the case of one's own name is allowed
        s.patch(
            &format!("/api/users/{dan_id}"),
            &admin,
            json!({"username": "daniel.DEE"}),
        )
        .await
        .expect(200);
        let r = s
            .patch(
                &format!("/api/users/{dan_id}"),
                &admin,
                json!({"password_must_change": false, "is_totp_enabled": true}),
            )
            .await
            .expect(200)
            .body;
        assert_eq!(r["is_totp_enabled"], true, "{l}");
        login(&s, "daniel.dee", PASSWORD).await.expect_problem(401, "E005008");
        let r = s
            .patch(
                &format!("/api/users/{dan_id}"),
                &admin,
                json!({"is_totp_enabled": false, "sign_up_status": "before_confirmation"}),
            )
            .await
            .expect(200)
            .body;
        assert_eq!(r["sign_up_status"], "before_confirmation", "{l}");
        assert_dead(&s, &dan_token, "sign-up no longer final").await;
        login(&s, "daniel.dee", PASSWORD).await.expect_problem(403, "E005003");
        let r = s
            .patch(
                &format!("/api/users/{dan_id}"),
                &admin,
                json!({"sign_up_status": "final", "approval_status": "rejected"}),
            )
            .await
            .expect(200)
            .body;
        assert_eq!(r["approval_status"], "rejected", "{l}");
        assert_eq!(r["approval_status_mod_by"], admin_uid.as_str(), "{l}");
        login(&s, "daniel.dee", PASSWORD).await.expect_problem(403, "E005004");
        let r = s
            .patch(
                &format!("/api/users/{dan_id}"),
                &admin,
                json!({"approval_status": "approved", "is_locked": true}),
            )
            .await
            .expect(200)
            .body;
        assert_eq!(r["is_locked"], true, "{l}");
        login(&s, "daniel.dee", PASSWORD).await.expect_problem(403, "E005002");
        s.patch(&format!("/api/users/{dan_id}"), &admin, json!({"is_locked": false}))
            .await
            .expect(200);
        // An expiry in the past ends sessions and requires a new password at login
        let token = token_of(&login(&s, "daniel.dee", PASSWORD).await.expect(201));
        s.patch(
            &format!("/api/users/{dan_id}"),
            &admin,
            json!({"password_expiry": "2001-01-01T00:00:00Z"}),
        )
        .await
        .expect(200);
        assert_dead(&s, &token, "password expired").await;
        login(&s, "daniel.dee", PASSWORD).await.expect_problem(403, "E003004");
        s.try_login(json!({"username": "daniel.dee", "password": PASSWORD, "new_password": PASSWORD_2}))
            .await
            .expect(201);
        login(&s, "daniel.dee", PASSWORD_2).await.expect(201);
    }
}

// ---------------------------------------------------------------------------------------------
// 8. Lock and unlock
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn locking_ends_sessions_and_blocks_login_until_unlocked() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let admin = s.admin_token.clone();
        let admin_uid = admin_id(&s).await;
        let (frank, frank_token) = s.user_with_session("frank", PASSWORD).await;
        let frank_id = str_of(&frank, "user_id").to_owned();
        let (_, gina_token) = s.user_with_session("gina", PASSWORD).await;

        // A regular user cannot lock anyone (nor learn whether they exist)
        post_empty(&s, &format!("/api/users/{frank_id}/lock"), &gina_token)
            .await
            .expect_problem(403, "E005005");
        post_empty(&s, &format!("/api/users/{}/lock", Uuid::new_v4()), &gina_token)
            .await
            .expect_problem(403, "E005005");
        post_empty(&s, &format!("/api/users/{frank_id}/unlock"), &gina_token)
            .await
            .expect_problem(403, "E005005");
        assert_eq!(user(&s, &frank_id).await["is_locked"], false, "{l}");
        assert_alive(&s, &frank_token, "refused lock").await;

        let before = OffsetDateTime::now_utc() - Duration::seconds(2);
        let locked = post_empty(&s, &format!("/api/users/{frank_id}/lock"), &admin)
            .await
            .expect(200)
            .body;
        assert_eq!(keys(&locked), full_keys(), "{l}");
        assert_eq!(locked["is_locked"], true, "{l}: {locked}");
        assert_eq!(locked["locked_by"], admin_uid.as_str(), "{l}");
        let locked_time = ts(&locked, "locked_time");
        assert!(
            before <= locked_time && locked_time <= OffsetDateTime::now_utc() + Duration::seconds(2),
            "{l}: locked_time is now"
        );
        assert_eq!(user(&s, &frank_id).await, locked, "{l}: stored as answered");
        assert_eq!(usernames(&search(&s, "is_locked=true").await), vec!["frank"], "{l}");

        assert_dead(&s, &frank_token, "locked").await;
        login(&s, "frank", PASSWORD).await.expect_problem(403, "E005002");
        login(&s, "frank", "Wrong-Password-1")
            .await
            .expect_problem(401, "E005001");
        // Locking again is harmless
        post_empty(&s, &format!("/api/users/{frank_id}/lock"), &admin)
            .await
            .expect(200);

        let unlocked = post_empty(&s, &format!("/api/users/{frank_id}/unlock"), &admin)
            .await
            .expect(200)
            .body;
        assert_eq!(unlocked["is_locked"], false, "{l}");
        let token = token_of(&login(&s, "frank", PASSWORD).await.expect(201));
        assert_alive(&s, &token, "after unlock").await;
        assert_dead(&s, &frank_token, "a session ended by the lock stays ended").await;

        // Lock by uuid works the same
        let uuid = str_of(&frank, "uuid");
        post_empty(&s, &format!("/api/users/{uuid}/lock"), &admin)
            .await
            .expect(200);
        assert_dead(&s, &token, "locked by uuid").await;
        post_empty(&s, &format!("/api/users/{uuid}/unlock"), &admin)
            .await
            .expect(200);

        // The super-user cannot lock themselves, by any route
        post_empty(&s, &format!("/api/users/{admin_uid}/lock"), &admin)
            .await
            .expect_problem(400, "E008001");
        s.patch("/api/users/me", &admin, json!({"is_locked": true}))
            .await
            .expect_problem(400, "E008001");
        assert_eq!(user(&s, &admin_uid).await["is_locked"], false, "{l}");
        assert_alive(&s, &admin, "admin after refused self-lock").await;

        // Unknown and malformed ids
        post_empty(&s, &format!("/api/users/{}/lock", Uuid::new_v4()), &admin)
            .await
            .expect_problem(404, "not_found");
        post_empty(&s, "/api/users/nope/lock", &admin)
            .await
            .expect_problem(400, "E001100");
        // A lock at creation also blocks login
        s.create_user(json!({"username": "born-locked", "password": PASSWORD, "is_locked": true}))
            .await;
        login(&s, "born-locked", PASSWORD).await.expect_problem(403, "E005002");
    }
}

// ---------------------------------------------------------------------------------------------
// 9. Delete
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn deleting_a_user_removes_it_and_its_sessions() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let admin = s.admin_token.clone();
        let admin_uid = admin_id(&s).await;
        let (hank, hank_token) = s.user_with_session("hank", PASSWORD).await;
        let hank_id = str_of(&hank, "user_id").to_owned();
        let (ivy, ivy_token) = s.user_with_session("ivy", PASSWORD).await;
        let ivy_id = str_of(&ivy, "user_id").to_owned();

        // A regular user cannot delete anyone, themselves included
        for target in [&hank_id, &ivy_id, &Uuid::new_v4().to_string()] {
            let r = s.delete(&format!("/api/users/{target}"), &ivy_token).await;
            assert_eq!(r.status.as_u16(), 403, "{l}: {}", r.body);
            assert_eq!(r.code(), "E005005", "{l}");
        }
        user(&s, &hank_id).await;
        assert_alive(&s, &ivy_token, "refused delete").await;

        // The super-user cannot delete themselves
        s.delete(&format!("/api/users/{admin_uid}"), &admin)
            .await
            .expect_problem(400, "E008001");
        assert_alive(&s, &admin, "refused self-delete").await;

        let before = total(&search(&s, "").await);
        let r = s.delete(&format!("/api/users/{hank_id}"), &admin).await.expect(204);
        assert_eq!(r.body, Value::Null, "{l}: 204 has no body");
        s.get(&format!("/api/users/{hank_id}"), &admin)
            .await
            .expect_problem(404, "not_found");
        assert_eq!(total(&search(&s, "").await), before - 1, "{l}");
        assert_eq!(count_username(&s, "hank").await, 0, "{l}");
        assert_dead(&s, &hank_token, "deleted user").await;
        login(&s, "hank", PASSWORD).await.expect_problem(401, "E005001");
        s.delete(&format!("/api/users/{hank_id}"), &admin)
            .await
            .expect_problem(404, "not_found");

        // By uuid; and the name is free again
        let ivy_uuid = str_of(&ivy, "uuid");
        s.delete(&format!("/api/users/{ivy_uuid}"), &admin).await.expect(204);
        assert_dead(&s, &ivy_token, "deleted by uuid").await;
        s.delete(&format!("/api/users/{ivy_id}"), &admin)
            .await
            .expect_problem(404, "not_found");
        s.delete("/api/users/not-an-id", &admin)
            .await
            .expect_problem(400, "E001100");
        let again = s.create_user(json!({"username": "hank", "password": PASSWORD})).await;
        assert_ne!(again["user_id"], hank["user_id"], "{l}: a new user, a new id");
        login(&s, "hank", PASSWORD).await.expect(201);
    }
}

// ---------------------------------------------------------------------------------------------
// 10. Passwords
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn password_changes_follow_the_policy_and_end_other_sessions() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let admin = s.admin_token.clone();
        let (jay, t1) = s.user_with_session("jay", PASSWORD).await;
        let jay_id = str_of(&jay, "user_id").to_owned();
        let t2 = s.login("jay", PASSWORD).await;
        let change = |old: &str, new: &str| json!({"old_password": old, "new_password": new});

        s.put("/api/users/me/password", &t1, change("Wrong-Password-1", PASSWORD_2))
            .await
            .expect_problem(403, "E005001");
        s.put("/api/users/me/password", &t1, change(PASSWORD, "short"))
            .await
            .expect_problem(400, "E003002");
        s.put("/api/users/me/password", &t1, change(PASSWORD, "my-qwerty-pass"))
            .await
            .expect_problem(400, "E003001");
        s.put("/api/users/me/password", &t1, change(PASSWORD, &"p".repeat(257)))
            .await
            .expect_problem(400, "E003003");
        s.put("/api/users/me/password", &t1, change(PASSWORD, PASSWORD))
            .await
            .expect_problem(400, "E008002");
        s.put(
            "/api/users/me/password",
            &t1,
            json!({"old_password": PASSWORD, "new_password": PASSWORD_2, "user_id": jay_id}),
        )
        .await
        .expect_problem(400, "unknown_field");
        s.put("/api/users/me/password", &t1, json!({"new_password": PASSWORD_2}))
            .await
            .expect_problem(400, "E008003");
        // Refusals changed nothing
        assert_alive(&s, &t1, "refused changes").await;
        assert_alive(&s, &t2, "refused changes").await;
        let before = user(&s, &jay_id).await;

        let r = s
            .put("/api/users/me/password", &t1, change(PASSWORD, PASSWORD_2))
            .await
            .expect(204);
        assert_eq!(r.body, Value::Null, "{l}");
        assert_alive(&s, &t1, "the session the change came from").await;
        assert_dead(&s, &t2, "another session of the same user").await;
        let after = user(&s, &jay_id).await;
        assert!(
            ts(&after, "password_last_set") > ts(&before, "password_last_set"),
            "{l}: password_last_set moves"
        );
        assert_eq!(
            ts(&after, "password_expiry") - ts(&after, "password_last_set"),
            Duration::days(730),
            "{l}"
        );
        login(&s, "jay", PASSWORD).await.expect_problem(401, "E005001");
        let t3 = token_of(&login(&s, "jay", PASSWORD_2).await.expect(201));

        // Set by the super-user: no old password; every session of the user ends
        let (_, kim_token) = s.user_with_session("kim", PASSWORD).await;
        s.put(
            &format!("/api/users/{jay_id}/password"),
            &kim_token,
            json!({"new_password": PASSWORD_3}),
        )
        .await
        .expect_problem(403, "E005005");
        s.put(
            &format!("/api/users/{jay_id}/password"),
            &admin,
            json!({"new_password": "short", "password_must_change": true}),
        )
        .await
        .expect_problem(400, "E003002");
        s.put(
            &format!("/api/users/{jay_id}/password"),
            &admin,
            json!({"new_password": PASSWORD_3, "password_expiry_days": 0}),
        )
        .await
        .expect_problem(400, "E008002");
        let admin_uid = admin_id(&s).await;
        s.put(
            &format!("/api/users/{admin_uid}/password"),
            &admin,
            json!({"new_password": PASSWORD_3}),
        )
        .await
        .expect_problem(400, "E008001");
        s.put(
            &format!("/api/users/{}/password", Uuid::new_v4()),
            &admin,
            json!({"new_password": PASSWORD_3}),
        )
        .await
        .expect_problem(404, "not_found");
        assert_alive(&s, &t1, "refused set").await;

        s.put(
            &format!("/api/users/{jay_id}/password"),
            &admin,
            json!({"new_password": PASSWORD_3, "password_must_change": true}),
        )
        .await
        .expect(204);
        assert_dead(&s, &t1, "set by super-user").await;
        assert_dead(&s, &t3, "set by super-user").await;
        let u = user(&s, &jay_id).await;
        assert_eq!(u["password_must_change"], true, "{l}");
        assert_eq!(
            ts(&u, "password_expiry") - ts(&u, "password_last_set"),
            Duration::days(730),
            "{l}: the configured expiry by default"
        );
        login(&s, "jay", PASSWORD_3).await.expect_problem(403, "E003007");
        s.try_login(json!({"username": "jay", "password": PASSWORD_3, "new_password": PASSWORD_3}))
            .await
            .expect_problem(400, "E008002");
        s.try_login(json!({"username": "jay", "password": PASSWORD_3, "new_password": "short"}))
            .await
            .expect_problem(400, "E003002");
        let r = s
            .try_login(json!({"username": "jay", "password": PASSWORD_3, "new_password": PASSWORD}))
            .await
            .expect(201);
        assert_alive(&s, &token_of(&r), "login with new_password").await;
        assert_eq!(user(&s, &jay_id).await["password_must_change"], false, "{l}");
        login(&s, "jay", PASSWORD).await.expect(201);

        // password_expiry_days is honoured
        s.put(
            &format!("/api/users/{jay_id}/password"),
            &admin,
            json!({"new_password": PASSWORD_2, "password_expiry_days": 10}),
        )
        .await
        .expect(204);
        let u = user(&s, &jay_id).await;
        assert_eq!(
            ts(&u, "password_expiry") - ts(&u, "password_last_set"),
            Duration::days(10),
            "{l}"
        );
        assert_eq!(u["password_must_change"], false, "{l}: unchanged when absent");
        // Within the warning window: login succeeds with W003005
        let r = login(&s, "jay", PASSWORD_2).await.expect(201);
        assert_eq!(r.body["warnings"], json!(["W003005"]), "{l}: {}", r.body);
    }
}

// ---------------------------------------------------------------------------------------------
// 11. Search
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn search_filters_pages_and_orders() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let admin = s.admin_token.clone();
        s.create_user(
            json!({"username": "alice", "email": "Alice@Example.org", "first_name": "Alice", "last_name": "Liddell"}),
        )
        .await;
        s.create_user(json!({"username": "bob", "email": "bob@example.org", "display_name": "Bobby Tables"}))
            .await;
        s.create_user(json!({"username": "carol", "is_locked": true, "first_name": "Carol", "middle_name": "Ann"}))
            .await;
        s.create_user(json!({"username": "dave", "sign_up_status": "before_confirmation", "last_name": "Davidson"}))
            .await;
        let eve = s.create_user(json!({"username": "eve", "first_name": "Eve"})).await;
        post_empty(&s, &format!("/api/users/{}/reject", str_of(&eve, "user_id")), &admin)
            .await
            .expect(200);

        let all = search(&s, "").await;
        assert_eq!(total(&all), 6, "{l}: five users and the admin: {all}");
        assert_eq!(
            usernames(&all),
            vec!["admin", "alice", "bob", "carol", "dave", "eve"],
            "{l}: ordered by username by default"
        );
        for row in all["result"].as_array().expect("result") {
            assert_eq!(keys(row), full_keys(), "{l}: rows carry every super-user field");
        }

        let cases: &[(&str, &[&str])] = &[
            ("username=ALICE", &["alice"]),
            ("username=ali", &[]),
            ("email=alice%40example.ORG", &["alice"]),
            ("email=bob%40example", &[]),
            ("name=lidd", &["alice"]),
            ("name=TABLE", &["bob"]),
            ("name=ann", &["carol"]),
            ("name=a", &["alice", "bob", "carol", "dave"]),
            ("name=%25", &[]),
            ("name=_", &[]),
            ("name=", &["admin", "alice", "bob", "carol", "dave", "eve"]),
            ("approval_status=rejected", &["eve"]),
            ("approval_status=before_decision", &[]),
            ("approval_status=approved", &["admin", "alice", "bob", "carol", "dave"]),
            ("sign_up_status=before_confirmation", &["dave"]),
            ("is_locked=true", &["carol"]),
            ("is_locked=false&name=a", &["alice", "bob", "dave"]),
            (
                "is_locked=false&approval_status=approved&sign_up_status=final",
                &["admin", "alice", "bob"],
            ),
        ];
        for (query, expected) in cases {
            let page = search(&s, query).await;
            assert_eq!(usernames(&page), *expected, "{l}: {query}");
            assert_eq!(total(&page), expected.len() as i64, "{l}: {query}");
        }

        // Paging, with creation order unlike name order
        let pager = ["pg-m", "pg-c", "pg-x", "pg-a", "pg-q", "pg-f", "pg-t"];
        for name in pager {
            s.create_user(json!({"username": name, "last_name": "Pager"})).await;
        }
        let mut sorted = pager.to_vec();
        sorted.sort();
        let p1 = search(&s, "name=pager&page_size=3").await;
        let meta = |p: &Value| {
            json!([
                p["total"],
                p["num_pages"],
                p["page_size"],
                p["cur_page"],
                p["has_next_page"],
                p["has_prev_page"],
                p["next_page"],
                p["prev_page"]
            ])
        };
        assert_eq!(meta(&p1), json!([7, 3, 3, 1, true, false, 2, null]), "{l}: {p1}");
        assert_eq!(usernames(&p1), &sorted[0..3], "{l}");
        let p2 = search(&s, "name=pager&page_size=3&page=2").await;
        assert_eq!(meta(&p2), json!([7, 3, 3, 2, true, true, 3, 1]), "{l}: {p2}");
        assert_eq!(usernames(&p2), &sorted[3..6], "{l}");
        let p3 = search(&s, "name=pager&page_size=3&page=3").await;
        assert_eq!(meta(&p3), json!([7, 3, 3, 3, false, true, null, 2]), "{l}: {p3}");
        assert_eq!(usernames(&p3), &sorted[6..], "{l}");
        let p4 = search(&s, "name=pager&page_size=3&page=4").await;
        assert_eq!(meta(&p4), json!([7, 3, 3, 4, false, true, null, 3]), "{l}: {p4}");
        assert!(usernames(&p4).is_empty(), "{l}");
        let p0 = search(&s, "name=pager&page_size=3&page=0").await;
        assert_eq!(p0["cur_page"], 1, "{l}: pages start at 1");
        let far = search(&s, "name=pager&page=1000000").await;
        assert_eq!(
            meta(&far),
            json!([7, 1, 50, 1000000, false, true, null, 999999]),
            "{l}: {far}"
        );
        let none = search(&s, "name=nobody-has-this").await;
        assert_eq!(
            meta(&none),
            json!([0, 0, 50, 1, false, false, null, null]),
            "{l}: {none}"
        );

        // Ordering
        let asc = search(&s, "name=pager&order_by=sign_up_time").await;
        assert_eq!(usernames(&asc), pager, "{l}: oldest first");
        let desc = search(&s, "name=pager&order_by=-sign_up_time").await;
        let mut reversed = pager.to_vec();
        reversed.reverse();
        assert_eq!(usernames(&desc), reversed, "{l}: newest first");
        let by_name = search(&s, "name=pager&order_by=username").await;
        assert_eq!(usernames(&by_name), sorted, "{l}");

        // page_size: default 50, at most 100
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in (0..101).collect::<Vec<_>>().chunks(17) {
            for i in chunk {
                let req = create_req(
                    &s,
                    &admin,
                    &json!({"username": format!("bulk-{i:03}"), "first_name": "Bulk"}),
                );
                tasks.spawn(async move { req.send().await.map(|r| r.status().as_u16()) });
            }
            while let Some(done) = tasks.join_next().await {
                let status = done.expect("task").expect("request");
                assert_eq!(status, 201, "{l}: concurrent create");
            }
        }
        let capped = search(&s, "name=bulk&page_size=500").await;
        assert_eq!(total(&capped), 101, "{l}");
        assert_eq!(capped["page_size"], 100, "{l}");
        assert_eq!(capped["num_pages"], 2, "{l}");
        assert_eq!(usernames(&capped).len(), 100, "{l}");
        let default = search(&s, "name=bulk").await;
        assert_eq!(default["page_size"], 50, "{l}");
        assert_eq!(usernames(&default).len(), 50, "{l}");
        assert_eq!(search(&s, "name=bulk&page_size=0").await["page_size"], 50, "{l}");
        assert_eq!(search(&s, "name=bulk&page_size=-3").await["page_size"], 50, "{l}");
        let last = search(&s, "name=bulk&page_size=100&page=2").await;
        assert_eq!(usernames(&last), vec!["bulk-100"], "{l}");

        // Bad queries and callers
        for query in [
            "bogus=1",
            "user_id=musr0",
            "order_by=email",
            "order_by=-username",
            "is_locked=maybe",
            "approval_status=pending",
            "page=first",
        ] {
            let r = s.get(&format!("/api/users?{query}"), &admin).await;
            assert_eq!(r.status.as_u16(), 400, "{l}: {query}: {}", r.body);
            // Unknown parameters are named as such; bad values of known ones are invalid input.
            let want = if query.starts_with("bogus") || query.starts_with("user_id") {
                "unknown_field"
            } else {
                "E008002"
            };
            assert_eq!(r.code(), want, "{l}: {query}");
            assert_problem_shape(&s, &r);
        }
        let r = s.get("/api/users?order_by=email", &admin).await;
        assert_eq!(error_field(&r), Some("order_by"), "{l}: {}", r.body);
        let (_, regular) = s.user_with_session("searcher", PASSWORD).await;
        s.get("/api/users", &regular).await.expect_problem(403, "E005005");
        s.get("/api/users?username=alice", &regular)
            .await
            .expect_problem(403, "E005005");
        let r = s.call(Method::GET, "/api/users", None, None).await;
        assert_eq!(r.status.as_u16(), 401, "{l}");
    }
}

// ---------------------------------------------------------------------------------------------
// 12. Audit trail
// ---------------------------------------------------------------------------------------------

/// Checks the record under `cid`: one record, with these action, actor and target, success,
/// from 127.0.0.1, and no secret anywhere in it.
async fn assert_audited(s: &Server, cid: &str, action: &str, actor: &str, target: &str, secrets: &[&str]) -> Value {
    let l = s.label;
    let r = only_record(s, cid).await;
    assert_eq!(r["action"], action, "{l}: {r}");
    assert_eq!(r["actor"], actor, "{l}: {action} actor");
    assert_eq!(r["target"], target, "{l}: {action} target");
    assert_eq!(r["outcome"], "success", "{l}: {action}");
    assert_eq!(r["reason"], Value::Null, "{l}: {action}");
    assert_eq!(r["cid"], cid, "{l}: {action}");
    assert_eq!(r["remote_addr"], "127.0.0.1", "{l}: {action}");
    assert!(r["details"].is_object(), "{l}: {action} details: {r}");
    let text = r.to_string();
    for secret in secrets {
        assert!(!text.contains(secret), "{l}: {action} record holds a secret: {text}");
    }
    // The filters find it too
    let by_target = s
        .audit(&format!(
            "action={action}&target={target}&actor={actor}&outcome=success"
        ))
        .await;
    assert!(
        by_target["result"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["cid"] == cid)),
        "{l}: {action} found by action/target/actor"
    );
    r
}

#[tokio::test]
async fn every_change_writes_one_audit_record_with_the_request_id() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let admin = s.admin_token.clone();
        let admin_uid = admin_id(&s).await;
        let secrets = [PASSWORD, PASSWORD_2, PASSWORD_3];

        let cid = new_cid();
        let created = call_cid(
            &s,
            Method::POST,
            "/api/users",
            &admin,
            Some(json!({"username": "audited", "password": PASSWORD, "email": "a@example.org"})),
            &cid,
        )
        .await
        .expect(201)
        .body;
        let id = str_of(&created, "user_id").to_owned();
        let r = assert_audited(&s, &cid, "user.create", &admin_uid, &id, &secrets).await;
        let fields = r["details"]["fields"].as_array().expect("fields");
        assert!(fields.contains(&json!("password")), "{l}: names of keys only: {r}");
        assert!(fields.contains(&json!("email")), "{l}");
        assert_eq!(r["details"]["password_generated"], false, "{l}");
        assert!(!r.to_string().contains("a@example.org"), "{l}: no values in details");

        let cid = new_cid();
        call_cid(
            &s,
            Method::PATCH,
            &format!("/api/users/{id}"),
            &admin,
            Some(json!({"display_name": "Audited One", "email": "a@example.org"})),
            &cid,
        )
        .await
        .expect(200);
        let r = assert_audited(&s, &cid, "user.update", &admin_uid, &id, &secrets).await;
        assert_eq!(r["details"]["changed"], json!(["display_name"]), "{l}: {r}");
        assert!(!r.to_string().contains("Audited One"), "{l}: no values in details");

        let token = s.login("audited", PASSWORD).await;
        for (action, path) in [
            ("user.lock", format!("/api/users/{id}/lock")),
            ("user.unlock", format!("/api/users/{id}/unlock")),
            ("user.reject", format!("/api/users/{id}/reject")),
            ("user.approve", format!("/api/users/{id}/approve")),
        ] {
            let cid = new_cid();
            call_cid(&s, Method::POST, &path, &admin, None, &cid).await.expect(200);
            assert_audited(&s, &cid, action, &admin_uid, &id, &secrets).await;
        }
        // By uuid, the target is still the user_id
        let cid = new_cid();
        call_cid(
            &s,
            Method::POST,
            &format!("/api/users/{}/lock", str_of(&created, "uuid")),
            &admin,
            None,
            &cid,
        )
        .await
        .expect(200);
        assert_audited(&s, &cid, "user.lock", &admin_uid, &id, &secrets).await;
        s.call(Method::POST, &format!("/api/users/{id}/unlock"), Some(&admin), None)
            .await
            .expect(200);
        assert_dead(&s, &token, "locked during the audit test").await;

        let token = s.login("audited", PASSWORD).await;
        let cid = new_cid();
        call_cid(
            &s,
            Method::PUT,
            "/api/users/me/password",
            &token,
            Some(json!({"old_password": PASSWORD, "new_password": PASSWORD_2})),
            &cid,
        )
        .await
        .expect(204);
        assert_audited(&s, &cid, "user.change_password", &id, &id, &secrets).await;

        let cid = new_cid();
        call_cid(
            &s,
            Method::PUT,
            &format!("/api/users/{id}/password"),
            &admin,
            Some(json!({"new_password": PASSWORD_3, "password_must_change": true})),
            &cid,
        )
        .await
        .expect(204);
        assert_audited(&s, &cid, "user.set_password", &admin_uid, &id, &secrets).await;

        let cid = new_cid();
        call_cid(&s, Method::DELETE, &format!("/api/users/{id}"), &admin, None, &cid)
            .await
            .expect(204);
        assert_audited(&s, &cid, "user.delete", &admin_uid, &id, &secrets).await;

        // A refused change is recorded as a failure with its reason, under its request id
        let cid = new_cid();
        call_cid(&s, Method::DELETE, &format!("/api/users/{id}"), &admin, None, &cid)
            .await
            .expect_problem(404, "not_found");
        let r = only_record(&s, &cid).await;
        assert_eq!(r["outcome"], "failure", "{l}: {r}");
        assert_eq!(r["reason"], "not_found", "{l}");
        assert_eq!(r["action"], "user.delete", "{l}");

        // Nothing in the whole log carries a password
        let log = s.audit("page_size=500").await;
        let text = log.to_string();
        for secret in [PASSWORD, PASSWORD_2, PASSWORD_3, ADMIN_PASSWORD] {
            assert!(!text.contains(secret), "{l}: the audit log holds a password");
        }
        // Audit is super-user only
        let (_, regular) = s.user_with_session("auditor", PASSWORD).await;
        s.get("/api/audit", &regular).await.expect_problem(403, "E005005");
    }
}

// ---------------------------------------------------------------------------------------------
// Regressions
// ---------------------------------------------------------------------------------------------

/// Regression: update used to name every invalid name field `name` (fixed in 82f33ca).
#[tokio::test]
async fn invalid_name_on_update_names_the_field() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let (_, token) = s.user_with_session("namer", PASSWORD).await;
        for field in ["display_name", "first_name", "middle_name", "last_name"] {
            // On create, the field is named
            let r = s
                .post(
                    "/api/users",
                    &s.admin_token,
                    json!({"username": "n2", field: "n".repeat(192)}),
                )
                .await
                .expect_problem(400, "E008002");
            assert_eq!(error_field(&r), Some(field), "{l}: create: {}", r.body);
            // On update, it should be too
            let r = s
                .patch("/api/users/me", &token, json!({field: "n".repeat(192)}))
                .await
                .expect_problem(400, "E008002");
            assert_eq!(error_field(&r), Some(field), "{l}: update: {}", r.body);
            assert!(str_of(&r.body, "detail").starts_with(field), "{l}: update: {}", r.body);
        }
    }
}

#[tokio::test]

async fn search_with_the_largest_page_answers_an_empty_page() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let r = s
            .request(Method::GET, "/api/users")
            .bearer_auth(&s.admin_token)
            .query(&[("page", i64::MAX)])
            .send()
            .await;
        let r = r.unwrap_or_else(|e| panic!("{l}: the server dropped the request: {e}"));
        assert_eq!(r.status().as_u16(), 200, "{l}");
        let page: Value = r.json().await.expect("json");
        assert_eq!(page["cur_page"], i64::MAX, "{l}: {page}");
        assert_eq!(page["has_next_page"], false, "{l}");
        assert_eq!(page["next_page"], Value::Null, "{l}");
        assert_eq!(page["prev_page"], i64::MAX - 1, "{l}");
        assert!(usernames(&page).is_empty(), "{l}");
        // The server is still answering
        assert_alive(&s, &s.admin_token, "after the largest page").await;
    }
}

#[tokio::test]

async fn refused_flag_actions_by_regular_users_are_audited() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let (regular, token) = s.user_with_session("mallory", PASSWORD).await;
        let regular_id = str_of(&regular, "user_id").to_owned();
        let target = s.create_user(json!({"username": "victim"})).await;
        let target_id = str_of(&target, "user_id").to_owned();
        for action in ["lock", "unlock", "approve", "reject"] {
            let cid = new_cid();
            call_cid(
                &s,
                Method::POST,
                &format!("/api/users/{target_id}/{action}"),
                &token,
                None,
                &cid,
            )
            .await
            .expect_problem(403, "E005005");
            // As for create, update, delete and set_password: the refusal is on record
            let page = s.audit(&format!("cid={cid}")).await;
            assert_eq!(total(&page), 1, "{l}: user.{action} refusal audited: {page}");
            let r = &page["result"][0];
            assert_eq!(r["action"], format!("user.{action}").as_str(), "{l}: {r}");
            assert_eq!(r["outcome"], "failure", "{l}");
            assert_eq!(r["reason"], "E005005", "{l}");
            assert_eq!(r["actor"], regular_id.as_str(), "{l}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 13. Username rules (RFC 8265, TR39 look-alikes)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn look_alike_and_invisible_usernames_are_refused_beside_existing_ones() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let token = s.admin_token.clone();
        let create = |name: &str| create_req(&s, &token, &json!({"username": name}));
        // "admin" exists (the bootstrap super-user). An accented name is a different name…
        let precomposed = s.create_user(json!({"username": "\u{e1}dmin"})).await;
        assert_eq!(str_of(&precomposed, "username"), "\u{e1}dmin", "{l}");
        // …but its decomposed spelling is the same one.
        refused(&s, create("a\u{301}dmin"), Some("a\u{301}dmin"), 409, Some("E001002")).await;
        for look_alike in [
            "\u{430}dmin",
            "\u{ff41}\u{ff44}\u{ff4d}\u{ff49}\u{ff4e}",
            "ADMIN",
            "adrnin",
        ] {
            let r = refused(&s, create(look_alike), None, 409, Some("E001002")).await;
            assert!(str_of(&r.body, "detail").contains("looks like"), "{l}: {}", r.body);
        }
        for invisible in [
            "admin\u{200b}",
            "ad\u{ad}min",
            "\u{202e}nimda",
            "ad\u{0}min",
            "ad\u{7f}min",
        ] {
            let r = refused(&s, create(invisible), None, 400, Some("E001001")).await;
            assert_eq!(error_field(&r), Some("username"), "{l}: {invisible:?}");
        }
        refused(&s, create("ad min"), None, 400, Some("E001004")).await;
        s.create_user(json!({"username": "stra\u{df}e"})).await;
        refused(&s, create("STRASSE"), Some("STRASSE"), 409, Some("E001002")).await;

        // Full-width input is stored in its ordinary form, case kept.
        let bob = s
            .create_user(json!({"username": "\u{ff22}\u{ff4f}\u{ff42}", "password": PASSWORD}))
            .await;
        assert_eq!(str_of(&bob, "username"), "Bob", "{l}");
        // A rename is held to the same rules, and changes nothing when refused.
        let id = str_of(&bob, "user_id").to_owned();
        let r = s
            .patch(&format!("/api/users/{id}"), &token, json!({"username": "\u{430}dmin"}))
            .await;
        assert_eq!((r.status.as_u16(), r.code()), (409, "E001002"), "{l}: {}", r.body);
        assert_eq!(str_of(&user(&s, &id).await, "username"), "Bob", "{l}");

        // Logins look names up the same way.
        login(&s, "\u{ff42}\u{ff4f}\u{ff42}", PASSWORD).await.expect(201);
        login(&s, "BOB", PASSWORD).await.expect(201);
        login(&s, "\u{ff21}\u{ff24}\u{ff2d}\u{ff29}\u{ff2e}", ADMIN_PASSWORD)
            .await
            .expect(201);
    }
}

// ---------------------------------------------------------------------------------------------
// 14. Super-users cannot shut themselves out
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn super_users_cannot_shut_themselves_out_through_their_own_record() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let token = s.admin_token.clone();
        let before = me(&s, &token).await.expect(200).body;
        for body in [
            json!({"sign_up_status": "before_confirmation"}),
            json!({"is_totp_enabled": true}),
            json!({"is_locked": true}),
            json!({"approval_status": "rejected"}),
        ] {
            let r = s.patch("/api/users/me", &token, body.clone()).await;
            assert_eq!(
                (r.status.as_u16(), r.code()),
                (400, "E008001"),
                "{l}: {body}: {}",
                r.body
            );
            assert_problem_shape(&s, &r);
        }
        assert_eq!(me(&s, &token).await.expect(200).body, before, "{l}: nothing changed");
        assert_alive(&s, &token, "after the refusals").await;
        login(&s, ADMIN, ADMIN_PASSWORD).await.expect(201);
        // What does not shut anyone out is still allowed.
        s.patch(
            "/api/users/me",
            &token,
            json!({"sign_up_status": "final", "is_totp_enabled": false}),
        )
        .await
        .expect(200);
        // Once a key is enrolled (a code from it was accepted), TOTP may be switched back on.
        let (key, step) = s.enrol_totp(&token, ADMIN_PASSWORD).await;
        s.patch("/api/users/me", &token, json!({"is_totp_enabled": false}))
            .await
            .expect(200);
        let r = s
            .patch("/api/users/me", &token, json!({"is_totp_enabled": true}))
            .await
            .expect(200);
        assert_eq!(r.body["is_totp_enabled"], json!(true), "{l}");
        s.try_login(
            json!({"username": ADMIN, "password": ADMIN_PASSWORD, "totp_code": common::totp_code(&key, step + 1)}),
        )
        .await
        .expect(201);
    }
}
