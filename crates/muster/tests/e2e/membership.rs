//! Group offerings follow membership (the hosting-sites issue, parts 1 and 2): changing a
//! group's offerings changes every active member's accounts in the same step; the validate
//! workflows name each account that disagrees; a modify or the reconcile task repairs drift;
//! returning members get their old account back. Against the real binary, on SQLite and (with
//! MUSTER_TEST_DATABASE_URL) PostgreSQL.

use crate::common::{Resp, Server};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const USER_GROUP: &str = "31892964-6ad1-52eb-8c09-77fba68b51b6";
const USER_INTERNAL: &str = "091035e7-95a1-5997-8286-74a4ad1cc551";
const SETTLED: &[&str] = &["completed", "failed", "aborted", "suspended"];

async fn settle(s: &Server, pid: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let p = s
            .get(&format!("/api/processes/{pid}"), &s.admin_token)
            .await
            .expect(200)
            .body;
        if p["last_status"].as_str().is_some_and(|st| SETTLED.contains(&st)) {
            return p;
        }
        assert!(Instant::now() < deadline, "{}: process did not settle: {p}", s.label);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start(s: &Server, workflow: &str, pages: Value) -> String {
    let r = s
        .post(&format!("/api/processes/{workflow}"), &s.admin_token, pages)
        .await
        .expect(201);
    r.body["id"].as_str().expect("process id").to_owned()
}

async fn run(s: &Server, workflow: &str, pages: Value) -> Value {
    let pid = start(s, workflow, pages).await;
    let p = settle(s, &pid).await;
    assert_eq!(p["last_status"], "completed", "{}: {workflow}: {p}", s.label);
    p
}

/// Runs `workflow`, which must fail; returns the process.
async fn run_failing(s: &Server, workflow: &str, pages: Value) -> Value {
    let pid = start(s, workflow, pages).await;
    let p = settle(s, &pid).await;
    assert_eq!(p["last_status"], "failed", "{}: {workflow}: {p}", s.label);
    p
}

async fn abort(s: &Server, p: &Value) {
    let pid = p["process_id"].as_str().expect("process id");
    s.put(&format!("/api/processes/{pid}/abort"), &s.admin_token, json!({}))
        .await
        .expect(204);
}

async fn provider(s: &Server) -> String {
    s.post(
        "/api/marketplace-service-providers/",
        &s.admin_token,
        json!({"name": "HPC Centre"}),
    )
    .await
    .expect(201)
    .body["uuid"]
        .as_str()
        .expect("provider uuid")
        .to_owned()
}

async fn offering(s: &Server, provider: &str, name: &str) -> String {
    s.post(
        "/api/marketplace-provider-offerings/",
        &s.admin_token,
        json!({ "name": name, "provider_uuid": provider }),
    )
    .await
    .expect(201)
    .body["uuid"]
        .as_str()
        .expect("offering uuid")
        .to_owned()
}

async fn group(s: &Server, name: &str, offerings: &[&str]) -> String {
    let p = run(
        s,
        "create_user_group",
        json!([{"product": USER_GROUP}, {"group_name": name, "offerings": offerings}]),
    )
    .await;
    p["current_state"]["subscription_id"]
        .as_str()
        .expect("group id")
        .to_owned()
}

async fn modify_group(s: &Server, gid: &str, name: &str, offerings: &[&str]) -> Value {
    run(
        s,
        "modify_user_group",
        json!([{"subscription_id": gid}, {"group_name": name, "offerings": offerings}]),
    )
    .await
}

/// Creates `n` users in `gid` (named `{prefix}{i}`), all processes started before any is
/// waited for; returns (subscription id, directory user uuid in hex) per user.
async fn members(s: &Server, gid: &str, prefix: &str, n: usize) -> Vec<(String, String)> {
    let mut pids = Vec::with_capacity(n);
    for i in 0..n {
        pids.push(
            start(
                s,
                "create_user",
                json!([{"product": USER_INTERNAL}, {"username": format!("{prefix}{i}"), "user_group_ids": [gid]}]),
            )
            .await,
        );
    }
    let mut out = Vec::with_capacity(n);
    for pid in pids {
        let p = settle(s, &pid).await;
        assert_eq!(p["last_status"], "completed", "{}: {p}", s.label);
        out.push((
            p["current_state"]["subscription_id"].as_str().expect("sid").to_owned(),
            p["current_state"]["user_uuid"]
                .as_str()
                .expect("user uuid")
                .replace('-', ""),
        ));
    }
    out
}

/// Every account on `offering`: user uuid (hex) → (account uuid, state).
async fn accounts_on(s: &Server, offering: &str) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for page in 1.. {
        let r = s
            .get(
                &format!("/api/marketplace-offering-users/?offering_uuid={offering}&page_size=300&page={page}"),
                &s.admin_token,
            )
            .await
            .expect(200);
        let items = r.body.as_array().cloned().unwrap_or_default();
        for a in &items {
            out.insert(
                a["user_uuid"].as_str().unwrap_or("").to_owned(),
                (
                    a["uuid"].as_str().unwrap_or("").to_owned(),
                    a["state"].as_str().unwrap_or("").to_owned(),
                ),
            );
        }
        if items.len() < 300 {
            break;
        }
    }
    out
}

fn states(accounts: &BTreeMap<String, (String, String)>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (_, st) in accounts.values() {
        *out.entry(st.clone()).or_default() += 1;
    }
    out
}

async fn act(s: &Server, account: &str, action: &str) -> Resp {
    s.post(
        &format!("/api/marketplace-offering-users/{account}/{action}/"),
        &s.admin_token,
        json!({}),
    )
    .await
}

async fn set_username(s: &Server, account: &str, username: &str) {
    s.patch(
        &format!("/api/marketplace-offering-users/{account}/"),
        &s.admin_token,
        json!({"username": username}),
    )
    .await
    .expect(200);
}

async fn account(s: &Server, uuid: &str) -> Value {
    s.get(&format!("/api/marketplace-offering-users/{uuid}/"), &s.admin_token)
        .await
        .expect(200)
        .body
}

const N: usize = 1000;

#[tokio::test]
async fn group_offerings_follow_a_thousand_members_and_drift_is_found_and_repaired() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let p = provider(&s).await;
        let (o1, o2, o3) = (
            offering(&s, &p, "Cluster").await,
            offering(&s, &p, "Cloud").await,
            offering(&s, &p, "Archive").await,
        );
        let gid = group(&s, "Physics", &[&o1]).await;
        let users = members(&s, &gid, "m", N).await;
        let all: BTreeSet<String> = users.iter().map(|u| u.1.clone()).collect();
        let on1 = accounts_on(&s, &o1).await;
        assert_eq!(on1.len(), N, "{l}");

        // A few accounts move on: two are made (OK), one is being made (Creating).
        let ok: Vec<String> = users[..2].iter().map(|u| on1[&u.1].0.clone()).collect();
        for a in &ok {
            act(&s, a, "begin_creating").await.expect(200);
            set_username(&s, a, &format!("ok{}", &a[..6])).await;
        }
        let creating = on1[&users[2].1].0.clone();
        act(&s, &creating, "begin_creating").await.expect(200);
        // One member leaves: their account, never made, is discarded; after that, terminated
        // members are left alone.
        let (gone_sid, gone) = users[N - 1].clone();
        let t = run(&s, "terminate_user", json!([{"subscription_id": gone_sid}, {}])).await;
        assert_eq!(t["current_state"]["offering_accounts"]["discarded"], 1, "{l}: {t}");
        let on1_gone = accounts_on(&s, &o1).await[&gone].1.clone();
        assert_eq!(on1_gone, "Deleted", "{l}");
        let active: BTreeSet<String> = all.iter().filter(|u| **u != gone).cloned().collect();

        // Before version 2, a group's offerings changed nothing for its members. Now: o1 is
        // dropped, o2 and o3 added, in the one step.
        let p2 = modify_group(&s, &gid, "Physics", &[&o2, &o3]).await;
        let report = &p2["current_state"]["offering_accounts"];
        assert_eq!(report["requested"], json!(2 * (N - 1)), "{l}: {report}");
        assert_eq!(report["deletion_requested"], json!(2), "{l}: {report}");
        assert_eq!(report["withdrawn"], json!(1), "{l}: {report}");
        assert_eq!(report["discarded"], json!(N - 4), "{l}: {report}");
        for o in [&o2, &o3] {
            let on = accounts_on(&s, o).await;
            let users_on: BTreeSet<String> = on.keys().cloned().collect();
            assert_eq!(users_on, active, "{l}: every active member, and only they, on {o}");
            assert_eq!(states(&on), BTreeMap::from([("Requested".to_owned(), N - 1)]), "{l}");
        }
        let on1 = accounts_on(&s, &o1).await;
        for a in &ok {
            assert_eq!(account(&s, a).await["state"], "Requested deletion", "{l}");
        }
        assert_eq!(account(&s, &creating).await["state"], "Requested deletion", "{l}");
        assert_eq!(
            states(&on1),
            BTreeMap::from([("Deleted".to_owned(), N - 3), ("Requested deletion".to_owned(), 3),]),
            "{l}"
        );
        // The named operations are in the history, with who did them.
        let h = s
            .get(
                &format!("/api/marketplace-offering-users/{creating}/history/"),
                &s.admin_token,
            )
            .await
            .expect(200)
            .body;
        let actions: Vec<&str> = h
            .as_array()
            .expect("history")
            .iter()
            .filter_map(|e| e["action"].as_str())
            .collect();
        assert!(actions.contains(&"withdraw"), "{l}: {h}");
        let discarded = &on1[&users[3].1].0;
        let audit = s
            .audit(&format!("action=offering_user.discard&target={discarded}"))
            .await;
        assert_eq!(audit["total"], 1, "{l}: {audit}");

        // A second modify with the same offerings changes nothing.
        let again = modify_group(&s, &gid, "Physics", &[&o2, &o3]).await;
        let report = &again["current_state"]["offering_accounts"];
        for k in [
            "requested",
            "restored",
            "rerequested",
            "deletion_requested",
            "discarded",
            "withdrawn",
        ] {
            assert_eq!(report[k], json!(0), "{l}: {k}: {report}");
        }
        run(&s, "validate_user_group", json!([{"subscription_id": gid}])).await;

        // Drift: an operator deletes one member's account on o2. Both validations name it.
        let (victim_sid, victim) = users[10].clone();
        let on2 = accounts_on(&s, &o2).await;
        s.delete(
            &format!("/api/marketplace-offering-users/{}/", on2[&victim].0),
            &s.admin_token,
        )
        .await
        .expect(204);
        let failed = run_failing(&s, "validate_user_group", json!([{"subscription_id": gid}])).await;
        let reason = failed["failed_reason"].as_str().unwrap_or("");
        assert!(
            reason.contains(&format!("user {victim} has no account on offering {o2}")),
            "{l}: {reason}"
        );
        abort(&s, &failed).await;
        let failed = run_failing(&s, "validate_user", json!([{"subscription_id": victim_sid}])).await;
        let reason = failed["failed_reason"].as_str().unwrap_or("");
        assert!(
            reason.contains(&format!("user {victim} has no account on offering {o2}")),
            "{l}: {reason}"
        );
        abort(&s, &failed).await;
        // A modify of the group brings it back.
        let fixed = modify_group(&s, &gid, "Physics", &[&o2, &o3]).await;
        assert_eq!(
            fixed["current_state"]["offering_accounts"]["requested"],
            json!(1),
            "{l}"
        );
        run(&s, "validate_user_group", json!([{"subscription_id": gid}])).await;
        run(&s, "validate_user", json!([{"subscription_id": victim_sid}])).await;

        // Drift again; the reconcile task repairs it and says what it changed.
        let on3 = accounts_on(&s, &o3).await;
        s.delete(
            &format!("/api/marketplace-offering-users/{}/", on3[&victim].0),
            &s.admin_token,
        )
        .await
        .expect(204);
        let task = run(&s, "task_reconcile_offering_accounts", json!([])).await;
        let st = &task["current_state"];
        assert_eq!(st["groups_changed"].as_array().map(Vec::len), Some(1), "{l}: {st}");
        assert_eq!(st["groups_changed"][0]["subscription_id"], json!(gid), "{l}: {st}");
        assert_eq!(st["offering_accounts"]["requested"], json!(1), "{l}: {st}");
        let task = run(&s, "task_reconcile_offering_accounts", json!([])).await;
        assert_eq!(
            task["current_state"]["groups_changed"],
            json!([]),
            "{l}: nothing left to change"
        );
        let on3 = accounts_on(&s, &o3).await;
        assert_eq!(on3.keys().cloned().collect::<BTreeSet<_>>(), active, "{l}");
    }
}

async fn user_in(s: &Server, gid: &str, username: &str) -> (String, String) {
    let p = run(
        s,
        "create_user",
        json!([{"product": USER_INTERNAL}, {"username": username, "user_group_ids": [gid]}]),
    )
    .await;
    (
        p["current_state"]["subscription_id"].as_str().expect("sid").to_owned(),
        p["current_state"]["user_uuid"]
            .as_str()
            .expect("user uuid")
            .replace('-', ""),
    )
}

async fn move_to(s: &Server, sid: &str, username: &str, gid: &str) -> Value {
    run(
        s,
        "modify_user",
        json!([{"subscription_id": sid}, {"username": username, "age": null, "user_group_ids": [gid]}]),
    )
    .await
}

/// The history's (action, from, to), oldest first.
async fn history(s: &Server, account: &str) -> Vec<(String, String, String)> {
    s.get(
        &format!("/api/marketplace-offering-users/{account}/history/"),
        &s.admin_token,
    )
    .await
    .expect(200)
    .body
    .as_array()
    .expect("history")
    .iter()
    .map(|e| {
        (
            e["action"].as_str().unwrap_or("").to_owned(),
            e["from_state"].as_str().unwrap_or("").to_owned(),
            e["to_state"].as_str().unwrap_or("").to_owned(),
        )
    })
    .collect()
}

/// Waits until the `offering_users` stream holds an event for `account` whose action is
/// `action` (PostgreSQL numbers events just after they commit).
async fn event_for(s: &Server, account: &str, action: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = s
            .get("/api/events?stream=offering_users&after=0&limit=10000", &s.admin_token)
            .await
            .expect(200)
            .body;
        if let Some(e) = page["events"].as_array().and_then(|evs| {
            evs.iter()
                .find(|e| e["subject"] == account && e["data"]["action"] == action)
                .cloned()
        }) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "{}: no {action} event for {account}",
            s.label
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn returning_members_get_their_accounts_back() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let p = provider(&s).await;
        let (oa, ob) = (offering(&s, &p, "Cluster").await, offering(&s, &p, "Cloud").await);
        let (ga, gb) = (group(&s, "A", &[&oa]).await, group(&s, "B", &[&ob]).await);
        let (sid, user) = user_in(&s, &ga, "ada").await;
        let acc = accounts_on(&s, &oa).await[&user].0.clone();
        act(&s, &acc, "begin_creating").await.expect(200);
        set_username(&s, &acc, "ada_hpc").await;

        // Each way out of the account, and back: the member moves to B and returns to A.
        for agent in [&[][..], &["set_deleting"][..], &["set_error_deleting"][..]] {
            move_to(&s, &sid, "ada", &gb).await;
            assert_eq!(account(&s, &acc).await["state"], "Requested deletion", "{l}");
            for a in agent {
                act(&s, &acc, a).await.expect(200);
            }
            let before = account(&s, &acc).await["state"].as_str().unwrap_or("").to_owned();
            let p = move_to(&s, &sid, "ada", &ga).await;
            assert_eq!(p["current_state"]["offering_accounts"]["restored"], 1, "{l}: {p}");
            let a = account(&s, &acc).await;
            assert_eq!(
                (a["state"].as_str(), a["username"].as_str()),
                (Some("OK"), Some("ada_hpc")),
                "{l}"
            );
            let h = history(&s, &acc).await;
            assert_eq!(
                h.last(),
                Some(&("restore".to_owned(), before.clone(), "OK".to_owned())),
                "{l}: {h:?}"
            );
        }
        // Its own audit record and event.
        let audit = s.audit(&format!("action=offering_user.restore&target={acc}")).await;
        assert_eq!(audit["total"], 3, "{l}: {audit}");
        let e = event_for(&s, &acc, "restore").await;
        assert_eq!(e["kind"], "offering_user.updated", "{l}: {e}");
        assert_eq!(e["data"]["state"], "OK", "{l}: {e}");

        // Deleted at the site: requested anew under the same name.
        move_to(&s, &sid, "ada", &gb).await;
        act(&s, &acc, "set_deleting").await.expect(200);
        act(&s, &acc, "set_deleted").await.expect(200);
        let p = move_to(&s, &sid, "ada", &ga).await;
        assert_eq!(p["current_state"]["offering_accounts"]["rerequested"], 1, "{l}: {p}");
        let a = account(&s, &acc).await;
        assert_eq!(
            (a["state"].as_str(), a["username"].as_str()),
            (Some("Requested"), Some("ada_hpc")),
            "{l}"
        );
        assert_eq!(
            history(&s, &acc).await.last(),
            Some(&("rerequest".to_owned(), "Deleted".to_owned(), "Requested".to_owned())),
            "{l}"
        );
        let audit = s.audit(&format!("action=offering_user.rerequest&target={acc}")).await;
        assert_eq!(audit["total"], 1, "{l}: {audit}");
        event_for(&s, &acc, "rerequest").await;
        // The site makes it again; the group drops the offering and takes it back: restored.
        act(&s, &acc, "begin_creating").await.expect(200);
        act(&s, &acc, "set_ok").await.expect(200);
        modify_group(&s, &ga, "A", &[]).await;
        assert_eq!(account(&s, &acc).await["state"], "Requested deletion", "{l}");
        let p = modify_group(&s, &ga, "A", &[&oa]).await;
        assert_eq!(p["current_state"]["offering_accounts"]["restored"], 1, "{l}: {p}");
        assert_eq!(account(&s, &acc).await["state"], "OK", "{l}");
        // Only one account per person per offering, all along.
        assert_eq!(accounts_on(&s, &oa).await.len(), 1, "{l}");
        run(&s, "validate_user", json!([{"subscription_id": sid}])).await;
    }
}

/// A member returns while the site agent claims the account's deletion: whichever commits
/// first, the account ends OK under its old name, and the agent either claimed it before the
/// restore (its `set_deleting` is in the history, before `restore`) or was told to back off.
#[tokio::test]
async fn a_rejoin_racing_the_agents_set_deleting_ends_ok() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let p = provider(&s).await;
        let (oa, ob) = (offering(&s, &p, "Cluster").await, offering(&s, &p, "Cloud").await);
        let (ga, gb) = (group(&s, "A", &[&oa]).await, group(&s, "B", &[&ob]).await);
        let (sid, user) = user_in(&s, &ga, "ada").await;
        let acc = accounts_on(&s, &oa).await[&user].0.clone();
        act(&s, &acc, "begin_creating").await.expect(200);
        set_username(&s, &acc, "ada_hpc").await;
        let (mut claimed, mut refused) = (0, 0);
        for _ in 0..8 {
            move_to(&s, &sid, "ada", &gb).await;
            assert_eq!(account(&s, &acc).await["state"], "Requested deletion", "{l}");
            let (_, agent) = tokio::join!(move_to(&s, &sid, "ada", &ga), act(&s, &acc, "set_deleting"));
            let a = account(&s, &acc).await;
            assert_eq!(
                (a["state"].as_str(), a["username"].as_str()),
                (Some("OK"), Some("ada_hpc")),
                "{l}"
            );
            let h = history(&s, &acc).await;
            let tail: Vec<&str> = h[h.len() - 2..].iter().map(|e| e.0.as_str()).collect();
            match agent.status.as_u16() {
                200 => {
                    claimed += 1;
                    assert_eq!(tail, ["set_deleting", "restore"], "{l}: {h:?}");
                    assert_eq!(h.last().map(|e| e.1.as_str()), Some("Deleting"), "{l}");
                }
                400 => {
                    refused += 1;
                    assert_eq!(tail, ["request_deletion", "restore"], "{l}: {h:?}");
                }
                other => panic!("{l}: set_deleting answered {other}: {}", agent.body),
            }
        }
        assert_eq!(claimed + refused, 8, "{l}");
    }
}

async fn offering_with(s: &Server, provider: &str, name: &str, extra: Value) -> String {
    let mut body = json!({ "name": name, "provider_uuid": provider });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    s.post("/api/marketplace-provider-offerings/", &s.admin_token, body)
        .await
        .expect(201)
        .body["uuid"]
        .as_str()
        .expect("offering uuid")
        .to_owned()
}

/// Requests an account for a directory user as the admin: (uuid, state, username).
async fn request(s: &Server, offering: &str, user: &Value) -> (String, String, String) {
    let a = s
        .post(
            "/api/marketplace-offering-users/",
            &s.admin_token,
            json!({"offering_uuid": offering, "user_uuid": user["uuid"]}),
        )
        .await
        .expect(201)
        .body;
    (
        a["uuid"].as_str().unwrap_or("").to_owned(),
        a["state"].as_str().unwrap_or("").to_owned(),
        a["username"].as_str().unwrap_or("").to_owned(),
    )
}

fn login_name(name: &str) -> bool {
    let mut c = name.chars();
    c.next().is_some_and(|f| f.is_ascii_lowercase())
        && name.len() <= 32
        && c.all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || "_.-".contains(x))
}

#[tokio::test]
async fn username_policies_give_unique_login_names_that_survive_a_return() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let p = provider(&s).await;
        // A prefix that could not start a login name is refused, and nothing is created.
        let bad = s
            .post(
                "/api/marketplace-provider-offerings/",
                &s.admin_token,
                json!({"name": "Bad", "provider_uuid": p, "username_generation_policy": "anonymized", "username_anonymized_prefix": "1x"}),
            )
            .await
            .expect(400);
        assert_eq!(
            bad.body["errors"][0]["field"], "username_anonymized_prefix",
            "{l}: {}",
            bad.body
        );
        let anon = offering_with(
            &s,
            &p,
            "Anon",
            json!({"username_generation_policy": "anonymized", "username_anonymized_prefix": "hpc_"}),
        )
        .await;
        let full = offering_with(&s, &p, "Full", json!({"username_generation_policy": "full_name"})).await;
        let claim = offering_with(
            &s,
            &p,
            "Claim",
            json!({"username_generation_policy": "identity_claim", "username_identity_claim": "email_local_part"}),
        )
        .await;
        let o = s
            .get(&format!("/api/marketplace-provider-offerings/{anon}/"), &s.admin_token)
            .await
            .expect(200)
            .body;
        assert_eq!(
            (&o["username_generation_policy"], &o["username_anonymized_prefix"]),
            (&json!("anonymized"), &json!("hpc_")),
            "{l}: {o}"
        );

        // full_name: ASCII, with a suffix when taken; a name with nothing usable waits for the site.
        let people = [
            ("elodie1", "Élodie", "Ñúñez"),
            ("elodie2", "Elodie", "Nunez"),
            ("jorgen", "Jørgen", "Straße"),
            ("li", "李", "王"),
        ];
        let mut got = Vec::new();
        for (u, f, last) in people {
            let user = s
                .create_user(
                    json!({"username": u, "first_name": f, "last_name": last, "email": format!("{u}@example.org")}),
                )
                .await;
            got.push(request(&s, &full, &user).await);
        }
        let names: Vec<(&str, &str)> = got.iter().map(|g| (g.1.as_str(), g.2.as_str())).collect();
        assert_eq!(
            names,
            [
                ("OK", "elodie_nunez"),
                ("OK", "elodie_nunez_01"),
                ("OK", "jorgen_strasse"),
                ("Requested", ""),
            ],
            "{l}"
        );

        // identity_claim: the e-mail's local part, lower-cased.
        let ada = s
            .create_user(json!({"username": "ada", "email": "Ada.L@example.org"}))
            .await;
        assert_eq!(request(&s, &claim, &ada).await.2, "ada.l", "{l}");

        // anonymized: many at once, through the API, all distinct.
        let client = reqwest::Client::new();
        let mut users = Vec::new();
        for i in 0..20 {
            users.push(s.create_user(json!({"username": format!("anon{i}")})).await["uuid"].clone());
        }
        let mut set = tokio::task::JoinSet::new();
        for u in users {
            let req = client
                .post(s.url("/api/marketplace-offering-users/"))
                .bearer_auth(&s.admin_token)
                .json(&json!({"offering_uuid": anon, "user_uuid": u}));
            set.spawn(async move {
                let r = req.send().await.expect("send");
                assert_eq!(r.status().as_u16(), 201);
                r.json::<Value>().await.expect("json")["username"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            });
        }
        let mut anon_names = BTreeSet::new();
        while let Some(n) = set.join_next().await {
            let n = n.expect("task");
            assert!(login_name(&n) && n.starts_with("hpc_"), "{l}: {n}");
            assert!(anon_names.insert(n.clone()), "{l}: {n} given twice");
        }
        assert_eq!(anon_names.len(), 20, "{l}");
        assert_eq!(
            anon_names.last().map(String::as_str),
            Some("hpc_00020"),
            "{l}: gaps are fine, but there are none here"
        );

        // Through the workflows: a group on the anonymized offering names its members; the name
        // survives a move away and back (restore).
        let (ga, gb) = (group(&s, "A", &[&anon]).await, group(&s, "B", &[]).await);
        let (sid, user) = user_in(&s, &ga, "grace").await;
        let (acc, (_, st)) = accounts_on(&s, &anon)
            .await
            .remove(&user)
            .map(|x| (x.0.clone(), x))
            .expect("account");
        assert_eq!(st, "OK", "{l}");
        let name = account(&s, &acc).await["username"].as_str().unwrap_or("").to_owned();
        assert_eq!(name, "hpc_00021", "{l}");
        move_to(&s, &sid, "grace", &gb).await;
        move_to(&s, &sid, "grace", &ga).await;
        let a = account(&s, &acc).await;
        assert_eq!(
            (a["state"].as_str(), a["username"].as_str()),
            (Some("OK"), Some(name.as_str())),
            "{l}"
        );
    }
}

/// A returning member whose deleted account's name another account took in the meantime gets
/// the account requested anew without a name (the site names it), not a failing workflow.
#[tokio::test]
async fn a_rerequest_whose_name_was_taken_waits_for_the_site_to_name_it() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let p = provider(&s).await;
        let (oa, ob) = (offering(&s, &p, "Cluster").await, offering(&s, &p, "Cloud").await);
        let (ga, gb) = (group(&s, "A", &[&oa]).await, group(&s, "B", &[&ob]).await);
        let (sid, user) = user_in(&s, &ga, "ada").await;
        let acc = accounts_on(&s, &oa).await[&user].0.clone();
        act(&s, &acc, "begin_creating").await.expect(200);
        set_username(&s, &acc, "ada_hpc").await;
        move_to(&s, &sid, "ada", &gb).await;
        act(&s, &acc, "set_deleting").await.expect(200);
        act(&s, &acc, "set_deleted").await.expect(200);
        // The name is free again, and the site gives it to someone else.
        let bob = s.create_user(json!({"username": "bob"})).await;
        s.post(
            "/api/marketplace-offering-users/",
            &s.admin_token,
            json!({"offering_uuid": oa, "user_uuid": bob["uuid"], "username": "ada_hpc"}),
        )
        .await
        .expect(201);
        let p = move_to(&s, &sid, "ada", &ga).await;
        assert_eq!(p["current_state"]["offering_accounts"]["rerequested"], 1, "{l}: {p}");
        let a = account(&s, &acc).await;
        assert_eq!(
            (a["state"].as_str(), &a["username"]),
            (Some("Requested"), &Value::Null),
            "{l}: {a}"
        );
    }
}

#[tokio::test]
async fn accounts_get_unix_identities_from_their_offerings_pools() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let p = provider(&s).await;
        let posix = |uid: (i64, i64), shared: Option<i64>, home: &str| {
            json!({"posix_settings": {"uid_min": uid.0, "uid_max": uid.1, "gid_min": 6000, "gid_max": 6999,
                "home_prefix": home, "login_shell": "/bin/bash", "shared_gid": shared}})
        };
        // Bad settings are refused, and nothing is created.
        let before = s
            .get("/api/marketplace-provider-offerings/", &s.admin_token)
            .await
            .expect(200)
            .body;
        for bad in [posix((5002, 5000), None, "/home/"), posix((5000, 5002), None, "home")] {
            let mut body = json!({"name": "Bad", "provider_uuid": p});
            if let (Some(b), Some(e)) = (body.as_object_mut(), bad.as_object()) {
                b.extend(e.clone());
            }
            s.post("/api/marketplace-provider-offerings/", &s.admin_token, body)
                .await
                .expect(400);
        }
        let after = s
            .get("/api/marketplace-provider-offerings/", &s.admin_token)
            .await
            .expect(200)
            .body;
        assert_eq!(before, after, "{l}");

        let mut extra = posix((5000, 5002), None, "/home/");
        extra["username_generation_policy"] = json!("waldur_username");
        let small = offering_with(&s, &p, "Small", extra).await;
        let (ga, gb) = (group(&s, "A", &[&small]).await, group(&s, "B", &[]).await);
        let mut seen = Vec::new();
        let mut first = None;
        for name in ["ann", "bob", "cy"] {
            let (sid, user) = user_in(&s, &ga, name).await;
            let acc = accounts_on(&s, &small).await[&user].0.clone();
            let a = account(&s, &acc).await;
            assert_eq!(a["home_directory"], format!("/home/{name}"), "{l}: {a}");
            assert_eq!(a["login_shell"], "/bin/bash", "{l}");
            assert_eq!(a["backend_metadata"]["uidnumber"], a["uidnumber"], "{l}: {a}");
            assert_eq!(a["backend_metadata"]["primarygroup"], a["primarygroup"], "{l}: {a}");
            assert_eq!(a["backend_metadata"]["homeDir"], a["home_directory"], "{l}: {a}");
            assert_eq!(a["backend_metadata"]["loginShell"], "/bin/bash", "{l}: {a}");
            seen.push((
                a["uidnumber"].as_i64().unwrap_or(0),
                a["primarygroup"].as_i64().unwrap_or(0),
            ));
            first.get_or_insert((sid, acc));
        }
        assert_eq!(seen, [(5000, 6000), (5001, 6001), (5002, 6002)], "{l}");
        // The pool is full: the next account is refused with a clear error, and nothing is made.
        let dan = s.create_user(json!({"username": "dan"})).await;
        let r = s
            .post(
                "/api/marketplace-offering-users/",
                &s.admin_token,
                json!({"offering_uuid": small, "user_uuid": dan["uuid"]}),
            )
            .await
            .expect_problem(409, "posix_pool_full");
        assert!(
            r.body["detail"]
                .as_str()
                .unwrap_or("")
                .contains("uid pool (5000–5002) is full"),
            "{l}: {}",
            r.body
        );
        assert_eq!(accounts_on(&s, &small).await.len(), 3, "{l}");
        // A returning member keeps their uid.
        let (sid, acc) = first.expect("first member");
        move_to(&s, &sid, "ann", &gb).await;
        move_to(&s, &sid, "ann", &ga).await;
        let a = account(&s, &acc).await;
        assert_eq!(
            (a["state"].as_str(), a["uidnumber"].as_i64()),
            (Some("OK"), Some(5000)),
            "{l}: {a}"
        );

        // A shared primary group; the home directory follows the name the site gives.
        let shared = offering_with(&s, &p, "Shared", posix((7000, 7999), Some(100), "/scratch/")).await;
        let mut set = tokio::task::JoinSet::new();
        let client = reqwest::Client::new();
        for i in 0..20 {
            let u = s.create_user(json!({"username": format!("p{i}")})).await["uuid"].clone();
            let req = client
                .post(s.url("/api/marketplace-offering-users/"))
                .bearer_auth(&s.admin_token)
                .json(&json!({"offering_uuid": shared, "user_uuid": u}));
            set.spawn(async move {
                let r = req.send().await.expect("send");
                assert_eq!(r.status().as_u16(), 201);
                r.json::<Value>().await.expect("json")
            });
        }
        let mut uids = BTreeSet::new();
        let mut one = String::new();
        while let Some(a) = set.join_next().await {
            let a = a.expect("task");
            assert_eq!(a["primarygroup"], 100, "{l}: {a}");
            assert_eq!(a["home_directory"], Value::Null, "{l}: no name yet: {a}");
            assert!(
                uids.insert(a["uidnumber"].as_i64().unwrap_or(0)),
                "{l}: uid given twice: {a}"
            );
            one = a["uuid"].as_str().unwrap_or("").to_owned();
        }
        assert_eq!(uids.len(), 20, "{l}");
        assert!(uids.iter().all(|u| (7000..=7999).contains(u)), "{l}: {uids:?}");
        set_username(&s, &one, "pat").await;
        let a = account(&s, &one).await;
        assert_eq!(a["home_directory"], "/scratch/pat", "{l}: {a}");
        assert_eq!(a["backend_metadata"]["homeDir"], "/scratch/pat", "{l}: {a}");
    }
}
