//! Mail end to end, through the real binary and a real SMTP server (aiosmtpd): the outbox and
//! its delivery (retries, an outage, failures retried), `muster mail test`, password resets
//! and invitations, with their refusals, on SQLite and PostgreSQL.

use crate::common;

use crate::common::smtp::{SmtpSink, header, link, python};
use crate::common::{Server, totp_code, totp_step_now};
use muster_store::testing::TestDb;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const PUBLIC: &str = "https://id.example.test";
const FROM: &str = "Muster <muster@example.test>";
const PW: &str = "Corr3ct-horse-battery";
const NEW_PW: &str = "N3w-staple-battery-horse";

fn mail_env(smtp: &str) -> Vec<(&'static str, String)> {
    vec![
        ("MUSTER_SMTP_URL", smtp.to_owned()),
        ("MUSTER_MAIL_FROM", FROM.to_owned()),
        ("MUSTER_PUBLIC_URL", format!("{PUBLIC}/")),
        ("MUSTER_MAIL_RETRY_BASE_SECS", "1".to_owned()),
    ]
}

async fn servers(env: &[(&'static str, String)]) -> Vec<Server> {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::all(&env).await
}

/// Polls the outbox until `pred` holds for its mails (30 s at most).
async fn wait_outbox(s: &Server, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mails = s.get("/api/mail", &s.admin_token).await.expect(200).body;
        let mails = mails.as_array().cloned().unwrap_or_default();
        if pred(&mails) {
            return mails;
        }
        assert!(Instant::now() < deadline, "{}: outbox never {what}: {mails:?}", s.label);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn request_reset(s: &Server, body: Value) -> common::Resp {
    s.call(Method::POST, "/api/password-reset", None, Some(body)).await
}

async fn complete_reset(s: &Server, body: Value) -> common::Resp {
    s.call(Method::POST, "/api/password-reset/complete", None, Some(body))
        .await
}

/// A user with a password and an address; returns its id and a session token.
async fn person(s: &Server, name: &str, email: &str) -> (String, String) {
    let u = s
        .create_user(json!({"username": name, "password": PW, "email": email}))
        .await;
    let token = s.login(name, PW).await;
    (u["user_id"].as_str().expect("user_id").to_owned(), token)
}

#[tokio::test]
async fn mail_test_sends_one_message_through_the_relay() {
    let Some(py) = python() else { return };
    let mut sink = SmtpSink::start(&py).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_muster"))
        .args(["mail", "test", "ops@example.test"])
        .env_clear()
        .env("MUSTER_SMTP_URL", sink.url())
        .env("MUSTER_MAIL_FROM", FROM)
        .env("MUSTER_PUBLIC_URL", PUBLIC)
        .output()
        .await
        .expect("muster mail test");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m = sink.wait_for("ops@example.test", "test message").await;
    let data = m["data"].as_str().unwrap_or_default();
    assert_eq!(header(data, "Subject").as_deref(), Some("muster: test message"));
    assert_eq!(header(data, "From").as_deref(), Some(FROM));
    assert!(data.contains(PUBLIC));
    sink.stop().await;

    // Nothing listening: the command fails and says so.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_muster"))
        .args(["mail", "test", "ops@example.test"])
        .env_clear()
        .env("MUSTER_SMTP_URL", format!("smtp://127.0.0.1:{}", sink.port))
        .output()
        .await
        .expect("muster mail test");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sending to ops@example.test"));
    // Without a relay there is nothing to test.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_muster"))
        .args(["mail", "test", "ops@example.test"])
        .env_clear()
        .output()
        .await
        .expect("muster mail test");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("MUSTER_SMTP_URL"));
}

/// The whole reset: request by username and by address, the mail (headers, link), the new
/// password (policy first), every session ended, the "password changed" mail, the audit; the
/// link is single-use, and a newer one kills the older.
#[tokio::test]
async fn a_password_reset_goes_by_mail_and_ends_every_session() {
    let Some(py) = python() else { return };
    let sink = SmtpSink::start(&py).await;
    for s in servers(&mail_env(&sink.url())).await {
        let l = s.label;
        let email = format!("ann-{l}@example.test");
        let (id, session) = person(&s, &format!("ann-{l}"), &email).await;
        let other_session = s.login(&format!("ann-{l}"), PW).await;

        request_reset(&s, json!({"username": format!("ann-{l}")}))
            .await
            .expect(202);
        let m = sink.wait_for(&email, "/password-reset?token=").await;
        let data = m["data"].as_str().unwrap_or_default();
        assert_eq!(header(data, "Subject").as_deref(), Some("Reset your password"), "{l}");
        assert_eq!(header(data, "From").as_deref(), Some(FROM), "{l}");
        assert_eq!(header(data, "To").as_deref(), Some(email.as_str()), "{l}");
        assert!(
            header(data, "Message-ID").is_some_and(|id| id.ends_with("@muster>")),
            "{l}"
        );
        assert!(
            data.contains("multipart/alternative") && data.contains("text/html"),
            "{l}"
        );
        let (first_link, first) = link(data, PUBLIC, "/password-reset");
        assert!(
            first.starts_with("mrt_") && first.len() >= 4 + 43,
            "{l}: 256-bit token: {first_link}"
        );

        // A second request (by address) mails a new link; the first stops working.
        request_reset(&s, json!({"email": email.to_uppercase()}))
            .await
            .expect(202);
        let mails = wait_outbox(&s, "sent twice", |m| {
            m.iter()
                .filter(|x| x["kind"] == "password_reset" && x["status"] == "sent")
                .count()
                == 2
        })
        .await;
        assert!(
            mails.iter().all(|m| m.get("sealed_message").is_none()),
            "{l}: no message in the API"
        );
        let second_data = sink
            .messages()
            .into_iter()
            .filter_map(|m| m["data"].as_str().map(str::to_owned))
            .filter(|d| d.contains("/password-reset?token=") && !d.contains(&first))
            .find(|d| header(d, "To").as_deref() == Some(email.as_str()))
            .expect("the second link");
        let (_, second) = link(&second_data, PUBLIC, "/password-reset");
        complete_reset(&s, json!({"token": first, "new_password": NEW_PW}))
            .await
            .expect_problem(400, "link_invalid");

        // The policy applies, and a refusal spends nothing.
        complete_reset(&s, json!({"token": second, "new_password": "short"}))
            .await
            .expect(400);
        complete_reset(&s, json!({"token": second, "new_password": NEW_PW}))
            .await
            .expect(204);
        // Every session ended; the new password works, the old does not.
        for t in [&session, &other_session] {
            s.get("/api/session", t).await.expect(401);
        }
        s.try_login(json!({"username": format!("ann-{l}"), "password": PW}))
            .await
            .expect(401);
        s.login(&format!("ann-{l}"), NEW_PW).await;
        // Used: the link is dead.
        complete_reset(&s, json!({"token": second, "new_password": "An0ther-fine-passw0rd"}))
            .await
            .expect_problem(400, "link_invalid");
        // The user is told.
        let told = sink.wait_for(&email, "was changed").await;
        assert_eq!(
            header(told["data"].as_str().unwrap_or_default(), "Subject").as_deref(),
            Some("Your password was changed")
        );
        // Audited at each step, never with the token.
        let audit = s.audit(&format!("target={id}")).await;
        let actions: Vec<&str> = audit["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["action"].as_str())
            .collect();
        assert!(actions.contains(&"user.password_reset_request"), "{l}: {actions:?}");
        assert!(actions.contains(&"user.password_reset"), "{l}: {actions:?}");
        assert!(!audit.to_string().contains(&second[4..]), "{l}: no token in the audit");
    }
}

/// An unknown name or address gets the same answer, no sooner; a locked user gets no link;
/// a request needs exactly one of username and email.
#[tokio::test]
async fn a_reset_request_tells_nothing_about_who_exists() {
    let Some(py) = python() else { return };
    let sink = SmtpSink::start(&py).await;
    for s in servers(&mail_env(&sink.url())).await {
        let l = s.label;
        let (_, _) = person(&s, &format!("bea-{l}"), &format!("bea-{l}@example.test")).await;
        let (locked_id, _) = person(&s, &format!("lou-{l}"), &format!("lou-{l}@example.test")).await;
        s.post(&format!("/api/users/{locked_id}/lock"), &s.admin_token, json!({}))
            .await
            .expect(200);

        let mut answers = Vec::new();
        for body in [
            json!({"username": format!("bea-{l}")}),
            json!({"username": format!("nobody-{l}")}),
            json!({"email": format!("nobody-{l}@example.test")}),
            json!({"username": format!("lou-{l}")}),
        ] {
            let started = Instant::now();
            let r = request_reset(&s, body).await.expect(202);
            // Everyone waits the same floor: the work behind it does not show.
            assert!(started.elapsed() >= Duration::from_millis(300), "{l}");
            answers.push((r.body.clone(), r.headers.get("content-length").cloned()));
        }
        assert!(
            answers.windows(2).all(|w| w[0] == w[1]),
            "{l}: identical answers: {answers:?}"
        );
        let mails = wait_outbox(&s, "with bea's link", |m| {
            m.iter().any(|x| x["recipient"] == format!("bea-{l}@example.test"))
        })
        .await;
        assert_eq!(mails.len(), 1, "{l}: only bea's link: {mails:?}");

        request_reset(&s, json!({"username": "x", "email": "x@example.test"}))
            .await
            .expect(400);
        request_reset(&s, json!({})).await.expect(400);
        request_reset(&s, json!({"username": ""})).await.expect(400);
    }
}

/// Requests are limited per name and per client address; a TOTP user needs the code.
#[tokio::test]
async fn resets_are_throttled_and_need_the_totp_code() {
    let Some(py) = python() else { return };
    let sink = SmtpSink::start(&py).await;
    let mut env = mail_env(&sink.url());
    env.push(("MUSTER_PASSWORD_RESET_PER_ACCOUNT", "1".into()));
    env.push(("MUSTER_PASSWORD_RESET_PER_ADDRESS", "4".into()));
    for s in servers(&env).await {
        let l = s.label;
        let name = format!("tia-{l}");
        let email = format!("tia-{l}@example.test");
        let (_, session) = person(&s, &name, &email).await;
        let (key, step) = s.enrol_totp(&session, PW).await;

        request_reset(&s, json!({"username": name})).await.expect(202);
        let m = sink.wait_for(&email, "/password-reset?token=").await;
        let (_, token) = link(m["data"].as_str().unwrap_or_default(), PUBLIC, "/password-reset");
        // Per name: the second request is answered alike, but mails nothing.
        request_reset(&s, json!({"username": name})).await.expect(202);
        // Per address: past four, refused.
        request_reset(&s, json!({"username": format!("x1-{l}")}))
            .await
            .expect(202);
        request_reset(&s, json!({"username": format!("x2-{l}")}))
            .await
            .expect(202);
        request_reset(&s, json!({"username": format!("x3-{l}")}))
            .await
            .expect_problem(429, "throttled");
        let mails = s.get("/api/mail?status=pending", &s.admin_token).await.expect(200).body;
        let sent = s.get("/api/mail?status=sent", &s.admin_token).await.expect(200).body;
        let resets = [mails, sent]
            .iter()
            .flat_map(|v| v.as_array().cloned().unwrap_or_default())
            .filter(|m| m["kind"] == "password_reset")
            .count();
        assert_eq!(resets, 1, "{l}: one link for tia");

        // TOTP on: the code is required, a wrong one refused, the right one accepted.
        complete_reset(&s, json!({"token": token, "new_password": NEW_PW}))
            .await
            .expect_problem(401, "E005008");
        complete_reset(
            &s,
            json!({"token": token, "new_password": NEW_PW, "totp_code": "000000"}),
        )
        .await
        .expect_problem(401, "E005001");
        let code = totp_code(&key, (step + 1).max(totp_step_now()));
        complete_reset(&s, json!({"token": token, "new_password": NEW_PW, "totp_code": code}))
            .await
            .expect(204);
        s.get("/api/session", &session).await.expect(401);
    }
}

/// Expired links are refused like used ones, and the refusal is audited.
#[tokio::test]
async fn an_expired_reset_link_is_refused() {
    let Some(py) = python() else { return };
    let sink = SmtpSink::start(&py).await;
    for s in servers(&mail_env(&sink.url())).await {
        let l = s.label;
        let email = format!("eve-{l}@example.test");
        let (id, _) = person(&s, &format!("eve-{l}"), &email).await;
        request_reset(&s, json!({"email": email})).await.expect(202);
        let m = sink.wait_for(&email, "/password-reset?token=").await;
        let (_, token) = link(m["data"].as_str().unwrap_or_default(), PUBLIC, "/password-reset");
        // Thirty minutes pass (the API has no way to age a link).
        common::db_exec(&s, "UPDATE action_tokens SET expires_at = created_at").await;
        complete_reset(&s, json!({"token": token, "new_password": NEW_PW}))
            .await
            .expect_problem(400, "link_invalid");
        s.login(&format!("eve-{l}"), PW).await;
        let audit = s
            .audit(&format!("target={id}&action=user.password_reset&outcome=failure"))
            .await;
        assert_eq!(audit["total"], 1, "{l}: {audit}");
        complete_reset(&s, json!({"token": "mrt_nonsense", "new_password": NEW_PW}))
            .await
            .expect_problem(400, "link_invalid");
    }
}

/// With the relay down, mail waits and is retried with back-off; when it comes up, each mail
/// is delivered once.
#[tokio::test]
async fn mail_queued_during_an_smtp_outage_is_delivered_once_when_it_returns() {
    let Some(py) = python() else { return };
    for db in TestDb::all().await {
        // A port with nothing on it (yet).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let env = mail_env(&format!("smtp://127.0.0.1:{port}"));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let s = Server::start(db, &env).await;
        let l = s.label;
        let email = format!("ola-{l}@example.test");
        person(&s, &format!("ola-{l}"), &email).await;
        request_reset(&s, json!({"username": format!("ola-{l}")}))
            .await
            .expect(202);
        let failed = wait_outbox(&s, "retried", |m| {
            m.iter()
                .any(|x| x["attempts"].as_i64() >= Some(2) && x["status"] == "pending")
        })
        .await;
        assert!(
            failed[0]["last_error"].as_str().is_some_and(|e| !e.is_empty()),
            "{l}: {failed:?}"
        );

        let sink = SmtpSink::start_with(&py, port, 0).await;
        sink.wait_for(&email, "/password-reset?token=").await;
        wait_outbox(&s, "sent", |m| m.iter().all(|x| x["status"] == "sent")).await;
        assert_eq!(sink.messages().len(), 1, "{l}: delivered once");
    }
}

/// A permanent refusal marks the mail failed, visible with the server's answer; a super-user
/// queues it again and it goes.
#[tokio::test]
async fn a_refused_mail_is_failed_visible_and_retryable() {
    let Some(py) = python() else { return };
    let sink = SmtpSink::start_with(&py, 0, 1).await;
    for db in TestDb::all().await.into_iter().take(1) {
        let env = mail_env(&sink.url());
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let s = Server::start(db, &env).await;
        let email = "rex@example.test";
        let (_, user_token) = person(&s, "rex", email).await;
        request_reset(&s, json!({"username": "rex"})).await.expect(202);
        let mails = wait_outbox(&s, "failed", |m| m.iter().any(|x| x["status"] == "failed")).await;
        assert!(
            mails[0]["last_error"].as_str().is_some_and(|e| e.contains("550")),
            "{mails:?}"
        );
        let id = mails[0]["id"].as_str().expect("id").to_owned();
        // Only a super-user sees or retries the outbox.
        s.get("/api/mail", &user_token).await.expect(403);
        s.post(&format!("/api/mail/{id}/retry"), &user_token, json!({}))
            .await
            .expect(403);
        s.get("/api/mail?status=lost", &s.admin_token).await.expect(400);
        s.post(&format!("/api/mail/{id}/retry"), &s.admin_token, json!({}))
            .await
            .expect(202);
        sink.wait_for(email, "/password-reset?token=").await;
        wait_outbox(&s, "sent", |m| m.iter().all(|x| x["status"] == "sent")).await;
        // A mail that is not failed cannot be retried.
        s.post(&format!("/api/mail/{id}/retry"), &s.admin_token, json!({}))
            .await
            .expect(404);
    }
}

async fn accept(s: &Server, token: &str, password: &str) -> common::Resp {
    s.call(
        Method::POST,
        "/api/invitation/accept",
        None,
        Some(json!({"token": token, "password": password})),
    )
    .await
}

/// A user created over the API without a password but with an address is mailed a link; using
/// it sets the password (policy first) and logs in; it works once; a new invitation kills the
/// older link; only a super-user issues one.
#[tokio::test]
async fn a_user_made_without_a_password_is_invited_and_the_link_logs_them_in() {
    let Some(py) = python() else { return };
    let sink = SmtpSink::start(&py).await;
    for s in servers(&mail_env(&sink.url())).await {
        let l = s.label;
        let email = format!("ivy-{l}@example.test");
        let ivy = s
            .create_user(json!({"username": format!("ivy-{l}"), "email": email}))
            .await;
        let id = ivy["user_id"].as_str().expect("user_id").to_owned();
        let m = sink.wait_for(&email, "/invitation?token=").await;
        let data = m["data"].as_str().unwrap_or_default();
        assert_eq!(header(data, "Subject").as_deref(), Some("Your new account"), "{l}");
        let (_, token) = link(data, PUBLIC, "/invitation");
        assert!(token.starts_with("mit_") && token.len() >= 4 + 43, "{l}: {token}");
        // Delivered: there is no pending link to read.
        wait_outbox(&s, "sent", |m| m.iter().all(|x| x["status"] == "sent")).await;
        s.get(&format!("/api/users/{id}/invitation"), &s.admin_token)
            .await
            .expect(404);

        accept(&s, &token, "short").await.expect(400);
        let logged_in = accept(&s, &token, PW).await.expect(201);
        let session = logged_in.body["token"].as_str().expect("session token");
        let me = s.get("/api/session", session).await.expect(200);
        assert_eq!(me.body["user_id"], id.as_str(), "{l}");
        accept(&s, &token, PW).await.expect_problem(400, "link_invalid");
        s.login(&format!("ivy-{l}"), PW).await;
        let audit = s
            .audit(&format!("target={id}&action=user.invitation_accept&outcome=success"))
            .await;
        assert_eq!(audit["total"], 1, "{l}: {audit}");
        assert_eq!(audit["result"][0]["details"]["email_verified"], true, "{l}");
        let created = s.audit(&format!("target={id}&action=user.create")).await;
        assert_eq!(created["result"][0]["details"]["invited"], true, "{l}: {created}");

        // A new invitation: the first link dies, the second works.
        let email2 = format!("ian-{l}@example.test");
        let ian = s
            .create_user(json!({"username": format!("ian-{l}"), "email": email2}))
            .await;
        let ian_id = ian["user_id"].as_str().expect("user_id").to_owned();
        let first = sink.wait_for(&email2, "/invitation?token=").await;
        let (_, first) = link(first["data"].as_str().unwrap_or_default(), PUBLIC, "/invitation");
        s.post(&format!("/api/users/{ian_id}/invitation"), session, json!({}))
            .await
            .expect(403);
        let issued = s
            .post(&format!("/api/users/{ian_id}/invitation"), &s.admin_token, json!({}))
            .await
            .expect(202);
        assert_eq!(issued.body["email"], email2.as_str(), "{l}");
        let second = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let found = sink.messages().into_iter().find_map(|m| {
                    let d = m["data"].as_str()?.to_owned();
                    (header(&d, "To").as_deref() == Some(email2.as_str()) && !d.contains(&first[4..]))
                        .then(|| link(&d, PUBLIC, "/invitation").1)
                });
                if let Some(t) = found {
                    return t;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the second invitation");
        accept(&s, &first, PW).await.expect_problem(400, "link_invalid");
        accept(&s, &second, PW).await.expect(201);
        // Someone with a password and no invitation: nothing to accept, nothing to read.
        let none = s.create_user(json!({"username": format!("nan-{l}")})).await;
        s.post(
            &format!("/api/users/{}/invitation", none["user_id"].as_str().unwrap_or("")),
            &s.admin_token,
            json!({}),
        )
        .await
        .expect(400);
    }
}

/// Without SMTP nothing is lost: the invitation waits in the outbox, and a super-user reads its
/// link (audited) to hand it over. The command line invites too.
#[tokio::test]
async fn without_smtp_a_super_user_reads_the_pending_invitation_link() {
    for s in Server::all(&[("MUSTER_PUBLIC_URL", PUBLIC)]).await {
        let l = s.label;
        let email = format!("una-{l}@example.test");
        let una = s
            .create_user(json!({"username": format!("una-{l}"), "email": email}))
            .await;
        let id = una["user_id"].as_str().expect("user_id").to_owned();
        let (_, regular) = person(&s, &format!("reg-{l}"), &format!("reg-{l}@example.test")).await;
        s.get(&format!("/api/users/{id}/invitation"), &regular)
            .await
            .expect(403);
        let read = s
            .get(&format!("/api/users/{id}/invitation"), &s.admin_token)
            .await
            .expect(200);
        assert_eq!(
            read.headers.get("cache-control").and_then(|v| v.to_str().ok()),
            Some("no-store"),
            "{l}"
        );
        let link_text = read.body["link"].as_str().expect("link").to_owned();
        let token = link_text
            .strip_prefix(&format!("{PUBLIC}/invitation?token="))
            .unwrap_or_else(|| panic!("{l}: {link_text}"))
            .to_owned();
        let audit = s
            .audit(&format!("target={id}&action=user.invitation_read&outcome=success"))
            .await;
        assert_eq!(audit["total"], 1, "{l}: {audit}");
        assert!(!audit.to_string().contains(&token[4..]), "{l}: no link in the audit");
        let pending = s.get("/api/mail?status=pending", &s.admin_token).await.expect(200).body;
        assert!(
            pending
                .as_array()
                .is_some_and(|m| m.iter().any(|x| x["kind"] == "invitation" && x["attempts"] == 0)),
            "{l}: {pending}"
        );
        accept(&s, &token, PW).await.expect(201);
        s.get(&format!("/api/users/{id}/invitation"), &s.admin_token)
            .await
            .expect(404);

        // `muster user create --invite`, on the same database and key.
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_muster"))
            .args([
                "user",
                "create",
                &format!("cli-{l}"),
                "--email",
                &format!("cli-{l}@example.test"),
                "--invite",
            ])
            .env_clear()
            .env("MUSTER_DATABASE_URL", &s.db_url)
            .env("MUSTER_DATA_DIR", s.data_dir())
            .env("MUSTER_PUBLIC_URL", PUBLIC)
            .env("MUSTER_LOG", "warn")
            .output()
            .await
            .expect("muster user create");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{l}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("invitation queued"), "{l}: {stdout}");
        assert!(!stdout.contains("one-time password"), "{l}: {stdout}");
        let cli_id = stdout
            .split_whitespace()
            .find(|w| w.starts_with("musr"))
            .expect("user_id")
            .to_owned();
        let read = s
            .get(&format!("/api/users/{cli_id}/invitation"), &s.admin_token)
            .await
            .expect(200);
        let token = read.body["link"]
            .as_str()
            .and_then(|t| t.rsplit_once("token="))
            .map(|(_, t)| t.to_owned())
            .expect("token");
        accept(&s, &token, PW).await.expect(201);
    }
}

/// The create_user workflow, run without a password for someone with an address, invites them.
#[tokio::test]
async fn the_create_user_workflow_invites_the_person_it_makes() {
    let Some(py) = python() else { return };
    let sink = SmtpSink::start(&py).await;
    for s in servers(&mail_env(&sink.url())).await {
        let l = s.label;
        let products = s.get("/api/products", &s.admin_token).await.expect(200).body;
        let product = |name: &str| -> String {
            products
                .as_array()
                .and_then(|a| a.iter().find(|p| p["name"] == name))
                .and_then(|p| p["product_id"].as_str())
                .unwrap_or_else(|| panic!("no product {name}"))
                .to_owned()
        };
        let run = |workflow: &'static str, pages: Value| {
            let s = &s;
            async move {
                let r = s
                    .post(&format!("/api/processes/{workflow}"), &s.admin_token, pages)
                    .await
                    .expect(201);
                let pid = r.body["id"].as_str().expect("id").to_owned();
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let p = s
                        .get(&format!("/api/processes/{pid}"), &s.admin_token)
                        .await
                        .expect(200)
                        .body;
                    if p["last_status"] == "completed" {
                        return p;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{}: {workflow} did not complete: {p}",
                        s.label
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        let group = run(
            "create_user_group",
            json!([{"product": product("User Group")}, {"group_name": "Invited"}]),
        )
        .await;
        let gid = group["subscriptions"][0]["subscription_id"]
            .as_str()
            .expect("gid")
            .to_owned();
        let email = format!("wes-{l}@example.test");
        run(
            "create_user",
            json!([{"product": product("User internal")}, {"username": format!("wes-{l}"), "user_group_ids": [gid], "email": email}]),
        )
        .await;
        let m = sink.wait_for(&email, "/invitation?token=").await;
        let (_, token) = link(m["data"].as_str().unwrap_or_default(), PUBLIC, "/invitation");
        accept(&s, &token, PW).await.expect(201);
        s.login(&format!("wes-{l}"), PW).await;
    }
}

async fn sign_up(s: &Server, username: &str, email: &str, password: &str) -> common::Resp {
    s.call(
        Method::POST,
        "/api/signup",
        None,
        Some(json!({"username": username, "email": email, "password": password})),
    )
    .await
}

/// Off unless configured.
#[tokio::test]
async fn sign_up_is_off_by_default() {
    for s in Server::all(&[]).await {
        sign_up(&s, "someone", "someone@example.test", PW).await.expect(403);
    }
}

/// Sign-up with `approval`: an unconfirmed account that cannot log in, a confirmation link by
/// mail (once, expiring), then the approval; a taken name or address is answered alike and the
/// address is told; the allowed domains and create_user's checks apply.
#[tokio::test]
async fn sign_up_confirms_by_mail_and_tells_nothing_about_who_exists() {
    let Some(py) = python() else { return };
    let sink = SmtpSink::start(&py).await;
    let mut env = mail_env(&sink.url());
    env.push(("MUSTER_SIGNUP", "approval".into()));
    env.push(("MUSTER_SIGNUP_EMAIL_DOMAINS", "example.test".into()));
    for s in servers(&env).await {
        let l = s.label;
        let (name, email) = (format!("sam-{l}"), format!("sam-{l}@example.test"));
        let started = Instant::now();
        let fresh = sign_up(&s, &name, &email, PW).await.expect(202);
        assert!(started.elapsed() >= Duration::from_millis(300), "{l}");
        // Refused (Zato's check order names the approval first).
        s.try_login(json!({"username": name, "password": PW}))
            .await
            .expect_problem(403, "E005004");
        let m = sink.wait_for(&email, "/signup/confirm?token=").await;
        let data = m["data"].as_str().unwrap_or_default();
        assert_eq!(
            header(data, "Subject").as_deref(),
            Some("Confirm your new account"),
            "{l}"
        );
        let (_, token) = link(data, PUBLIC, "/signup/confirm");
        assert!(token.starts_with("msu_") && token.len() >= 4 + 43, "{l}");

        // Taken username, taken address: the same answer; the address is told.
        let other = format!("oli-{l}@example.test");
        let taken = sign_up(&s, &name, &other, PW).await.expect(202);
        assert_eq!(taken.body, fresh.body, "{l}");
        sink.wait_for(&other, "No account was made").await;
        sign_up(&s, &format!("sam2-{l}"), &email, PW).await.expect(202);
        sink.wait_for(&email, "No account was made").await;
        // Checked like create_user, and the domain.
        sign_up(&s, &format!("bad-{l}"), &format!("bad-{l}@elsewhere.test"), PW)
            .await
            .expect(400);
        sign_up(&s, &format!("weak-{l}"), &format!("weak-{l}@example.test"), "short")
            .await
            .expect(400);

        let confirm = |t: String| {
            let s = &s;
            async move {
                s.call(Method::POST, "/api/signup/confirm", None, Some(json!({"token": t})))
                    .await
            }
        };
        let done = confirm(token.clone()).await.expect(200);
        assert_eq!(done.body["awaiting_approval"], true, "{l}");
        sink.wait_for(&email, "awaits approval").await;
        confirm(token).await.expect_problem(400, "link_invalid");
        s.try_login(json!({"username": name, "password": PW}))
            .await
            .expect_problem(403, "E005004");
        let id = done.body["user_id"].as_str().expect("user_id");
        s.post(&format!("/api/users/{id}/approve"), &s.admin_token, json!({}))
            .await
            .expect(200);
        sink.wait_for(&email, "is approved").await;
        s.login(&name, PW).await;

        // An expired confirmation link is refused like a used one.
        let (zed, zed_email) = (format!("zed-{l}"), format!("zed-{l}@example.test"));
        sign_up(&s, &zed, &zed_email, PW).await.expect(202);
        let m = sink.wait_for(&zed_email, "/signup/confirm?token=").await;
        let (_, token) = link(m["data"].as_str().unwrap_or_default(), PUBLIC, "/signup/confirm");
        common::db_exec(&s, "UPDATE action_tokens SET expires_at = created_at").await;
        confirm(token).await.expect_problem(400, "link_invalid");
        let audit = s.audit("action=user.sign_up&outcome=failure").await;
        assert!(audit["total"].as_i64() >= Some(2), "{l}: taken names audited: {audit}");
    }
}

/// Sign-ups left unconfirmed are deleted when their time is up (at start, then every few
/// minutes); accounts a super-user made unconfirmed are not sign-ups and stay.
#[tokio::test]
async fn unconfirmed_sign_ups_are_deleted_after_their_time() {
    for db in TestDb::all().await {
        // Both starts share one server key, as the nodes of one database must.
        let env = [
            ("MUSTER_SIGNUP", "open"),
            ("MUSTER_SECRET_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
        ];
        let mut s = Server::start(db, &env).await;
        let l = s.label;
        sign_up(&s, "uma", "uma@example.test", PW).await.expect(202);
        s.create_user(json!({"username": "kept", "sign_up_status": "before_confirmation"}))
            .await;
        let age = if s.db_url.starts_with("sqlite:") {
            "UPDATE users SET sign_up_time = sign_up_time - 8 * 86400 * 1000000"
        } else {
            "UPDATE users SET sign_up_time = sign_up_time - interval '8 days'"
        };
        common::db_exec(&s, age).await;
        s.stop().await;
        let s2 = Server::start_on(l, &s.db_url, &env).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = s2.get("/api/users?username=uma", &s2.admin_token).await.expect(200);
            if found.body["total"] == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "{l}: uma was not purged: {}", found.body);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let kept = s2.get("/api/users?username=kept", &s2.admin_token).await.expect(200);
        assert_eq!(kept.body["total"], 1, "{l}");
        let audit = s2.audit("action=user.sign_up_purge").await;
        assert_eq!(audit["total"], 1, "{l}: {audit}");
    }
}

/// A link does not outlive the right to use it: locked after the request, the user cannot set
/// a password with it; a rejected user gets no link at all.
#[tokio::test]
async fn locked_and_rejected_users_cannot_reset() {
    let Some(py) = python() else { return };
    let sink = SmtpSink::start(&py).await;
    for s in servers(&mail_env(&sink.url())).await {
        let l = s.label;
        let email = format!("lee-{l}@example.test");
        let (id, _) = person(&s, &format!("lee-{l}"), &email).await;
        request_reset(&s, json!({"username": format!("lee-{l}")}))
            .await
            .expect(202);
        let m = sink.wait_for(&email, "/password-reset?token=").await;
        let (_, token) = link(m["data"].as_str().unwrap_or_default(), PUBLIC, "/password-reset");
        s.post(&format!("/api/users/{id}/lock"), &s.admin_token, json!({}))
            .await
            .expect(200);
        complete_reset(&s, json!({"token": token, "new_password": NEW_PW}))
            .await
            .expect_problem(401, "E005001");
        s.post(&format!("/api/users/{id}/unlock"), &s.admin_token, json!({}))
            .await
            .expect(200);
        s.login(&format!("lee-{l}"), PW).await;

        let rex = format!("rej-{l}@example.test");
        let (rid, _) = person(&s, &format!("rej-{l}"), &rex).await;
        s.post(&format!("/api/users/{rid}/reject"), &s.admin_token, json!({}))
            .await
            .expect(200);
        request_reset(&s, json!({"email": rex})).await.expect(202);
        let refused = s
            .audit(&format!(
                "target={rid}&action=user.password_reset_request&outcome=failure"
            ))
            .await;
        assert_eq!(refused["total"], 1, "{l}: {refused}");
        let mails = s.get("/api/mail", &s.admin_token).await.expect(200).body;
        assert!(
            mails
                .as_array()
                .is_some_and(|m| m.iter().all(|x| x["recipient"] != rex.as_str())),
            "{l}: no link for a rejected user: {mails}"
        );
    }
}
