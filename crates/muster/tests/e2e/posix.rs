//! Unix identities of offering accounts, set by the site (`set_posix_attributes`): overrides,
//! Waldur's 400s for bad shells and out-of-pool, taken or retired ids, the audit record, event
//! and history entry, the home directory across renames, and the counter stepping over a
//! claimed uid. Against the real binary, on SQLite and (with MUSTER_TEST_DATABASE_URL)
//! PostgreSQL.

use crate::common::{Resp, Server};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const BASE: &str = "/api/marketplace-offering-users/";

async fn call(s: &Server, method: Method, path: &str, token: &str, body: Option<Value>) -> Resp {
    let mut req = s
        .request(method, path)
        .header("authorization", format!("Token {token}"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    s.send(req).await
}

/// A provider with one offering (uid pool 5000–5009, gid pool 6000–6009) and an agent token:
/// (offering, token).
async fn site(s: &Server, name: &str) -> (String, String) {
    let p = s
        .post(
            "/api/marketplace-service-providers/",
            &s.admin_token,
            json!({"name": name}),
        )
        .await
        .expect(201);
    let provider = p.body["uuid"].as_str().expect("provider uuid").to_owned();
    let o = s
        .post(
            "/api/marketplace-provider-offerings/",
            &s.admin_token,
            json!({"name": format!("{name} HPC"), "provider_uuid": provider,
                "posix_settings": {"uid_min": 5000, "uid_max": 5009, "gid_min": 6000, "gid_max": 6009,
                    "home_prefix": "/home/", "login_shell": "/bin/bash", "shared_gid": null}}),
        )
        .await
        .expect(201);
    let offering = o.body["uuid"].as_str().expect("offering uuid").to_owned();
    let t = s
        .post(
            &format!("/api/marketplace-service-providers/{provider}/api_tokens/"),
            &s.admin_token,
            json!({"name": format!("{name}-agent")}),
        )
        .await
        .expect(201);
    (offering, t.body["key"].as_str().expect("key").to_owned())
}

/// A new account for a new person, created by the agent.
async fn account(s: &Server, offering: &str, token: &str, username: &str) -> Value {
    let user = s.create_user(json!({"username": username})).await;
    call(
        s,
        Method::POST,
        BASE,
        token,
        Some(json!({"offering_uuid": offering, "user_uuid": user["uuid"]})),
    )
    .await
    .expect(201)
    .body
}

async fn set_posix(s: &Server, token: &str, uuid: &str, body: Value) -> Resp {
    call(
        s,
        Method::POST,
        &format!("{BASE}{uuid}/set_posix_attributes/"),
        token,
        Some(body),
    )
    .await
}

async fn get(s: &Server, token: &str, uuid: &str) -> Value {
    call(s, Method::GET, &format!("{BASE}{uuid}/"), token, None)
        .await
        .expect(200)
        .body
}

async fn rename(s: &Server, token: &str, uuid: &str, username: &str) {
    call(
        s,
        Method::PATCH,
        &format!("{BASE}{uuid}/"),
        token,
        Some(json!({"username": username})),
    )
    .await
    .expect(200);
}

fn id(v: &Value) -> String {
    v["uuid"].as_str().expect("uuid").to_owned()
}

/// The field a 400 names and its message.
fn field_error(r: &Resp) -> (String, String) {
    let e = &r.body["errors"][0];
    (
        e["field"].as_str().unwrap_or("").to_owned(),
        e["message"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test]
async fn the_site_sets_posix_attributes_within_its_pools() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let (offering, token) = site(&s, "Alpha").await;
        let (_, other) = site(&s, "Beta").await;
        let ann = account(&s, &offering, &token, "ann").await;
        let bob = account(&s, &offering, &token, "bob").await;
        let (ann, bob) = (id(&ann), id(&bob));
        rename(&s, &token, &ann, "ann").await;
        let before = get(&s, &token, &ann).await;
        assert_eq!(
            (&before["uidnumber"], &before["primarygroup"]),
            (&json!(5000), &json!(6000)),
            "{l}: {before}"
        );

        // Refusals: each a 400 naming the field (or a 404 for another provider), none changes
        // anything.
        let cases = [
            (json!({}), 400, ""),
            (json!({"login_shell": "bin/sh"}), 400, "login_shell"),
            (json!({"login_shell": "/bin/../sh"}), 400, "login_shell"),
            (json!({"home_directory": "/home/a b"}), 400, "home_directory"),
            (json!({"uidnumber": 4999}), 400, "uidnumber"),
            (json!({"uidnumber": 5010}), 400, "uidnumber"),
            (json!({"uidnumber": 5001}), 400, "uidnumber"),
            (json!({"primarygroup": 6001}), 400, "primarygroup"),
            (json!({"primarygroup": 7000}), 400, "primarygroup"),
            (json!({"uidnumber": 5005, "shell": "/bin/sh"}), 400, ""),
        ];
        for (body, status, field) in cases {
            let r = set_posix(&s, &token, &ann, body.clone()).await.expect(status);
            if !field.is_empty() {
                assert_eq!(field_error(&r).0, field, "{l}: {body}: {}", r.body);
            }
        }
        let r = set_posix(&s, &token, &ann, json!({"uidnumber": 5001})).await;
        assert!(
            field_error(&r).1.contains("already allocated to another account"),
            "{l}: {}",
            r.body
        );
        let r = set_posix(&s, &token, &ann, json!({"uidnumber": 4999})).await;
        assert!(
            field_error(&r)
                .1
                .contains("outside the offering's uid pool (5000–5009)"),
            "{l}: {}",
            r.body
        );
        // Another provider's token does not see the account.
        set_posix(&s, &other, &ann, json!({"login_shell": "/bin/zsh"}))
            .await
            .expect_problem(404, "not_found");
        assert_eq!(get(&s, &token, &ann).await, before, "{l}: nothing changed");

        // The site moves ann to a uid ahead of the counter and gives her another shell.
        let r = set_posix(&s, &token, &ann, json!({"uidnumber": 5007, "login_shell": "/bin/zsh"}))
            .await
            .expect(200);
        assert_eq!(
            (&r.body["uidnumber"], &r.body["primarygroup"], &r.body["login_shell"]),
            (&json!(5007), &json!(6000), &json!("/bin/zsh")),
            "{l}: {}",
            r.body
        );
        let a = get(&s, &token, &ann).await;
        assert_eq!(a["uidnumber"], 5007, "{l}: {a}");
        assert_eq!(a["backend_metadata"]["uidnumber"], 5007, "{l}: {a}");
        assert_eq!(a["backend_metadata"]["loginShell"], "/bin/zsh", "{l}: {a}");
        assert_eq!(a["version"], before["version"].as_i64().unwrap_or(0) + 1, "{l}: {a}");
        // Audited, with an event and a history entry.
        let audit = s.audit(&format!("target={ann}&action=offering_user.update")).await;
        let rec = audit["result"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["details"]["action"] == "set_posix_attributes")
            .cloned()
            .unwrap_or_default();
        assert_eq!(rec["details"]["from"]["uidnumber"], 5000, "{l}: {audit}");
        assert_eq!(rec["details"]["to"]["uidnumber"], 5007, "{l}: {audit}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let page = call(
                &s,
                Method::GET,
                "/api/events?stream=offering_users&after=0&limit=1000",
                &token,
                None,
            )
            .await
            .expect(200);
            let found = page.body["events"].as_array().into_iter().flatten().any(|e| {
                e["subject"] == ann.as_str()
                    && e["kind"] == "offering_user.updated"
                    && e["data"]["action"] == "set_posix_attributes"
                    && e["data"]["uidnumber"] == 5007
            });
            if found {
                break;
            }
            assert!(Instant::now() < deadline, "{l}: no event: {}", page.body);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let h = call(&s, Method::GET, &format!("{BASE}{ann}/history/"), &token, None)
            .await
            .expect(200)
            .body;
        assert!(
            h.as_array()
                .into_iter()
                .flatten()
                .any(|e| e["action"] == "set_posix_attributes"),
            "{l}: {h}"
        );

        // The reads: the account's allocations, and a person's identities, as visible as the
        // accounts themselves.
        let al = call(
            &s,
            Method::GET,
            &format!("{BASE}{ann}/posix_allocations/"),
            &token,
            None,
        )
        .await
        .expect(200)
        .body;
        assert_eq!(
            al,
            json!([
                {"kind": "uid", "value": 5007, "offering_uuid": offering, "offering_name": "Alpha HPC",
                 "pool": "offering", "pool_min": 5000, "pool_max": 5009, "shared": false},
                {"kind": "gid", "value": 6000, "offering_uuid": offering, "offering_name": "Alpha HPC",
                 "pool": "offering", "pool_min": 6000, "pool_max": 6009, "shared": false},
            ]),
            "{l}"
        );
        call(
            &s,
            Method::GET,
            &format!("{BASE}{ann}/posix_allocations/"),
            &other,
            None,
        )
        .await
        .expect_problem(404, "not_found");
        let user = a["user_uuid"].as_str().unwrap_or("").to_owned();
        let ids = call(
            &s,
            Method::GET,
            &format!("{BASE}posix_identities/?user_uuid={user}"),
            &token,
            None,
        )
        .await
        .expect(200)
        .body;
        assert_eq!(ids.as_array().map(Vec::len), Some(1), "{l}: {ids}");
        assert_eq!(
            (
                &ids[0]["offering_user_uuid"],
                &ids[0]["uidnumber"],
                &ids[0]["login_shell"]
            ),
            (&json!(ann), &json!(5007), &json!("/bin/zsh")),
            "{l}: {ids}"
        );
        let none = call(
            &s,
            Method::GET,
            &format!("{BASE}posix_identities/?user_uuid={user}"),
            &other,
            None,
        )
        .await
        .expect(200)
        .body;
        assert_eq!(none, json!([]), "{l}: another provider sees none of them");
        call(&s, Method::GET, &format!("{BASE}posix_identities/"), &token, None)
            .await
            .expect(400);

        // ann's old uid was handed out once: never again, not even by an override.
        let r = set_posix(&s, &token, &bob, json!({"uidnumber": 5000}))
            .await
            .expect(400);
        assert_eq!(field_error(&r).0, "uidnumber", "{l}: {}", r.body);
        assert!(field_error(&r).1.contains("handed out before"), "{l}: {}", r.body);
        // The counter steps over the uid ann claimed.
        let mut uids = Vec::new();
        for name in ["cy", "dee", "eve", "fay", "gus", "hal"] {
            uids.push(
                account(&s, &offering, &token, name).await["uidnumber"]
                    .as_i64()
                    .unwrap_or(0),
            );
        }
        assert_eq!(uids, [5002, 5003, 5004, 5005, 5006, 5008], "{l}");

        // Only an operator's release lets a number handed out once be given again (once).
        let release = format!("/api/marketplace-provider-offerings/{offering}/release_posix_id/");
        call(&s, Method::POST, &release, &token, Some(json!({"uidnumber": 5000})))
            .await
            .expect(403);
        s.post(&release, &s.admin_token, json!({"uidnumber": 5001}))
            .await
            .expect_problem(409, "posix_id_held");
        s.post(&release, &s.admin_token, json!({"uidnumber": 5009}))
            .await
            .expect(400);
        s.post(
            &release,
            &s.admin_token,
            json!({"uidnumber": 5000, "primarygroup": 6000}),
        )
        .await
        .expect(400);
        let r = s
            .post(&release, &s.admin_token, json!({"uidnumber": 5000}))
            .await
            .expect(200);
        assert_eq!(
            (&r.body["kind"], &r.body["value"]),
            (&json!("uid"), &json!(5000)),
            "{l}"
        );
        s.post(&release, &s.admin_token, json!({"uidnumber": 5000}))
            .await
            .expect_problem(409, "posix_id_released");
        let audit = s
            .audit(&format!("target={offering}&action=offering.posix_release"))
            .await;
        assert_eq!(audit["result"][0]["details"]["value"], 5000, "{l}: {audit}");
        set_posix(&s, &token, &bob, json!({"uidnumber": 5000}))
            .await
            .expect(200);
        // bob's old uid is retired in turn.
        let r = set_posix(&s, &token, &ann, json!({"uidnumber": 5001}))
            .await
            .expect(400);
        assert!(field_error(&r).1.contains("handed out before"), "{l}: {}", r.body);

        // Two accounts racing for the last free uid: exactly one gets it.
        let cy = call(&s, Method::GET, &format!("{BASE}?page_size=300"), &token, None)
            .await
            .expect(200)
            .body
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["uidnumber"] == 5002)
            .map(id)
            .unwrap_or_default();
        let (x, y) = tokio::join!(
            set_posix(&s, &token, &cy, json!({"uidnumber": 5009})),
            set_posix(&s, &token, &bob, json!({"uidnumber": 5009})),
        );
        let mut statuses = [x.status.as_u16(), y.status.as_u16()];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 400], "{l}: {} / {}", x.body, y.body);

        // The home directory: the derived value follows a rename, an explicit one sticks.
        let r = set_posix(&s, &token, &ann, json!({"home_directory": "/home/ann"}))
            .await
            .expect(200);
        assert_eq!(r.body["home_directory"], "/home/ann", "{l}");
        rename(&s, &token, &ann, "ann2").await;
        assert_eq!(get(&s, &token, &ann).await["home_directory"], "/home/ann2", "{l}");
        set_posix(&s, &token, &ann, json!({"home_directory": "/data/ann"}))
            .await
            .expect(200);
        rename(&s, &token, &ann, "ann3").await;
        let a = get(&s, &token, &ann).await;
        assert_eq!(a["home_directory"], "/data/ann", "{l}: {a}");
        assert_eq!(a["backend_metadata"]["homeDir"], "/data/ann", "{l}: {a}");
        // The same values again change nothing.
        set_posix(
            &s,
            &token,
            &ann,
            json!({"home_directory": "/data/ann", "uidnumber": 5007}),
        )
        .await
        .expect(200);
        assert_eq!(get(&s, &token, &ann).await["version"], a["version"], "{l}");
    }
}

/// A provider with a shared pool (uid 8000–8002, gid 9000–9999) and `n` offerings drawing from
/// it: (provider, offerings, agent token).
async fn shared_site(s: &Server, name: &str, n: usize) -> (String, Vec<String>, String) {
    let p = s
        .post(
            "/api/marketplace-service-providers/",
            &s.admin_token,
            json!({"name": name, "posix_settings": {"uid_min": 8000, "uid_max": 8002, "gid_min": 9000,
                "gid_max": 9999, "home_prefix": "/home/", "login_shell": "/bin/zsh", "shared_gid": null}}),
        )
        .await
        .expect(201);
    assert_eq!(p.body["posix_settings"]["uid_min"], 8000, "{}", p.body);
    let provider = id(&p.body);
    let mut offerings = Vec::new();
    for i in 0..n {
        let o = s
            .post(
                "/api/marketplace-provider-offerings/",
                &s.admin_token,
                json!({"name": format!("{name} {i}"), "provider_uuid": provider, "posix_pool": "provider"}),
            )
            .await
            .expect(201);
        assert_eq!(o.body["posix_pool"], "provider", "{}", o.body);
        assert_eq!(o.body["posix_settings"]["login_shell"], "/bin/zsh", "{}", o.body);
        offerings.push(id(&o.body));
    }
    let t = s
        .post(
            &format!("/api/marketplace-service-providers/{provider}/api_tokens/"),
            &s.admin_token,
            json!({"name": format!("{name}-agent")}),
        )
        .await
        .expect(201);
    (provider, offerings, t.body["key"].as_str().expect("key").to_owned())
}

async fn request(s: &Server, token: &str, offering: &str, user: &Value) -> Resp {
    call(
        s,
        Method::POST,
        BASE,
        token,
        Some(json!({"offering_uuid": offering, "user_uuid": user["uuid"]})),
    )
    .await
}

#[tokio::test]
async fn a_providers_shared_pool_gives_a_person_one_identity_on_all_its_offerings() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let (provider, offerings, token) = shared_site(&s, "Shared", 2).await;
        let (o1, o2) = (&offerings[0], &offerings[1]);

        // Settings of its own on an offering that draws from its provider's pool: 400, and
        // nothing is created or changed.
        let before = s
            .get("/api/marketplace-provider-offerings/", &s.admin_token)
            .await
            .expect(200)
            .body;
        let own = json!({"uid_min": 1, "uid_max": 9, "gid_min": 1, "gid_max": 9, "home_prefix": "/h/",
            "login_shell": "/bin/sh", "shared_gid": null});
        let r = s
            .post(
                "/api/marketplace-provider-offerings/",
                &s.admin_token,
                json!({"name": "Bad", "provider_uuid": provider, "posix_pool": "provider", "posix_settings": own}),
            )
            .await
            .expect(400);
        assert_eq!(field_error(&r).0, "posix_settings", "{l}: {}", r.body);
        s.patch(
            &format!("/api/marketplace-provider-offerings/{o1}/"),
            &s.admin_token,
            json!({"posix_settings": own}),
        )
        .await
        .expect(400);
        let after = s
            .get("/api/marketplace-provider-offerings/", &s.admin_token)
            .await
            .expect(200)
            .body;
        assert_eq!(before, after, "{l}");

        // A provider's bad pool settings, and a pool that is neither: 400, nothing changes.
        let providers = s
            .get("/api/marketplace-service-providers/", &s.admin_token)
            .await
            .expect(200)
            .body;
        let backwards = json!({"uid_min": 9, "uid_max": 1, "gid_min": 1, "gid_max": 9, "home_prefix": "/h/",
            "login_shell": "/bin/sh", "shared_gid": null});
        let r = s
            .post(
                "/api/marketplace-service-providers/",
                &s.admin_token,
                json!({"name": "Bad pool", "posix_settings": backwards}),
            )
            .await
            .expect(400);
        assert_eq!(field_error(&r).0, "posix_settings", "{l}: {}", r.body);
        s.patch(
            &format!("/api/marketplace-service-providers/{provider}/"),
            &s.admin_token,
            json!({"posix_settings": backwards}),
        )
        .await
        .expect(400);
        s.post(
            "/api/marketplace-provider-offerings/",
            &s.admin_token,
            json!({"name": "Bad", "provider_uuid": provider, "posix_pool": "everyone"}),
        )
        .await
        .expect(400);
        let after = s
            .get("/api/marketplace-service-providers/", &s.admin_token)
            .await
            .expect(200)
            .body;
        assert_eq!(providers, after, "{l}");
        let offerings = s
            .get("/api/marketplace-provider-offerings/", &s.admin_token)
            .await
            .expect(200)
            .body;
        assert_eq!(offerings, before, "{l}");

        // One person, two offerings: one identity; another person: the next numbers.
        let ann = s.create_user(json!({"username": "ann"})).await;
        let bob = s.create_user(json!({"username": "bob"})).await;
        let a1 = request(&s, &token, o1, &ann).await.expect(201).body;
        let b2 = request(&s, &token, o2, &bob).await.expect(201).body;
        let a2 = request(&s, &token, o2, &ann).await.expect(201).body;
        assert_eq!(
            (a1["uidnumber"].as_i64(), a1["primarygroup"].as_i64()),
            (Some(8000), Some(9000)),
            "{l}: {a1}"
        );
        assert_eq!(
            (a2["uidnumber"].as_i64(), a2["primarygroup"].as_i64()),
            (Some(8000), Some(9000)),
            "{l}: {a2}"
        );
        assert_eq!(
            (b2["uidnumber"].as_i64(), b2["primarygroup"].as_i64()),
            (Some(8001), Some(9001)),
            "{l}: {b2}"
        );
        assert_eq!(a2["login_shell"], "/bin/zsh", "{l}: {a2}");
        let alloc = call(
            &s,
            Method::GET,
            &format!("{BASE}{}/posix_allocations/", id(&a2)),
            &token,
            None,
        )
        .await
        .expect(200)
        .body;
        assert_eq!(alloc[0]["pool"], "provider", "{l}: {alloc}");
        assert_eq!(
            (alloc[0]["pool_min"].as_i64(), alloc[0]["pool_max"].as_i64()),
            (Some(8000), Some(8002)),
            "{l}"
        );

        // The numbers are the person's on every offering: no per-account change, no release.
        let r = set_posix(&s, &token, &id(&a2), json!({"uidnumber": 8002}))
            .await
            .expect(400);
        assert_eq!(field_error(&r).0, "uidnumber", "{l}: {}", r.body);
        let r = set_posix(&s, &token, &id(&a2), json!({"primarygroup": 9500}))
            .await
            .expect(400);
        assert_eq!(field_error(&r).0, "primarygroup", "{l}: {}", r.body);
        assert_eq!(get(&s, &token, &id(&a2)).await["uidnumber"], 8000, "{l}");
        // The same numbers may be given, and the shell and home remain per account.
        set_posix(
            &s,
            &token,
            &id(&a2),
            json!({"uidnumber": 8000, "login_shell": "/bin/bash"}),
        )
        .await
        .expect(200);
        assert_eq!(get(&s, &token, &id(&a2)).await["login_shell"], "/bin/bash", "{l}");
        assert_eq!(get(&s, &token, &id(&a1)).await["login_shell"], "/bin/zsh", "{l}");
        s.post(
            &format!("/api/marketplace-provider-offerings/{o1}/release_posix_id/"),
            &s.admin_token,
            json!({"uidnumber": 8000}),
        )
        .await
        .expect(400);

        // An offering with accounts cannot move to another pool (its numbers came from this one).
        let r = s
            .patch(
                &format!("/api/marketplace-provider-offerings/{o1}/"),
                &s.admin_token,
                json!({"posix_pool": "offering"}),
            )
            .await
            .expect_problem(409, "posix_pool_in_use");
        assert!(
            r.body["detail"].as_str().unwrap_or("").contains("pool"),
            "{l}: {}",
            r.body
        );
        let o = s
            .get(&format!("/api/marketplace-provider-offerings/{o1}/"), &s.admin_token)
            .await
            .expect(200)
            .body;
        assert_eq!(o["posix_pool"], "provider", "{l}: {o}");

        // The pool's use, as the dashboard shows it: 2 of 3 uids; then the last one, then full.
        let pools = call(&s, Method::GET, "/api/marketplace-posix-pools/", &token, None)
            .await
            .expect(200)
            .body;
        let mine = pools
            .as_array()
            .and_then(|a| a.iter().find(|p| p["uuid"] == provider.replace('-', "")))
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(
            (
                mine["pool"].as_str(),
                mine["uid_used"].as_i64(),
                mine["uid_size"].as_i64(),
                mine["percent_used"].as_i64()
            ),
            (Some("provider"), Some(2), Some(3), Some(66)),
            "{l}: {pools}"
        );
        let cy = s.create_user(json!({"username": "cy"})).await;
        let dee = s.create_user(json!({"username": "dee"})).await;
        assert_eq!(
            request(&s, &token, o1, &cy).await.expect(201).body["uidnumber"],
            8002,
            "{l}"
        );
        let r = request(&s, &token, o2, &dee)
            .await
            .expect_problem(409, "posix_pool_full");
        assert!(
            r.body["detail"]
                .as_str()
                .unwrap_or("")
                .contains("provider's uid pool (8000–8002) is full"),
            "{l}: {}",
            r.body
        );
        // cy already holds an identity: their account on the other offering still works.
        assert_eq!(
            request(&s, &token, o2, &cy).await.expect(201).body["uidnumber"],
            8002,
            "{l}"
        );
        let pools = s
            .get("/api/marketplace-posix-pools/", &s.admin_token)
            .await
            .expect(200)
            .body;
        assert!(
            pools.as_array().is_some_and(|a| a
                .iter()
                .any(|p| p["uuid"] == provider.replace('-', "") && p["percent_used"] == 100)),
            "{l}: {pools}"
        );
        // Someone who manages nothing sees no pools.
        let (_, outsider) = s.user_with_session("outsider", "0utsider-pass-phrase").await;
        let none = s.get("/api/marketplace-posix-pools/", &outsider).await.expect(200).body;
        assert_eq!(none, json!([]), "{l}");
    }
}

/// 2,000 accounts on one offering's pool, and 1,000 people's accounts on two offerings of a
/// provider's shared pool, all requested at once through two nodes on one PostgreSQL: no uid
/// is given to two people, and each person has one uid on the shared pool.
#[tokio::test]
async fn two_thousand_accounts_through_two_nodes_never_share_a_uid() {
    let Some(db) = muster_store::testing::TestDb::postgres().await else {
        eprintln!("MUSTER_TEST_DATABASE_URL is not set: the two-node allocation test needs PostgreSQL");
        return;
    };
    // Cheap password hashing: the test is about allocation, not about 2,000 argon2 runs.
    let env = [
        ("MUSTER_SECRET_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
        ("MUSTER_ARGON2_MEMORY_KIB", "64"),
        ("MUSTER_ARGON2_ITERATIONS", "1"),
        ("MUSTER_DB_MAX_CONNECTIONS", "8"),
    ];
    let url = db.url.clone();
    let a = Server::start(db, &env).await;
    let b = Server::start_on("postgres", &url, &env).await;
    const N: usize = 2000;

    let (_, shared, token) = shared_site(&a, "Big", 2).await;
    // Widen the shared pool so that 1,000 people fit.
    let provider = a
        .get(
            &format!("/api/marketplace-provider-offerings/{}/", shared[0]),
            &a.admin_token,
        )
        .await
        .expect(200)
        .body["provider_uuid"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    a.patch(
        &format!("/api/marketplace-service-providers/{provider}/"),
        &a.admin_token,
        json!({"posix_settings": {"uid_min": 100000, "uid_max": 199999, "gid_min": 100000, "gid_max": 199999,
            "home_prefix": "/home/", "login_shell": "/bin/bash", "shared_gid": null}}),
    )
    .await
    .expect(200);
    let own = a
        .post(
            "/api/marketplace-provider-offerings/",
            &a.admin_token,
            json!({"name": "Own pool", "provider_uuid": provider,
                "posix_settings": {"uid_min": 20000, "uid_max": 29999, "gid_min": 20000, "gid_max": 29999,
                    "home_prefix": "/home/", "login_shell": "/bin/bash", "shared_gid": null}}),
        )
        .await
        .expect(201);
    let own = id(&own.body);

    // The people, created through both nodes.
    let mut users = Vec::with_capacity(N);
    for chunk in (0..N).collect::<Vec<_>>().chunks(50) {
        let mut set = tokio::task::JoinSet::new();
        for &i in chunk {
            let node = if i % 2 == 0 { &a } else { &b };
            let req = node
                .request(Method::POST, "/api/users")
                .header("authorization", format!("Bearer {}", a.admin_token))
                .json(&json!({"username": format!("u{i}")}));
            set.spawn(async move { (i, req.send().await) });
        }
        while let Some(r) = set.join_next().await {
            let (i, r) = r.expect("task");
            let r = r.expect("send");
            assert_eq!(r.status().as_u16(), 201, "user {i}");
            let v: Value = r.json().await.expect("json");
            users.push(v);
        }
    }

    // Every request at once (bounded by the client's connections), alternating nodes: one
    // account each on the offering's own pool, and each of the first 1,000 people's accounts
    // on both shared-pool offerings, one through each node.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    let mut set = tokio::task::JoinSet::new();
    let started = Instant::now();
    for (i, u) in users.iter().enumerate() {
        let mut jobs = vec![(if i % 2 == 0 { &a } else { &b }, own.clone())];
        if i < N / 2 {
            jobs.push((&a, shared[0].clone()));
            jobs.push((&b, shared[1].clone()));
        }
        for (node, offering) in jobs {
            let req = client
                .post(node.url(BASE))
                .header("authorization", format!("Token {token}"))
                .json(&json!({"offering_uuid": offering, "user_uuid": u["uuid"]}));
            let permit = semaphore.clone();
            set.spawn(async move {
                let _p = permit.acquire_owned().await.expect("permit");
                let r = req.send().await.expect("send");
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                assert_eq!(status, 201, "{body}");
                (offering, body)
            });
        }
    }
    let mut own_uids = std::collections::BTreeSet::new();
    let mut shared_ids: std::collections::BTreeMap<String, Vec<(i64, i64)>> = Default::default();
    while let Some(r) = set.join_next().await {
        let (offering, body) = r.expect("task");
        let uid = body["uidnumber"].as_i64().expect("uid");
        let gid = body["primarygroup"].as_i64().expect("gid");
        if offering == own {
            assert!((20000..=29999).contains(&uid), "{body}");
            assert!(
                own_uids.insert(uid),
                "uid {uid} given twice on one offering's pool: {body}"
            );
        } else {
            shared_ids
                .entry(body["user_uuid"].as_str().unwrap_or("").to_owned())
                .or_default()
                .push((uid, gid));
        }
    }
    eprintln!("{} accounts through two nodes in {:?}", N + N, started.elapsed());
    assert_eq!(own_uids.len(), N);
    assert_eq!(shared_ids.len(), N / 2, "one identity per person");
    let mut seen = std::collections::BTreeSet::new();
    for (person, ids) in &shared_ids {
        assert_eq!(ids.len(), 2, "{person}: {ids:?}");
        assert_eq!(ids[0], ids[1], "{person} has two identities on one provider: {ids:?}");
        assert!(seen.insert(ids[0].0), "uid {} given to two people", ids[0].0);
        assert!((100000..=199999).contains(&ids[0].0), "{ids:?}");
    }
}
