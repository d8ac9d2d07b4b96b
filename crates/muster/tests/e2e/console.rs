//! The web console, end to end: over plain HTTP on every database (sign-in, cookies, the CSRF
//! guard, every page for its roles, CSV), and in headless Chromium on SQLite
//! (tests-browser/console.mjs: every scenario of the console, axe-core on every page,
//! screenshots in target/console-screenshots).

use crate::common::{ADMIN, ADMIN_PASSWORD, Server};
use muster_store::testing::TestDb;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A browser without JavaScript: keeps cookies, follows nothing by itself.
struct Visitor<'a> {
    s: &'a Server,
    client: reqwest::Client,
    cookies: Vec<(String, String)>,
    headers: Vec<(&'static str, String)>,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers.get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The `Set-Cookie` value for cookie `name`, if any.
    fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .map(str::to_owned)
    }

    /// The value of the first `name="_csrf"` field in the page.
    fn csrf(&self) -> String {
        let at = self.body.find("name=\"_csrf\" value=\"").expect("a CSRF field") + 20;
        self.body[at..].split('"').next().unwrap_or("").to_owned()
    }
}

impl<'a> Visitor<'a> {
    fn new(s: &'a Server) -> Self {
        Self {
            s,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            cookies: Vec::new(),
            headers: Vec::new(),
        }
    }

    async fn send(&mut self, method: Method, path: &str, form: Option<&[(&str, &str)]>) -> Page {
        let mut req = self.client.request(method, self.s.url(path));
        if !self.cookies.is_empty() {
            let c: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header("cookie", c.join("; "));
        }
        for (k, v) in &self.headers {
            req = req.header(*k, v);
        }
        if let Some(f) = form {
            req = req.form(f);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        for v in headers.get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()) {
            let pair = v.split(';').next().unwrap_or("");
            if let Some((k, val)) = pair.split_once('=') {
                self.cookies.retain(|(n, _)| n != k);
                if !val.is_empty() && !v.contains("Max-Age=0") {
                    self.cookies.push((k.to_owned(), val.to_owned()));
                }
            }
        }
        let body = resp.text().await.unwrap_or_default();
        Page { status, headers, body }
    }

    async fn get(&mut self, path: &str) -> Page {
        self.send(Method::GET, path, None).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        self.send(Method::POST, path, Some(form)).await
    }

    async fn sign_in(&mut self, username: &str, password: &str) -> Page {
        let page = self.get("/login").await;
        let csrf = page.csrf();
        self.post(
            "/login",
            &[
                ("_csrf", &csrf),
                ("username", username),
                ("password", password),
                ("next", "/"),
            ],
        )
        .await
    }
}

#[tokio::test]
async fn console_sign_in_csrf_pages_and_csv_on_every_database() {
    for s in Server::all(&[("MUSTER_TRUSTED_PROXIES", "127.0.0.1")]).await {
        let l = s.label;
        let mut v = Visitor::new(&s);

        // Not signed in: the console's front door is the sign-in page.
        let p = v.get("/").await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{l}");
        assert_eq!(p.location(), "/login?next=%2F", "{l}");
        let p = v.get("/login").await;
        assert_eq!(p.status, StatusCode::OK, "{l}");
        let csp = p
            .headers
            .get("content-security-policy")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe"),
            "{l}: {csp}"
        );
        assert!(
            !p.body.contains("<script>") && !p.body.contains(" style="),
            "{l}: no inline code"
        );

        // Sign-in without the form's token is refused and opens nothing.
        let p = v
            .post("/login", &[("username", ADMIN), ("password", ADMIN_PASSWORD)])
            .await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{l}");
        assert!(p.set_cookie("muster_session").is_none(), "{l}");
        let audit = s.audit("action=session.login").await;
        let logins_before = audit["total"].as_i64().unwrap_or(0);

        let p = v.sign_in(ADMIN, ADMIN_PASSWORD).await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{l}: {}", p.body);
        let cookie = p.set_cookie("muster_session").expect("session cookie");
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{l}: {cookie}"
        );
        assert!(!cookie.contains("Secure"), "{l}: plain http: {cookie}");
        // A normal muster session: audited as a login, listed among the admin's sessions.
        let audit = s.audit("action=session.login").await;
        assert_eq!(audit["total"].as_i64().unwrap_or(0), logins_before + 1, "{l}");

        for path in [
            "/",
            "/me",
            "/users",
            "/users/new",
            "/subscriptions",
            "/processes",
            "/processes?tab=tasks",
            "/start",
            "/accounts",
            "/providers",
            "/audit",
            "/catalogue",
        ] {
            let p = v.get(path).await;
            assert_eq!(p.status, StatusCode::OK, "{l}: {path}: {}", p.body);
            assert!(p.body.contains("<main id=\"main\""), "{l}: {path}");
            assert_eq!(
                p.headers.get("cache-control").and_then(|h| h.to_str().ok()),
                Some("no-store"),
                "{l}: {path}"
            );
        }

        // State changes need the session's CSRF token; refused ones change nothing.
        let form = [("username", "console-made"), ("first_name", "Made")];
        let p = v.post("/users/new", &form).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{l}");
        let p = v
            .post("/users/new", &[("_csrf", "forged"), ("username", "console-made")])
            .await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{l}");
        let found = s
            .get("/api/users?username=console-made", &s.admin_token)
            .await
            .expect(200);
        assert_eq!(found.body["total"], 0, "{l}: nothing was created");
        let csrf = v.get("/users/new").await.csrf();
        let p = v
            .post(
                "/users/new",
                &[
                    ("_csrf", &csrf),
                    ("username", "console-made"),
                    ("first_name", "Made"),
                    ("email", "made@example.org"),
                ],
            )
            .await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{l}: {}", p.body);
        let found = s
            .get("/api/users?username=console-made", &s.admin_token)
            .await
            .expect(200);
        assert_eq!(found.body["total"], 1, "{l}");
        assert_eq!(found.body["result"][0]["first_name"], "Made", "{l}");
        // A bad email keeps every other value in the form.
        let p = v
            .post(
                "/users/new",
                &[
                    ("_csrf", &csrf),
                    ("username", "second"),
                    ("first_name", "Kept"),
                    ("email", "not an email"),
                ],
            )
            .await;
        assert_eq!(p.status, StatusCode::OK, "{l}");
        assert!(
            p.body.contains("value=\"second\"") && p.body.contains("value=\"Kept\""),
            "{l}"
        );
        assert!(p.body.contains("aria-invalid=\"true\""), "{l}");

        // The CSV export holds every user of the filter, streamed.
        let p = v.get("/users.csv?name=Made").await;
        assert_eq!(p.status, StatusCode::OK, "{l}");
        let lines: Vec<&str> = p.body.trim_end().split("\r\n").collect();
        assert!(lines[0].starts_with("user_id,username,"), "{l}: {}", lines[0]);
        assert_eq!(lines.len(), 2, "{l}: {lines:?}");
        assert!(lines[1].contains("console-made"), "{l}");

        // Someone without the right sees a refusal, not the data.
        s.create_user(json!({"username": "plain", "password": "Pl41n-passw0rd-x"}))
            .await;
        let mut plain = Visitor::new(&s);
        let p = plain.sign_in("plain", "Pl41n-passw0rd-x").await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{l}");
        assert_eq!(plain.get("/").await.location(), "/me", "{l}: a person lands on Me");
        assert_eq!(plain.get("/me").await.status, StatusCode::OK, "{l}");
        for path in ["/users", "/processes", "/subscriptions", "/audit", "/users.csv"] {
            assert_eq!(plain.get(path).await.status, StatusCode::FORBIDDEN, "{l}: {path}");
        }

        // Signing out ends the muster session itself.
        let csrf = v.get("/me").await.csrf();
        let p = v.post("/logout", &[("_csrf", &csrf)]).await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{l}");
        assert!(v.get("/users").await.location().starts_with("/login?next="), "{l}");

        // Behind a TLS proxy the cookies are Secure.
        let mut tls = Visitor::new(&s);
        tls.headers.push(("x-forwarded-proto", "https".to_owned()));
        let p = tls.sign_in(ADMIN, ADMIN_PASSWORD).await;
        let cookie = p.set_cookie("muster_session").expect("session cookie");
        assert!(cookie.contains("Secure"), "{l}: {cookie}");
    }
}

/// Where a tool the browser tests need is missing: a failure under CI, a clear skip elsewhere.
fn missing(what: &str) -> bool {
    if std::env::var_os("CI").is_some() {
        panic!("{what} is missing; CI must install it (bash .ci/run does)");
    }
    println!("skipped: {what} is missing; run `bash .ci/run` to install the browser test tools");
    true
}

fn node() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("node"))
            .find(|p| p.is_file())
    })
}

#[tokio::test]
async fn console_in_headless_chromium() {
    let dir = root().join("tests-browser");
    let Some(node) = node() else {
        missing("node");
        return;
    };
    if !Path::new("/usr/bin/chromium").is_file() && missing("/usr/bin/chromium") {
        return;
    }
    if !dir.join("node_modules/playwright-core").is_dir() && missing("tests-browser/node_modules (npm ci)") {
        return;
    }
    // Sign-up open, so that its pages are there to be checked too.
    let s = Server::start(TestDb::sqlite(), &[("MUSTER_SIGNUP", "open")]).await;
    let shots = root().join("target/console-screenshots");
    let run = tokio::process::Command::new(node)
        .arg("console.mjs")
        .current_dir(&dir)
        .env("MUSTER_BASE", &s.base)
        .env("MUSTER_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("SCREENSHOT_DIR", &shots)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(900), run)
        .await
        .expect("the browser tests finish within 15 minutes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "browser tests failed (screenshots in {}):\n{stdout}\nserver log:\n{}",
        shots.display(),
        s.stderr()
    );
}

/// The pages for getting in without a password: asking for a reset link (the same answer for
/// anyone), setting the password from the link (once), accepting an invitation (signed in).
#[tokio::test]
async fn console_password_reset_and_invitation_pages() {
    use crate::common::smtp::{SmtpSink, link, python};
    let Some(py) = python() else { return };
    let sink = SmtpSink::start(&py).await;
    let smtp = sink.url();
    let public = "http://console.example.test";
    let env = [
        ("MUSTER_SMTP_URL", smtp.as_str()),
        ("MUSTER_PUBLIC_URL", public),
        ("MUSTER_MAIL_RETRY_BASE_SECS", "1"),
    ];
    for s in Server::all(&env).await {
        let l = s.label;
        let name = format!("rita-{l}");
        let email = format!("rita-{l}@example.test");
        s.create_user(json!({"username": name, "password": "Old-pa55word-here", "email": email}))
            .await;
        let mut v = Visitor::new(&s);
        let p = v.get("/login").await;
        assert!(p.body.contains("href=\"/password-reset\""), "{l}");

        let p = v.get("/password-reset").await;
        assert_eq!(p.status, StatusCode::OK, "{l}");
        let csrf = p.csrf();
        let p = v.post("/password-reset", &[("who", &name)]).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{l}: no token, no request");
        let asked = v.post("/password-reset", &[("_csrf", &csrf), ("who", &name)]).await;
        assert_eq!(asked.status, StatusCode::OK, "{l}");
        assert!(asked.body.contains("id=\"reset-asked\""), "{l}: {}", asked.body);
        let nobody = v
            .post("/password-reset", &[("_csrf", &csrf), ("who", "nobody@example.test")])
            .await;
        assert_eq!(nobody.body, asked.body, "{l}: the same page for nobody");

        let m = sink.wait_for(&email, "/password-reset?token=").await;
        let (_, token) = link(m["data"].as_str().unwrap_or_default(), public, "/password-reset");
        let p = v.get(&format!("/password-reset?token={token}")).await;
        assert!(p.body.contains(&format!("name=\"token\" value=\"{token}\"")), "{l}");
        let csrf = p.csrf();
        let form = |a: &str, b: &str| -> Vec<(&'static str, String)> {
            vec![
                ("_csrf", csrf.clone()),
                ("token", token.clone()),
                ("new_password", a.to_owned()),
                ("new_password_again", b.to_owned()),
            ]
        };
        let differ = form("N3w-pa55word-here", "N3w-pa55word-there");
        let p = v.post("/password-reset/complete", &pairs(&differ)).await;
        assert!(p.body.contains("differ"), "{l}");
        let short = form("short", "short");
        let p = v.post("/password-reset/complete", &pairs(&short)).await;
        assert!(p.body.contains("id=\"reset-error\""), "{l}: {}", p.body);
        let good = form("N3w-pa55word-here", "N3w-pa55word-here");
        let good = pairs(&good);
        let p = v.post("/password-reset/complete", &good).await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{l}: {}", p.body);
        assert_eq!(p.location(), "/login?password_reset=1", "{l}");
        let p = v.post("/password-reset/complete", &good).await;
        assert!(p.body.contains("id=\"reset-dead\""), "{l}: used: {}", p.body);
        let p = v.sign_in(&name, "N3w-pa55word-here").await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{l}");

        // An invitation: choose a password, signed in.
        let invited = format!("ida-{l}@example.test");
        s.create_user(json!({"username": format!("ida-{l}"), "email": invited}))
            .await;
        let m = sink.wait_for(&invited, "/invitation?token=").await;
        let (_, token) = link(m["data"].as_str().unwrap_or_default(), public, "/invitation");
        let mut w = Visitor::new(&s);
        let p = w.get(&format!("/invitation?token={token}")).await;
        assert_eq!(p.status, StatusCode::OK, "{l}");
        let csrf = p.csrf();
        let p = w
            .post(
                "/invitation",
                &[
                    ("_csrf", &csrf),
                    ("token", &token),
                    ("password", "F1rst-pa55word-ok"),
                    ("password_again", "F1rst-pa55word-ok"),
                ],
            )
            .await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{l}: {}", p.body);
        assert_eq!(p.location(), "/me", "{l}");
        assert!(p.set_cookie("muster_session").is_some(), "{l}");
        let p = w.get("/me").await;
        assert_eq!(p.status, StatusCode::OK, "{l}");
        let mut x = Visitor::new(&s);
        let p = x.get(&format!("/invitation?token={token}")).await;
        let csrf = p.csrf();
        let p = x
            .post(
                "/invitation",
                &[
                    ("_csrf", &csrf),
                    ("token", &token),
                    ("password", "F1rst-pa55word-ok"),
                    ("password_again", "F1rst-pa55word-ok"),
                ],
            )
            .await;
        assert!(p.body.contains("id=\"invitation-dead\""), "{l}: used: {}", p.body);
    }
}

/// Form fields as `Visitor::post` takes them.
fn pairs<'f>(f: &'f [(&'static str, String)]) -> Vec<(&'static str, &'f str)> {
    f.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A failed delivery shows on the dashboard and the mail page, and is queued again from there.
#[tokio::test]
async fn console_shows_failed_mail_and_retries_it() {
    use crate::common::smtp::{SmtpSink, python};
    let Some(py) = python() else { return };
    let sink = SmtpSink::start_with(&py, 0, 1).await;
    let smtp = sink.url();
    let env = [("MUSTER_SMTP_URL", smtp.as_str()), ("MUSTER_MAIL_RETRY_BASE_SECS", "1")];
    let db = TestDb::all().await.into_iter().next().expect("a database");
    let s = Server::start(db, &env).await;
    s.create_user(json!({"username": "fay", "email": "fay@example.test"}))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut v = Visitor::new(&s);
    v.sign_in(ADMIN, ADMIN_PASSWORD).await;
    let page = loop {
        let p = v.get("/mail?status=failed").await;
        if p.body.contains("/retry") {
            break p;
        }
        assert!(std::time::Instant::now() < deadline, "no failed mail: {}", p.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(page.body.contains("550"), "the server's answer is shown");
    let dash = v.get("/").await;
    assert!(dash.body.contains("href=\"/mail?status=failed\""), "{}", dash.body);
    let at = page.body.find("action=\"/mail/").expect("a retry form") + 8;
    let action: String = page.body[at..].chars().take_while(|c| *c != '"').collect();
    let csrf = page.csrf();
    let p = v.post(&action, &[("_csrf", &csrf)]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    sink.wait_for("fay@example.test", "/invitation?token=").await;
}

/// Sign-up in the console: the form, the same answer for a taken name, the confirmation page;
/// none of it while sign-up is off.
#[tokio::test]
async fn console_sign_up_pages() {
    use crate::common::smtp::{SmtpSink, link, python};
    let Some(py) = python() else { return };
    let sink = SmtpSink::start(&py).await;
    let smtp = sink.url();
    let public = "http://console.example.test";
    let env = [
        ("MUSTER_SMTP_URL", smtp.as_str()),
        ("MUSTER_PUBLIC_URL", public),
        ("MUSTER_SIGNUP", "open"),
    ];
    for s in Server::all(&env).await {
        let l = s.label;
        let mut v = Visitor::new(&s);
        let p = v.get("/login").await;
        assert!(p.body.contains("id=\"signup-link\""), "{l}");
        let p = v.get("/signup").await;
        let csrf = p.csrf();
        let (name, email) = (format!("sue-{l}"), format!("sue-{l}@example.test"));
        let form = [
            ("_csrf", csrf.as_str()),
            ("username", name.as_str()),
            ("email", email.as_str()),
            ("password", "Sue-pa55word-long"),
            ("password_again", "Sue-pa55word-long"),
        ];
        let sent = v.post("/signup", &form).await;
        assert!(sent.body.contains("id=\"signup-sent\""), "{l}: {}", sent.body);
        let again = v.post("/signup", &form).await;
        assert_eq!(again.body, sent.body, "{l}: a taken name is answered alike");
        let m = sink.wait_for(&email, "/signup/confirm?token=").await;
        let (_, token) = link(m["data"].as_str().unwrap_or_default(), public, "/signup/confirm");
        let p = v.get(&format!("/signup/confirm?token={token}")).await;
        let csrf = p.csrf();
        let p = v.post("/signup/confirm", &[("_csrf", &csrf), ("token", &token)]).await;
        assert!(p.body.contains("id=\"signup-confirmed\""), "{l}: {}", p.body);
        let p = v.post("/signup/confirm", &[("_csrf", &csrf), ("token", &token)]).await;
        assert!(p.body.contains("id=\"signup-dead\""), "{l}: {}", p.body);
        let p = v.sign_in(&name, "Sue-pa55word-long").await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{l}");
    }
    let s = Server::start(TestDb::sqlite(), &[]).await;
    let mut v = Visitor::new(&s);
    assert!(!v.get("/login").await.body.contains("signup-link"));
    assert!(v.get("/signup").await.body.contains("id=\"signup-off\""));
}

/// A live refresh of an account row the page already shows as it is answers 204 (htmx keeps
/// the row, and an action menu opened meanwhile stays open); after anyone's change it answers
/// the new row.
#[tokio::test]
async fn a_live_row_refresh_changes_nothing_when_the_row_is_current() {
    let s = Server::start(TestDb::sqlite(), &[]).await;
    let admin = s.admin_token.clone();
    let p = s
        .post("/api/marketplace-service-providers/", &admin, json!({"name": "Live"}))
        .await
        .expect(201);
    let provider = p.body["uuid"].as_str().expect("provider").to_owned();
    let o = s
        .post(
            "/api/marketplace-provider-offerings/",
            &admin,
            json!({"name": "Live HPC", "provider_uuid": provider, "type": "Marketplace.Slurm"}),
        )
        .await
        .expect(201);
    let user = s.create_user(json!({"username": "livia"})).await;
    let a = s
        .post(
            "/api/marketplace-offering-users/",
            &admin,
            json!({"offering_uuid": o.body["uuid"], "user_uuid": user["uuid"]}),
        )
        .await
        .expect(201);
    let uuid = a.body["uuid"].as_str().expect("account").to_owned();

    let mut v = Visitor::new(&s);
    v.sign_in(ADMIN, ADMIN_PASSWORD).await;
    // The row as the list shows it names the version it shows.
    let row = v.get(&format!("/accounts/{uuid}/row")).await;
    assert_eq!(row.status, StatusCode::OK, "{}", row.body);
    let refresh = row
        .body
        .split("hx-get=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the row refreshes itself")
        .replace("&amp;", "&");
    assert!(refresh.contains("seen="), "{refresh}");
    let same = v.get(&refresh).await;
    assert_eq!(same.status, StatusCode::NO_CONTENT, "{}", same.body);
    assert!(same.body.is_empty());
    // Someone changes the account: the same refresh now brings the new row.
    s.post(
        &format!("/api/marketplace-offering-users/{uuid}/begin_creating/"),
        &admin,
        json!({}),
    )
    .await
    .expect(200);
    let newer = v.get(&refresh).await;
    assert_eq!(newer.status, StatusCode::OK, "{}", newer.body);
    assert!(newer.body.contains("data-state=\"Creating\""), "{}", newer.body);
}
