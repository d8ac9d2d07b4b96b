//! Unix identities of offering accounts, set by the site (`set_posix_attributes`): overrides,
//! Waldur's 400s for bad shells and out-of-pool, taken or retired ids, the audit record, event
//! and history entry, the home directory across renames, and the counter stepping over a
//! claimed uid. Against the real binary, on SQLite and (with MUSTER_TEST_DATABASE_URL)
//! PostgreSQL.

mod common;

use common::{Resp, Server};
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
                 "pool_min": 5000, "pool_max": 5009, "shared": false},
                {"kind": "gid", "value": 6000, "offering_uuid": offering, "offering_name": "Alpha HPC",
                 "pool_min": 6000, "pool_max": 6009, "shared": false},
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
