//! Workflows and offering accounts together (the offering-accounts issue, part 6): a UserGroup
//! names its offerings; an active User gets an account requested on each; moving to another
//! group requests the new accounts and retires the old; terminating retires them. Against the
//! real binary, on SQLite and (with MUSTER_TEST_DATABASE_URL) PostgreSQL.

use crate::common::Server;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const USER_GROUP: &str = "31892964-6ad1-52eb-8c09-77fba68b51b6";
const USER_INTERNAL: &str = "091035e7-95a1-5997-8286-74a4ad1cc551";

async fn run(s: &Server, workflow: &str, pages: Value) -> Value {
    let r = s
        .post(&format!("/api/processes/{workflow}"), &s.admin_token, pages)
        .await
        .expect(201);
    let pid = r.body["id"].as_str().expect("process id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = s
            .get(&format!("/api/processes/{pid}"), &s.admin_token)
            .await
            .expect(200)
            .body;
        match p["last_status"].as_str() {
            Some("completed") => return p,
            Some("failed" | "aborted" | "suspended") => {
                panic!("{}: {workflow} ended {}: {p}", s.label, p["last_status"])
            }
            _ if Instant::now() > deadline => panic!("{}: {workflow} did not finish: {p}", s.label),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn offering(s: &Server, provider: &str, name: &str) -> String {
    let r = s
        .post(
            "/api/marketplace-provider-offerings/",
            &s.admin_token,
            json!({ "name": name, "provider_uuid": provider }),
        )
        .await
        .expect(201);
    r.body["uuid"].as_str().expect("offering uuid").to_owned()
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

/// The user's accounts: offering uuid → (account uuid, state label).
async fn accounts(s: &Server, user_uuid: &str) -> Vec<(String, String, String)> {
    let r = s
        .get(
            &format!("/api/marketplace-offering-users/?user_uuid={user_uuid}&page_size=100"),
            &s.admin_token,
        )
        .await
        .expect(200);
    let mut v: Vec<(String, String, String)> = r
        .body
        .as_array()
        .expect("a bare array")
        .iter()
        .map(|a| {
            (
                a["offering_uuid"].as_str().unwrap_or("").to_owned(),
                a["uuid"].as_str().unwrap_or("").to_owned(),
                a["state"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

async fn make_ok(s: &Server, account: &str) {
    for action in ["begin_creating", "set_ok"] {
        s.post(
            &format!("/api/marketplace-offering-users/{account}/{action}/"),
            &s.admin_token,
            json!({}),
        )
        .await
        .expect(200);
    }
}

#[tokio::test]
async fn group_offerings_follow_users_through_create_move_and_terminate() {
    for s in Server::all(&[]).await {
        let provider = s
            .post(
                "/api/marketplace-service-providers/",
                &s.admin_token,
                json!({"name": "HPC Centre"}),
            )
            .await
            .expect(201)
            .body["uuid"]
            .as_str()
            .expect("provider uuid")
            .to_owned();
        let o1 = offering(&s, &provider, "Cluster").await;
        let o2 = offering(&s, &provider, "Cloud").await;

        // The group form offers the offerings that exist.
        let page = s
            .post(
                "/api/processes/create_user_group",
                &s.admin_token,
                json!([{"product": USER_GROUP}]),
            )
            .await
            .expect(510);
        let choices = &page.body["form"]["properties"]["offerings"]["items"]["enum"];
        assert!(
            choices
                .as_array()
                .is_some_and(|c| c.contains(&json!(o1)) && c.contains(&json!(o2))),
            "{choices}"
        );
        // An offering that does not exist is a validation error.
        let bad = s
            .post(
                "/api/processes/create_user_group",
                &s.admin_token,
                json!([{"product": USER_GROUP}, {"group_name": "X", "offerings": ["00000000000000000000000000000000"]}]),
            )
            .await
            .expect(400);
        assert_eq!(bad.body["validation_errors"][0]["loc"], json!(["offerings", "0"]));

        let a = group(&s, "Physics", &[&o1]).await;
        let b = group(&s, "Chemistry", &[&o2]).await;
        let domain = s
            .get(&format!("/api/subscriptions/domain-model/{a}"), &s.admin_token)
            .await
            .expect(200);
        assert_eq!(domain.body["user_group"]["offerings"].as_array().map(Vec::len), Some(1));

        // Active in group A: an account is requested on A's offering.
        let created = run(
            &s,
            "create_user",
            json!([{"product": USER_INTERNAL}, {"username": "ada", "user_group_ids": [a], "email": "ada@example.org"}]),
        )
        .await;
        let user_uuid = created["current_state"]["user_uuid"]
            .as_str()
            .expect("user uuid")
            .replace('-', "");
        let sid = created["current_state"]["subscription_id"]
            .as_str()
            .expect("sid")
            .to_owned();
        let acc = accounts(&s, &user_uuid).await;
        assert_eq!(acc.len(), 1, "{}: {acc:?}", s.label);
        assert_eq!((acc[0].0.as_str(), acc[0].2.as_str()), (o1.as_str(), "Requested"));
        make_ok(&s, &acc[0].1).await;

        // Moved to group B: B's account requested, A's (OK) put up for deletion.
        run(
            &s,
            "modify_user",
            json!([{"subscription_id": sid}, {"username": "ada", "age": null, "user_group_ids": [b]}]),
        )
        .await;
        let acc = accounts(&s, &user_uuid).await;
        let state_on = |o: &str| acc.iter().find(|x| x.0 == o).map(|x| x.2.clone());
        assert_eq!(
            state_on(&o1).as_deref(),
            Some("Requested deletion"),
            "{}: {acc:?}",
            s.label
        );
        assert_eq!(state_on(&o2).as_deref(), Some("Requested"), "{}: {acc:?}", s.label);
        let on_o2 = acc
            .iter()
            .find(|x| x.0 == o2)
            .map(|x| x.1.clone())
            .expect("account on o2");
        make_ok(&s, &on_o2).await;

        // Terminated: the account on B's offering is put up for deletion too.
        run(&s, "terminate_user", json!([{"subscription_id": sid}, {}])).await;
        let acc = accounts(&s, &user_uuid).await;
        assert!(acc.iter().all(|x| x.2 == "Requested deletion"), "{}: {acc:?}", s.label);
        assert_eq!(acc.len(), 2);
    }
}
