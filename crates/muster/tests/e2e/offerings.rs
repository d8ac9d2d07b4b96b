//! End-to-end tests of the offering-account API against the real binary, on every database:
//! the seed's two practical examples, the deletion flow, both error-recovery paths, every
//! invalid transition of the table, racing agents, bad input, permissions, listing and the
//! event stream.

use crate::common::{Resp, Server};
use muster_core::offering::lifecycle::{self, AccountState, Action};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const BASE: &str = "/api/marketplace-offering-users/";
const PASSWORD: &str = "Sturdy-Kettle-42";

/// How a test authenticates.
#[derive(Clone, Copy)]
enum Cred<'a> {
    Bearer(&'a str),
    Token(&'a str),
}

async fn call(s: &Server, method: Method, path: &str, cred: Cred<'_>, body: Option<Value>) -> Resp {
    let mut req = s.request(method, path);
    req = match cred {
        Cred::Bearer(t) => req.bearer_auth(t),
        Cred::Token(k) => req.header("authorization", format!("Token {k}")),
    };
    if let Some(b) = body {
        req = req.json(&b);
    }
    s.send(req).await
}

/// One provider with an offering, an agent token and a person with a session.
struct Site {
    provider: String,
    offering: String,
    token: String,
}

async fn site(s: &Server, name: &str) -> Site {
    let admin = Cred::Bearer(&s.admin_token);
    let p = call(
        s,
        Method::POST,
        "/api/marketplace-service-providers/",
        admin,
        Some(json!({"name": name})),
    )
    .await
    .expect(201);
    let provider = p.body["uuid"].as_str().expect("provider uuid").to_owned();
    let o = call(
        s,
        Method::POST,
        "/api/marketplace-provider-offerings/",
        admin,
        Some(json!({"name": format!("{name} HPC"), "provider_uuid": provider, "type": "Marketplace.Slurm"})),
    )
    .await
    .expect(201);
    let offering = o.body["uuid"].as_str().expect("offering uuid").to_owned();
    let t = call(
        s,
        Method::POST,
        &format!("/api/marketplace-service-providers/{provider}/api_tokens/"),
        admin,
        Some(json!({"name": format!("{name}-agent")})),
    )
    .await
    .expect(201);
    let token = t.body["key"].as_str().expect("key").to_owned();
    Site {
        provider,
        offering,
        token,
    }
}

/// A directory user (uuid, session token).
async fn person(s: &Server, username: &str) -> (String, String) {
    let (user, token) = s.user_with_session(username, PASSWORD).await;
    (user["uuid"].as_str().expect("user uuid").to_owned(), token)
}

/// A new account for a new person on `site`'s offering, created by the agent.
async fn account(s: &Server, site: &Site, username: &str) -> Value {
    let user = s.create_user(json!({"username": username})).await;
    let r = call(
        s,
        Method::POST,
        BASE,
        Cred::Token(&site.token),
        Some(json!({"offering_uuid": site.offering, "user_uuid": user["uuid"]})),
    )
    .await
    .expect(201);
    assert_eq!(r.body["state"], "Requested", "{}", s.label);
    r.body
}

async fn act(s: &Server, cred: Cred<'_>, uuid: &str, action: &str, body: Option<Value>) -> Resp {
    call(s, Method::POST, &format!("{BASE}{uuid}/{action}/"), cred, body).await
}

async fn get(s: &Server, cred: Cred<'_>, uuid: &str) -> Value {
    call(s, Method::GET, &format!("{BASE}{uuid}/"), cred, None)
        .await
        .expect(200)
        .body
}

async fn history(s: &Server, cred: Cred<'_>, uuid: &str) -> Vec<Value> {
    call(s, Method::GET, &format!("{BASE}{uuid}/history/"), cred, None)
        .await
        .expect(200)
        .body
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn uuid_of(v: &Value) -> String {
    v["uuid"].as_str().expect("uuid").to_owned()
}

/// The actions that lead from `Requested` to `state`.
fn path_to(state: AccountState) -> Vec<Action> {
    use Action::*;
    match state {
        AccountState::Requested => vec![],
        AccountState::Creating => vec![BeginCreating],
        AccountState::PendingAccountLinking => vec![BeginCreating, SetPendingAccountLinking],
        AccountState::PendingAdditionalValidation => vec![BeginCreating, SetPendingAdditionalValidation],
        AccountState::Ok => vec![SetOk],
        AccountState::DeletionRequested => vec![SetOk, RequestDeletion],
        AccountState::Deleting => vec![SetOk, RequestDeletion, SetDeleting],
        AccountState::Deleted => vec![SetOk, RequestDeletion, SetDeleting, SetDeleted],
        AccountState::ErrorCreating => vec![SetErrorCreating],
        AccountState::ErrorDeleting => vec![SetOk, RequestDeletion, SetErrorDeleting],
    }
}

/// Reads the `offering_users` stream as `cred` until `pred` holds for some event.
async fn wait_for_event(s: &Server, cred: Cred<'_>, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = call(
            s,
            Method::GET,
            "/api/events?stream=offering_users&after=0&limit=1000",
            cred,
            None,
        )
        .await
        .expect(200);
        let events = page.body["events"].as_array().cloned().unwrap_or_default();
        if events.iter().any(&pred) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "{}: event did not appear: {}",
            s.label,
            page.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The seed's practical examples, deletion and recovery
// ---------------------------------------------------------------------------------------------

/// Example 1: standard HPC account creation, exactly as the seed's curl commands.
#[tokio::test]
async fn example_standard_hpc_account_creation() {
    for s in Server::all(&[]).await {
        let site = site(&s, "LUMI").await;
        let agent = Cred::Token(&site.token);
        let a = account(&s, &site, "hpc-alice").await;
        let id = uuid_of(&a);
        assert_eq!(id.len(), 32, "{}: Waldur writes uuids as hex without hyphens", s.label);

        let r = act(&s, agent, &id, "begin_creating", None).await.expect(200);
        assert_eq!(r.body["state"], "Creating", "{}", s.label);

        let r = act(
            &s,
            agent,
            &id,
            "set_pending_additional_validation",
            Some(json!({
                "comment": "Please verify your institutional affiliation",
                "comment_url": "https://portal.lumi.csc.fi/verify-affiliation"
            })),
        )
        .await
        .expect(200);
        assert_eq!(r.body["state"], "Pending additional validation", "{}", s.label);
        assert_eq!(
            r.body["service_provider_comment"],
            "Please verify your institutional affiliation"
        );
        assert_eq!(
            r.body["service_provider_comment_url"],
            "https://portal.lumi.csc.fi/verify-affiliation"
        );

        let r = call(
            &s,
            Method::PATCH,
            &format!("{BASE}{id}/update_comments/"),
            agent,
            Some(json!({
                "service_provider_comment": "Affiliation verified. Please complete training modules.",
                "service_provider_comment_url": "https://training.lumi.csc.fi/hpc-basics"
            })),
        )
        .await
        .expect(200);
        assert_eq!(
            r.body,
            json!({
                "service_provider_comment": "Affiliation verified. Please complete training modules.",
                "service_provider_comment_url": "https://training.lumi.csc.fi/hpc-basics"
            }),
            "{}",
            s.label
        );
        assert_eq!(get(&s, agent, &id).await["state"], "Pending additional validation");

        let r = act(&s, agent, &id, "set_validation_complete", None).await.expect(200);
        assert_eq!(r.body["state"], "OK", "{}", s.label);
        // Completing validation clears the instructions.
        assert_eq!(r.body["service_provider_comment"], "", "{}", s.label);
        assert_eq!(r.body["service_provider_comment_url"], "", "{}", s.label);

        let h = history(&s, agent, &id).await;
        let steps: Vec<(&str, Value, &str)> = h
            .iter()
            .map(|e| {
                (
                    e["action"].as_str().unwrap_or(""),
                    e["from_state"].clone(),
                    e["to_state"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            steps,
            vec![
                ("create", Value::Null, "Requested"),
                ("begin_creating", json!("Requested"), "Creating"),
                (
                    "set_pending_additional_validation",
                    json!("Creating"),
                    "Pending additional validation"
                ),
                (
                    "update_comments",
                    json!("Pending additional validation"),
                    "Pending additional validation"
                )
                    .clone(),
                ("set_validation_complete", json!("Pending additional validation"), "OK"),
            ]
            .into_iter()
            .filter(|(a, _, _)| *a != "update_comments")
            .collect::<Vec<_>>(),
            "{}: history {h:?}",
            s.label
        );
        let actor = format!("token:{}", "");
        assert!(
            h.iter()
                .skip(1)
                .all(|e| e["actor"].as_str().unwrap_or("").starts_with(&actor)),
            "{}: agent is the actor: {h:?}",
            s.label
        );
        assert_eq!(
            h[2]["comment"], "Please verify your institutional affiliation",
            "{}",
            s.label
        );

        // Each transition is an event on the provider's stream, in order.
        let events = wait_for_event(&s, agent, |e| e["data"]["action"] == "set_validation_complete").await;
        let mine: Vec<&str> = events
            .iter()
            .filter(|e| e["subject"] == id.as_str())
            .map(|e| e["data"]["action"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(
            mine,
            [
                "create",
                "begin_creating",
                "set_pending_additional_validation",
                "update_comments",
                "set_validation_complete"
            ],
            "{}",
            s.label
        );
        let seqs: Vec<i64> = events.iter().filter_map(|e| e["seq"].as_i64()).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{}: {seqs:?}", s.label);
    }
}

/// Example 2: cloud account linking.
#[tokio::test]
async fn example_cloud_account_linking() {
    for s in Server::all(&[]).await {
        let site = site(&s, "CSC cloud").await;
        let agent = Cred::Token(&site.token);
        let id = uuid_of(&account(&s, &site, "cloud-bob").await);
        act(&s, agent, &id, "begin_creating", None).await.expect(200);
        let r = act(
            &s,
            agent,
            &id,
            "set_pending_account_linking",
            Some(json!({
                "comment": "Link your existing cloud account or create new credentials",
                "comment_url": "https://cloud.csc.fi/account-management"
            })),
        )
        .await
        .expect(200);
        assert_eq!(r.body["state"], "Pending account linking", "{}", s.label);
        assert_eq!(
            r.body["service_provider_comment_url"],
            "https://cloud.csc.fi/account-management"
        );
        // The person sees their own account and the instructions.
        let r = act(&s, agent, &id, "set_validation_complete", None).await.expect(200);
        assert_eq!(r.body["state"], "OK", "{}", s.label);
        assert_eq!(r.body["service_provider_comment"], "", "{}", s.label);
        let h = history(&s, agent, &id).await;
        assert_eq!(h.len(), 4, "{}: {h:?}", s.label);
        assert_eq!(h[2]["to_state"], "Pending account linking");
        assert_eq!(h[2]["comment_url"], "https://cloud.csc.fi/account-management");
    }
}

/// Deletion: the agent names the account (PATCH username → OK), deletion is requested, claimed
/// and acknowledged; Deleted is terminal.
#[tokio::test]
async fn deletion_flow() {
    for s in Server::all(&[]).await {
        let site = site(&s, "Deleters").await;
        let agent = Cred::Token(&site.token);
        let id = uuid_of(&account(&s, &site, "del-carol").await);
        act(&s, agent, &id, "begin_creating", None).await.expect(200);
        // The agent completes creation by setting the username.
        let r = call(
            &s,
            Method::PATCH,
            &format!("{BASE}{id}/"),
            agent,
            Some(json!({"username": "carol01"})),
        )
        .await
        .expect(200);
        assert_eq!(
            (r.body["state"].clone(), r.body["username"].clone()),
            (json!("OK"), json!("carol01"))
        );
        // The same username again changes nothing.
        let v = r.body["version"].clone();
        let r = call(
            &s,
            Method::PUT,
            &format!("{BASE}{id}/"),
            agent,
            Some(json!({"username": "carol01"})),
        )
        .await
        .expect(200);
        assert_eq!(r.body["version"], v, "{}: same-name PUT is a no-op", s.label);

        for (action, state) in [
            ("request_deletion", "Requested deletion"),
            ("set_deleting", "Deleting"),
            ("set_deleted", "Deleted"),
        ] {
            let r = act(&s, agent, &id, action, None).await.expect(200);
            assert_eq!(r.body["state"], state, "{}: {action}", s.label);
        }
        for action in Action::ALL {
            act(&s, agent, &id, action.name(), None)
                .await
                .expect_problem(400, "E008001");
        }
        // Comments on a deleted account: 403, as Waldur; runtime state: 400.
        call(
            &s,
            Method::PATCH,
            &format!("{BASE}{id}/update_comments/"),
            agent,
            Some(json!({"service_provider_comment": "x"})),
        )
        .await
        .expect(403);
        act(
            &s,
            agent,
            &id,
            "update_runtime_state",
            Some(json!({"runtime_state": "Active"})),
        )
        .await
        .expect(400);
        // A deleted account keeps its name; the name cannot change.
        call(
            &s,
            Method::PATCH,
            &format!("{BASE}{id}/"),
            agent,
            Some(json!({"username": "other"})),
        )
        .await
        .expect(400);
        let h = history(&s, agent, &id).await;
        let actions: Vec<&str> = h.iter().map(|e| e["action"].as_str().unwrap_or("")).collect();
        assert_eq!(
            actions,
            [
                "create",
                "begin_creating",
                "set_username",
                "request_deletion",
                "set_deleting",
                "set_deleted"
            ],
            "{}",
            s.label
        );
    }
}

/// Both error-recovery paths: a failed creation retried, a failed deletion retried (and one
/// declared fine after all with set_ok).
#[tokio::test]
async fn error_recovery_paths() {
    for s in Server::all(&[]).await {
        let site = site(&s, "Recoverers").await;
        let agent = Cred::Token(&site.token);

        // Creation error → begin_creating again → OK.
        let id = uuid_of(&account(&s, &site, "err-dave").await);
        act(&s, agent, &id, "begin_creating", None).await.expect(200);
        let r = act(&s, agent, &id, "set_error_creating", None).await.expect(200);
        assert_eq!(r.body["state"], "Error creating");
        let r = act(&s, agent, &id, "begin_creating", None).await.expect(200);
        assert_eq!(r.body["state"], "Creating");
        let r = act(&s, agent, &id, "set_ok", None).await.expect(200);
        assert_eq!(r.body["state"], "OK", "{}", s.label);

        // Deletion error → set_deleting again → Deleted.
        act(&s, agent, &id, "request_deletion", None).await.expect(200);
        act(&s, agent, &id, "set_deleting", None).await.expect(200);
        let r = act(&s, agent, &id, "set_error_deleting", None).await.expect(200);
        assert_eq!(r.body["state"], "Error deleting");
        let r = act(&s, agent, &id, "set_deleting", None).await.expect(200);
        assert_eq!(r.body["state"], "Deleting");
        let r = act(&s, agent, &id, "set_deleted", None).await.expect(200);
        assert_eq!(r.body["state"], "Deleted", "{}", s.label);

        // Error deleting → set_ok (the account is fine after all); Error creating straight to
        // a pending state.
        let id = uuid_of(&account(&s, &site, "err-erin").await);
        act(&s, agent, &id, "set_ok", None).await.expect(200);
        act(&s, agent, &id, "request_deletion", None).await.expect(200);
        act(&s, agent, &id, "set_error_deleting", None).await.expect(200);
        let r = act(&s, agent, &id, "set_ok", None).await.expect(200);
        assert_eq!(r.body["state"], "OK", "{}", s.label);
        let id = uuid_of(&account(&s, &site, "err-frank").await);
        act(&s, agent, &id, "set_error_creating", None).await.expect(200);
        let r = act(
            &s,
            agent,
            &id,
            "set_pending_account_linking",
            Some(json!({"comment": "link"})),
        )
        .await
        .expect(200);
        assert_eq!(r.body["state"], "Pending account linking", "{}", s.label);
    }
}

// ---------------------------------------------------------------------------------------------
// The whole table
// ---------------------------------------------------------------------------------------------

/// Every (state, action) pair: allowed ones lead to the table's target, refused ones answer
/// Waldur's 400 naming the current state and the valid ones, and change nothing.
#[tokio::test]
async fn every_transition_of_the_table() {
    for s in Server::all(&[]).await {
        let site = site(&s, "Table").await;
        let agent = Cred::Token(&site.token);
        let mut n = 0;
        for state in AccountState::ALL {
            // One account in `state` for all the refusals.
            n += 1;
            let id = uuid_of(&account(&s, &site, &format!("table-{n}")).await);
            for step in path_to(state) {
                act(&s, agent, &id, step.name(), None).await.expect(200);
            }
            let before = get(&s, agent, &id).await;
            assert_eq!(before["state"], state.label(), "{}", s.label);
            let before_history = history(&s, agent, &id).await.len();
            for action in Action::ALL {
                if lifecycle::allowed(action, state) {
                    continue;
                }
                let r = act(&s, agent, &id, action.name(), None).await;
                let r = r.expect_problem(400, "E008001");
                let valid: Vec<&str> = lifecycle::sources(action).iter().map(|s| s.label()).collect();
                let expected = format!(
                    "Cannot transition to {} from current state: {}. Valid states for operation: {}.",
                    lifecycle::target(action).constant_name(),
                    state.label(),
                    valid.join(", ")
                );
                assert_eq!(r.body["detail"], expected, "{}: {action} from {state}", s.label);
            }
            let after = get(&s, agent, &id).await;
            assert_eq!(after, before, "{}: refusals changed {state}", s.label);
            assert_eq!(history(&s, agent, &id).await.len(), before_history, "{}", s.label);

            // Each allowed action, on an account of its own.
            for action in lifecycle::actions_from(state) {
                n += 1;
                let id = uuid_of(&account(&s, &site, &format!("table-{n}")).await);
                for step in path_to(state) {
                    act(&s, agent, &id, step.name(), None).await.expect(200);
                }
                let r = act(&s, agent, &id, action.name(), None).await.expect(200);
                assert_eq!(
                    r.body["state"],
                    lifecycle::target(action).label(),
                    "{}: {action} from {state}",
                    s.label
                );
                let h = history(&s, agent, &id).await;
                let last = h.last().cloned().unwrap_or_default();
                assert_eq!(
                    (last["action"].clone(), last["from_state"].clone()),
                    (json!(action.name()), json!(state.label())),
                    "{}",
                    s.label
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Races
// ---------------------------------------------------------------------------------------------

/// Sixteen agents race on one account for each step of the lifecycle: exactly one wins each
/// time, the others get the 400, and the history holds one entry per step.
#[tokio::test]
async fn racing_agents_one_winner_per_transition() {
    for s in Server::all(&[]).await {
        let site = site(&s, "Racers").await;
        let id = uuid_of(&account(&s, &site, "race-gina").await);
        let steps = [
            ("begin_creating", None),
            (
                "set_pending_additional_validation",
                Some(json!({"comment": "verify", "comment_url": "https://example.org/v"})),
            ),
            ("set_validation_complete", None),
            ("request_deletion", None),
            ("set_deleting", None),
            ("set_deleted", None),
        ];
        for (action, body) in steps {
            let calls = (0..16).map(|_| act(&s, Cred::Token(&site.token), &id, action, body.clone()));
            let results = futures_join_all(calls).await;
            let wins = results.iter().filter(|r| r.status == 200).count();
            let losses = results
                .iter()
                .filter(|r| r.status == 400 && r.body["code"] == "E008001")
                .count();
            assert_eq!((wins, losses), (1, 15), "{}: {action}", s.label);
        }
        let h = history(&s, Cred::Token(&site.token), &id).await;
        assert_eq!(h.len(), 7, "{}: one history entry per step: {h:?}", s.label);
        assert_eq!(get(&s, Cred::Token(&site.token), &id).await["version"], 7);
    }
}

/// A minimal join_all (the test crate has no futures dependency).
async fn futures_join_all<F: std::future::Future<Output = Resp>>(futs: impl Iterator<Item = F>) -> Vec<Resp> {
    let set: Vec<_> = futs.collect();
    let mut handles = Vec::new();
    // Poll them concurrently on this task through a JoinSet-free approach: select in a loop.
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = set.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<Resp>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(r) => out[i] = Some(r),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    handles.extend(out.into_iter().flatten());
    handles
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

/// Unknown fields, wrong types, unknown labels, `comment_url: null`, malformed JSON: each a
/// structured 400, and nothing changes.
#[tokio::test]
async fn bad_input_changes_nothing() {
    for s in Server::all(&[]).await {
        let site = site(&s, "Strict").await;
        let agent = Cred::Token(&site.token);
        let id = uuid_of(&account(&s, &site, "bad-hank").await);
        act(&s, agent, &id, "begin_creating", None).await.expect(200);
        let before = get(&s, agent, &id).await;

        let r = act(
            &s,
            agent,
            &id,
            "set_pending_additional_validation",
            Some(json!({"comment": "x", "comment_url": null})),
        )
        .await
        .expect_problem(400, "E008002");
        assert_eq!(r.body["errors"][0]["field"], "comment_url", "{}", s.label);
        assert_eq!(r.body["errors"][0]["message"], "This field may not be null.");
        act(
            &s,
            agent,
            &id,
            "set_pending_additional_validation",
            Some(json!({"comment": "x", "bogus": 1})),
        )
        .await
        .expect_problem(400, "unknown_field");
        act(
            &s,
            agent,
            &id,
            "set_pending_additional_validation",
            Some(json!({"comment": 5})),
        )
        .await
        .expect_problem(400, "E008002");
        act(
            &s,
            agent,
            &id,
            "set_pending_additional_validation",
            Some(json!({"comment_url": "javascript:alert(1)"})),
        )
        .await
        .expect_problem(400, "E008002");
        // A comment on an action that takes none.
        act(&s, agent, &id, "set_ok", Some(json!({"comment": "x"})))
            .await
            .expect_problem(400, "E008002");
        let r = s
            .send(
                s.request(Method::POST, &format!("{BASE}{id}/set_error_creating/"))
                    .header("authorization", format!("Token {}", site.token))
                    .header("content-type", "application/json")
                    .body("{not json"),
            )
            .await;
        r.expect_problem(400, "malformed_json");
        call(
            &s,
            Method::PATCH,
            &format!("{BASE}{id}/"),
            agent,
            Some(json!({"username": 7})),
        )
        .await
        .expect_problem(400, "E008002");
        call(
            &s,
            Method::PATCH,
            &format!("{BASE}{id}/"),
            agent,
            Some(json!({"state": "OK"})),
        )
        .await
        .expect_problem(400, "unknown_field");
        call(
            &s,
            Method::PATCH,
            &format!("{BASE}{id}/"),
            agent,
            Some(json!({"username": "has space"})),
        )
        .await
        .expect_problem(400, "E001001");
        call(
            &s,
            Method::PATCH,
            &format!("{BASE}{id}/update_comments/"),
            agent,
            Some(json!({"service_provider_comment_url": null})),
        )
        .await
        .expect_problem(400, "E008002");
        act(
            &s,
            agent,
            &id,
            "update_runtime_state",
            Some(json!({"runtime_state": "Sleeping"})),
        )
        .await
        .expect_problem(400, "E008002");
        act(
            &s,
            agent,
            &id,
            "update_restricted",
            Some(json!({"is_restricted": "yes"})),
        )
        .await
        .expect_problem(400, "E008002");
        act(&s, agent, &id, "update_restricted", Some(json!({})))
            .await
            .expect_problem(400, "E008003");
        assert_eq!(get(&s, agent, &id).await, before, "{}: nothing changed", s.label);
        assert_eq!(history(&s, agent, &id).await.len(), 2, "{}", s.label);

        // Creation: unknown fields, bad uuids, a missing offering.
        call(
            &s,
            Method::POST,
            BASE,
            agent,
            Some(json!({"offering_uuid": site.offering, "user_uuid": before["user_uuid"], "state": "OK"})),
        )
        .await
        .expect_problem(400, "unknown_field");
        call(
            &s,
            Method::POST,
            BASE,
            agent,
            Some(json!({"offering_uuid": "nope", "user_uuid": before["user_uuid"]})),
        )
        .await
        .expect_problem(400, "E008002");
        // The same person again on the same offering: one account per person per offering.
        call(
            &s,
            Method::POST,
            BASE,
            agent,
            Some(json!({"offering_uuid": site.offering, "user_uuid": before["user_uuid"]})),
        )
        .await
        .expect_problem(400, "not_unique");

        // Lists: unknown labels and parameters.
        for q in [
            "state=Bogus",
            "state=ok",
            "provider_uuid=xyz",
            "is_restricted=maybe",
            "created=yesterday",
            "o=password",
            "page_size=0",
            "colour=red",
        ] {
            let r = call(&s, Method::GET, &format!("{BASE}?{q}"), agent, None).await;
            assert_eq!(r.status, 400, "{}: {q}: {}", s.label, r.body);
        }
    }
}

/// HTML in comments is sanitised on transitions and on update_comments.
#[tokio::test]
async fn comments_are_sanitised() {
    for s in Server::all(&[]).await {
        let site = site(&s, "Sanitary").await;
        let agent = Cred::Token(&site.token);
        let id = uuid_of(&account(&s, &site, "html-ivy").await);
        act(&s, agent, &id, "begin_creating", None).await.expect(200);
        let r = act(
            &s,
            agent,
            &id,
            "set_pending_account_linking",
            Some(json!({"comment": "<p>Link</p><script>alert(1)</script><img src=x onerror=alert(1)>"})),
        )
        .await
        .expect(200);
        let c = r.body["service_provider_comment"].as_str().unwrap_or("").to_owned();
        assert!(
            c.contains("<p>Link</p>") && !c.contains("script") && !c.contains("onerror"),
            "{c}"
        );
        let r = call(
            &s,
            Method::PATCH,
            &format!("{BASE}{id}/update_comments/"),
            agent,
            Some(json!({"service_provider_comment": "<b onclick=x()>hi</b>"})),
        )
        .await
        .expect(200);
        assert_eq!(r.body["service_provider_comment"], "<b>hi</b>", "{}", s.label);
        // Omitted: unchanged; "": cleared.
        let r = act(&s, agent, &id, "set_pending_additional_validation", None)
            .await
            .expect(200);
        assert_eq!(r.body["service_provider_comment"], "<b>hi</b>");
        let r = act(
            &s,
            agent,
            &id,
            "set_pending_account_linking",
            Some(json!({"comment": ""})),
        )
        .await
        .expect(200);
        assert_eq!(r.body["service_provider_comment"], "", "{}", s.label);
    }
}

// ---------------------------------------------------------------------------------------------
// Permissions and tokens
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn permissions_and_tokens() {
    for s in Server::all(&[]).await {
        let mine = site(&s, "Mine").await;
        let theirs = site(&s, "Theirs").await;
        let (jane, jane_session) = person(&s, "perm-jane").await;
        let (_, stranger_session) = person(&s, "perm-stranger").await;
        let (mgr, mgr_session) = person(&s, "perm-manager").await;
        call(
            &s,
            Method::POST,
            &format!("/api/marketplace-service-providers/{}/add_manager/", mine.provider),
            Cred::Bearer(&s.admin_token),
            Some(json!({"user_uuid": mgr})),
        )
        .await
        .expect(200);

        let r = call(
            &s,
            Method::POST,
            BASE,
            Cred::Token(&mine.token),
            Some(json!({"offering_uuid": mine.offering, "user_uuid": jane})),
        )
        .await
        .expect(201);
        let id = uuid_of(&r.body);
        let other = uuid_of(&account(&s, &theirs, "perm-kim").await);

        // Another provider's token: the account does not exist for it.
        let theirs_cred = Cred::Token(&theirs.token);
        call(&s, Method::GET, &format!("{BASE}{id}/"), theirs_cred, None)
            .await
            .expect_problem(404, "not_found");
        for action in Action::ALL {
            act(&s, theirs_cred, &id, action.name(), None)
                .await
                .expect_problem(404, "not_found");
        }
        call(
            &s,
            Method::PATCH,
            &format!("{BASE}{id}/"),
            theirs_cred,
            Some(json!({"username": "x"})),
        )
        .await
        .expect(404);
        call(&s, Method::DELETE, &format!("{BASE}{id}/"), theirs_cred, None)
            .await
            .expect(404);
        // Nor may it create accounts on my offering.
        call(
            &s,
            Method::POST,
            BASE,
            theirs_cred,
            Some(json!({"offering_uuid": mine.offering, "user_uuid": jane})),
        )
        .await
        .expect(403);

        // The person sees their own account, and changes nothing (403 on every change,
        // set_ok and the error transitions included).
        let jane_cred = Cred::Bearer(&jane_session);
        assert_eq!(get(&s, jane_cred, &id).await["uuid"], id.as_str());
        for action in Action::ALL {
            act(&s, jane_cred, &id, action.name(), None)
                .await
                .expect_problem(403, "permission_denied");
        }
        call(
            &s,
            Method::PATCH,
            &format!("{BASE}{id}/"),
            jane_cred,
            Some(json!({"username": "jane"})),
        )
        .await
        .expect(403);
        call(
            &s,
            Method::PATCH,
            &format!("{BASE}{id}/update_comments/"),
            jane_cred,
            Some(json!({"service_provider_comment": "x"})),
        )
        .await
        .expect(403);
        act(
            &s,
            jane_cred,
            &id,
            "update_restricted",
            Some(json!({"is_restricted": true})),
        )
        .await
        .expect(403);
        call(&s, Method::DELETE, &format!("{BASE}{id}/"), jane_cred, None)
            .await
            .expect(403);
        // …and lists only their own.
        let list = call(&s, Method::GET, BASE, jane_cred, None).await.expect(200);
        let ids: Vec<&str> = list
            .body
            .as_array()
            .map(|a| a.iter().filter_map(|v| v["uuid"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(ids, [id.as_str()], "{}", s.label);
        // A stranger sees nothing.
        let stranger = Cred::Bearer(&stranger_session);
        call(&s, Method::GET, &format!("{BASE}{id}/"), stranger, None)
            .await
            .expect(404);
        act(&s, stranger, &id, "set_ok", None).await.expect(404);
        let list = call(&s, Method::GET, BASE, stranger, None).await.expect(200);
        assert_eq!(list.body, json!([]), "{}", s.label);
        assert_eq!(list.headers["x-result-count"], "0");

        // The provider's manager (a session) may do what the token does, on its provider only.
        let mgr_cred = Cred::Bearer(&mgr_session);
        act(&s, mgr_cred, &id, "begin_creating", None).await.expect(200);
        act(&s, mgr_cred, &other, "begin_creating", None).await.expect(404);
        let list = call(&s, Method::GET, BASE, mgr_cred, None).await.expect(200);
        assert_eq!(list.headers["x-result-count"], "1", "{}", s.label);

        // A token sees only its provider's accounts.
        let list = call(&s, Method::GET, BASE, Cred::Token(&mine.token), None)
            .await
            .expect(200);
        assert_eq!(list.headers["x-result-count"], "1", "{}", s.label);

        // Tokens reach nothing of the directory: the token is valid, the route is not for it.
        call(&s, Method::GET, "/api/users", Cred::Token(&mine.token), None)
            .await
            .expect_problem(403, "session_required");
        call(
            &s,
            Method::GET,
            "/api/events?stream=directory",
            Cred::Token(&mine.token),
            None,
        )
        .await
        .expect(403);
        // Tokens mint no tokens; strangers see no provider.
        call(
            &s,
            Method::POST,
            &format!("/api/marketplace-service-providers/{}/api_tokens/", mine.provider),
            Cred::Token(&mine.token),
            Some(json!({"name": "again"})),
        )
        .await
        .expect(403);
        call(
            &s,
            Method::POST,
            &format!("/api/marketplace-service-providers/{}/api_tokens/", mine.provider),
            stranger,
            Some(json!({"name": "mine now"})),
        )
        .await
        .expect(404);
        // Only super-users create providers and offerings.
        call(
            &s,
            Method::POST,
            "/api/marketplace-service-providers/",
            mgr_cred,
            Some(json!({"name": "x"})),
        )
        .await
        .expect(403);
        call(
            &s,
            Method::POST,
            "/api/marketplace-provider-offerings/",
            mgr_cred,
            Some(json!({"name": "x", "provider_uuid": mine.provider})),
        )
        .await
        .expect(403);

        // A manager mints a token; the list never shows keys; revoking ends it at once.
        let t = call(
            &s,
            Method::POST,
            &format!("/api/marketplace-service-providers/{}/api_tokens/", mine.provider),
            mgr_cred,
            Some(json!({"name": "second"})),
        )
        .await
        .expect(201);
        let key = t.body["key"].as_str().unwrap_or("").to_owned();
        assert!(key.starts_with("mpt_"), "{}", s.label);
        call(&s, Method::GET, BASE, Cred::Token(&key), None).await.expect(200);
        let list = call(
            &s,
            Method::GET,
            &format!("/api/marketplace-service-providers/{}/api_tokens/", mine.provider),
            mgr_cred,
            None,
        )
        .await
        .expect(200);
        assert!(
            !list.body.to_string().contains(&key),
            "{}: keys are never listed",
            s.label
        );
        assert_eq!(list.body.as_array().map(Vec::len), Some(2));
        call(
            &s,
            Method::DELETE,
            &format!(
                "/api/marketplace-service-providers/{}/api_tokens/{}/",
                mine.provider,
                t.body["uuid"].as_str().unwrap_or("")
            ),
            mgr_cred,
            None,
        )
        .await
        .expect(204);
        let r = call(&s, Method::GET, BASE, Cred::Token(&key), None).await;
        r.expect_problem(401, "E007001");
        // Unknown and malformed keys: the same 401, which never echoes the key.
        for bad in ["mpt_nope", "garbage", ""] {
            let r = call(&s, Method::GET, BASE, Cred::Token(bad), None).await.expect(401);
            if !bad.is_empty() {
                assert!(!r.body.to_string().contains(bad), "{}", s.label);
            }
        }
        // The key is in no audit record and no log line.
        let audit = s.audit("action=api_token.create").await;
        assert!(!audit.to_string().contains(&key), "{}", s.label);
        assert!(!s.stdout().contains(&key) && !s.stderr().contains(&key), "{}", s.label);
    }
}

/// Token lookups are cached per node for up to a second; on the node that revokes a token (or
/// deletes its provider) the very next request with it is refused all the same.
#[tokio::test]
async fn revoked_tokens_stop_at_once_on_the_revoking_node_despite_the_cache() {
    for s in Server::all(&[]).await {
        let admin = Cred::Bearer(&s.admin_token);
        let site = site(&s, "Revoker").await;
        let second = call(
            &s,
            Method::POST,
            &format!("/api/marketplace-service-providers/{}/api_tokens/", site.provider),
            admin,
            Some(json!({"name": "second"})),
        )
        .await
        .expect(201);
        let second_key = second.body["key"].as_str().unwrap_or("").to_owned();
        let first_uuid = call(
            &s,
            Method::GET,
            &format!("/api/marketplace-service-providers/{}/api_tokens/", site.provider),
            admin,
            None,
        )
        .await
        .expect(200)
        .body
        .as_array()
        .and_then(|l| l.iter().find(|t| t["name"] == "Revoker-agent"))
        .and_then(|t| t["uuid"].as_str())
        .unwrap_or("")
        .to_owned();
        // Both tokens are in use (and so in the cache) right up to the revocation.
        for _ in 0..5 {
            call(&s, Method::GET, BASE, Cred::Token(&site.token), None)
                .await
                .expect(200);
            call(&s, Method::GET, BASE, Cred::Token(&second_key), None)
                .await
                .expect(200);
        }
        call(
            &s,
            Method::DELETE,
            &format!(
                "/api/marketplace-service-providers/{}/api_tokens/{first_uuid}/",
                site.provider
            ),
            admin,
            None,
        )
        .await
        .expect(204);
        call(&s, Method::GET, BASE, Cred::Token(&site.token), None)
            .await
            .expect_problem(401, "E007001");
        call(&s, Method::GET, BASE, Cred::Token(&second_key), None)
            .await
            .expect(200);

        // Deleting the provider (after its offering) ends its remaining token at once too.
        call(
            &s,
            Method::DELETE,
            &format!("/api/marketplace-provider-offerings/{}/", site.offering),
            admin,
            None,
        )
        .await
        .expect(204);
        call(&s, Method::GET, BASE, Cred::Token(&second_key), None)
            .await
            .expect(200);
        call(
            &s,
            Method::DELETE,
            &format!("/api/marketplace-service-providers/{}/", site.provider),
            admin,
            None,
        )
        .await
        .expect(204);
        call(&s, Method::GET, BASE, Cred::Token(&second_key), None)
            .await
            .expect_problem(401, "E007001");
    }
}

// ---------------------------------------------------------------------------------------------
// Listing
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn listing_filters_paging_and_headers() {
    for s in Server::all(&[]).await {
        let site = site(&s, "Lister").await;
        let other = site_with_offering(&s, &site).await;
        let agent = Cred::Token(&site.token);
        // 12 accounts: 5 Requested, 3 Pending additional validation, 2 Pending account linking,
        // 2 Error creating; two on the second offering.
        let mut ids = Vec::new();
        for i in 0..12 {
            let user = s
                .create_user(json!({"username": format!("list-{i:02}"), "first_name": format!("F{i:02}")}))
                .await;
            let offering = if i >= 10 { &other } else { &site.offering };
            let r = call(
                &s,
                Method::POST,
                BASE,
                agent,
                Some(json!({"offering_uuid": offering, "user_uuid": user["uuid"]})),
            )
            .await
            .expect(201);
            ids.push(uuid_of(&r.body));
        }
        for (i, id) in ids.iter().enumerate() {
            let steps: &[&str] = match i {
                0..=4 => &[],
                5..=7 => &["begin_creating", "set_pending_additional_validation"],
                8..=9 => &["begin_creating", "set_pending_account_linking"],
                _ => &["set_error_creating"],
            };
            for step in steps {
                act(&s, agent, id, step, None).await.expect(200);
            }
        }
        let count = |r: &Resp| r.headers["x-result-count"].to_str().unwrap_or("").to_owned();

        // Default page: 10, bare array, Link with next and last.
        let r = call(&s, Method::GET, BASE, agent, None).await.expect(200);
        assert_eq!(r.body.as_array().map(Vec::len), Some(10), "{}", s.label);
        assert_eq!(count(&r), "12");
        let link = r.headers["link"].to_str().unwrap_or("").to_owned();
        assert!(
            link.contains("rel=\"first\"") && link.contains("rel=\"next\"") && link.contains("rel=\"last\""),
            "{link}"
        );
        assert!(!link.contains("rel=\"prev\""), "{link}");
        let r = call(&s, Method::GET, &format!("{BASE}?page=2"), agent, None)
            .await
            .expect(200);
        assert_eq!(r.body.as_array().map(Vec::len), Some(2));
        assert!(r.headers["link"].to_str().unwrap_or("").contains("rel=\"prev\""));

        // HEAD: the count alone.
        let r = call(&s, Method::HEAD, &format!("{BASE}?state=Requested"), agent, None)
            .await
            .expect(200);
        assert_eq!(count(&r), "5", "{}", s.label);
        assert_eq!(r.body, Value::Null);

        // The dashboard query: provider + several states.
        let q = format!(
            "{BASE}?provider_uuid={}&state=Pending%20additional%20validation&state=Pending%20account%20linking&state=Error%20creating&page_size=100",
            site.provider
        );
        let r = call(&s, Method::GET, &q, agent, None).await.expect(200);
        assert_eq!(count(&r), "7", "{}", s.label);
        let states: BTreeSet<&str> = r
            .body
            .as_array()
            .map(|a| a.iter().filter_map(|v| v["state"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(
            states,
            [
                "Error creating",
                "Pending account linking",
                "Pending additional validation"
            ]
            .into_iter()
            .collect()
        );
        // Paging through several states gives the same accounts in the same order.
        let all_q = format!(
            "{BASE}?state=Pending%20additional%20validation&state=Pending%20account%20linking&o=-created&page_size=100"
        );
        let whole = call(&s, Method::GET, &all_q, agent, None).await.expect(200);
        let whole: Vec<Value> = whole.body.as_array().cloned().unwrap_or_default();
        let mut paged = Vec::new();
        for page in 1..=3 {
            let q = all_q.replace("page_size=100", &format!("page_size=2&page={page}"));
            let r = call(&s, Method::GET, &q, agent, None).await.expect(200);
            paged.extend(r.body.as_array().cloned().unwrap_or_default());
        }
        assert_eq!(whole.len(), 5, "{}", s.label);
        assert_eq!(paged, whole, "{}", s.label);
        let r = call(&s, Method::GET, &format!("{BASE}?offering_uuid={other}"), agent, None)
            .await
            .expect(200);
        assert_eq!(count(&r), "2");
        let r = call(
            &s,
            Method::GET,
            &format!("{BASE}?offering_uuid={other}&offering_uuid={}", site.offering),
            agent,
            None,
        )
        .await
        .expect(200);
        assert_eq!(count(&r), "12");
        let r = call(&s, Method::GET, &format!("{BASE}?user_username=LIST-03"), agent, None)
            .await
            .expect(200);
        assert_eq!(count(&r), "1", "{}: user_username is case-insensitive", s.label);
        let user3 = r.body[0]["user_uuid"].as_str().unwrap_or("").to_owned();
        let r = call(&s, Method::GET, &format!("{BASE}?user_uuid={user3}"), agent, None)
            .await
            .expect(200);
        assert_eq!(count(&r), "1");
        let r = call(&s, Method::GET, &format!("{BASE}?query=list-1"), agent, None)
            .await
            .expect(200);
        assert_eq!(count(&r), "2", "{}: query matches usernames", s.label);
        act(
            &s,
            agent,
            &ids[0],
            "update_restricted",
            Some(json!({"is_restricted": true})),
        )
        .await
        .expect(200);
        let r = call(&s, Method::GET, &format!("{BASE}?is_restricted=true"), agent, None)
            .await
            .expect(200);
        assert_eq!(count(&r), "1");
        act(
            &s,
            agent,
            &ids[1],
            "update_runtime_state",
            Some(json!({"runtime_state": "Pending account linking"})),
        )
        .await
        .expect(200);
        let r = call(
            &s,
            Method::GET,
            &format!("{BASE}?runtime_state=Pending%20account%20linking"),
            agent,
            None,
        )
        .await
        .expect(200);
        assert_eq!(count(&r), "1");
        // Dates: created / created_after (alias) / created_before.
        for q in [
            "created=2000-01-01",
            "created_after=2000-01-01T00:00:00Z",
            "modified=2000-01-01",
        ] {
            let r = call(&s, Method::GET, &format!("{BASE}?{q}"), agent, None)
                .await
                .expect(200);
            assert_eq!(count(&r), "12", "{}: {q}", s.label);
        }
        let r = call(
            &s,
            Method::GET,
            &format!("{BASE}?created_before=2000-01-01"),
            agent,
            None,
        )
        .await
        .expect(200);
        assert_eq!(count(&r), "0");
        let r = call(&s, Method::GET, &format!("{BASE}?created=2999-01-01"), agent, None)
            .await
            .expect(200);
        assert_eq!(count(&r), "0");
        // Ordering.
        let r = call(
            &s,
            Method::GET,
            &format!("{BASE}?o=-user_first_name&page_size=3"),
            agent,
            None,
        )
        .await
        .expect(200);
        let names: Vec<&str> = r
            .body
            .as_array()
            .map(|a| a.iter().filter_map(|v| v["user_username"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(names, ["list-11", "list-10", "list-09"], "{}", s.label);
        let r = call(&s, Method::GET, &format!("{BASE}?o=created&page_size=300"), agent, None)
            .await
            .expect(200);
        let got: Vec<&str> = r
            .body
            .as_array()
            .map(|a| a.iter().filter_map(|v| v["uuid"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(got, ids.iter().map(String::as_str).collect::<Vec<_>>(), "{}", s.label);
        // Sparse fields, as the site agent asks.
        let r = call(
            &s,
            Method::GET,
            &format!("{BASE}?field=uuid&field=state&page_size=1"),
            agent,
            None,
        )
        .await
        .expect(200);
        let keys: BTreeSet<String> = r.body[0]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        assert_eq!(
            keys,
            ["state", "uuid"].into_iter().map(String::from).collect(),
            "{}",
            s.label
        );
        // page_size above 300 is capped.
        let r = call(&s, Method::GET, &format!("{BASE}?page_size=1000"), agent, None)
            .await
            .expect(200);
        assert_eq!(r.body.as_array().map(Vec::len), Some(12));
        // The response object has Waldur's fields.
        let one = get(&s, agent, &ids[0]).await;
        for k in [
            "uuid",
            "user",
            "offering",
            "username",
            "state",
            "runtime_state",
            "is_restricted",
            "service_provider_comment",
            "service_provider_comment_url",
            "created",
            "modified",
            "offering_uuid",
            "offering_name",
            "user_uuid",
            "user_username",
            "user_full_name",
            "user_email",
            "customer_uuid",
            "customer_name",
        ] {
            assert!(one.get(k).is_some(), "{}: missing {k}", s.label);
        }
        assert_eq!(one["customer_uuid"], site.provider.as_str());
        assert_eq!(one["customer_name"], "Lister");
    }
}

/// A second offering of `site`'s provider.
async fn site_with_offering(s: &Server, site: &Site) -> String {
    let o = call(
        s,
        Method::POST,
        "/api/marketplace-provider-offerings/",
        Cred::Bearer(&s.admin_token),
        Some(json!({"name": "Second", "provider_uuid": site.provider})),
    )
    .await
    .expect(201);
    o.body["uuid"].as_str().expect("offering uuid").to_owned()
}

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

/// A provider's agent follows its provider's changes (only those), resumes from a sequence
/// number, and super-users see everything.
#[tokio::test]
async fn events_are_scoped_to_the_provider_and_resumable() {
    for s in Server::all(&[]).await {
        let a = site(&s, "EvA").await;
        let b = site(&s, "EvB").await;
        let ida = uuid_of(&account(&s, &a, "ev-lou").await);
        let idb = uuid_of(&account(&s, &b, "ev-max").await);
        act(&s, Cred::Token(&a.token), &ida, "begin_creating", None)
            .await
            .expect(200);
        act(&s, Cred::Token(&b.token), &idb, "begin_creating", None)
            .await
            .expect(200);

        let seen = wait_for_event(&s, Cred::Token(&a.token), |e| {
            e["subject"] == ida.as_str() && e["data"]["action"] == "begin_creating"
        })
        .await;
        assert!(
            seen.iter().all(|e| e["data"]["provider_uuid"] == a.provider.as_str()),
            "{}: {seen:?}",
            s.label
        );
        let all = wait_for_event(&s, Cred::Bearer(&s.admin_token), |e| {
            e["subject"] == idb.as_str() && e["data"]["action"] == "begin_creating"
        })
        .await;
        assert!(all.iter().any(|e| e["subject"] == ida.as_str()), "{}", s.label);

        // Resume after the first event: only what came later.
        let first = seen[0]["seq"].as_i64().unwrap_or(0);
        let page = call(
            &s,
            Method::GET,
            &format!("/api/events?stream=offering_users&after={first}"),
            Cred::Token(&a.token),
            None,
        )
        .await
        .expect(200);
        let later: Vec<i64> = page.body["events"]
            .as_array()
            .map(|v| v.iter().filter_map(|e| e["seq"].as_i64()).collect())
            .unwrap_or_default();
        assert!(
            !later.is_empty() && later.iter().all(|n| *n > first),
            "{}: {later:?}",
            s.label
        );

        // A person without a provider reads no offering events.
        let (_, session) = person(&s, "ev-nobody").await;
        call(
            &s,
            Method::GET,
            "/api/events?stream=offering_users",
            Cred::Bearer(&session),
            None,
        )
        .await
        .expect(403);
    }
}

/// The OpenAPI document lists the new paths.
#[tokio::test]
async fn openapi_documents_the_offering_paths() {
    let db = muster_store::testing::TestDb::sqlite();
    let s = Server::start(db, &[]).await;
    let doc = s.call(Method::GET, "/api/openapi.json", None, None).await.expect(200);
    for path in [
        "/api/marketplace-offering-users/",
        "/api/marketplace-offering-users/{uuid}/",
        "/api/marketplace-offering-users/{uuid}/begin_creating/",
        "/api/marketplace-offering-users/{uuid}/set_error_deleting/",
        "/api/marketplace-offering-users/{uuid}/update_comments/",
        "/api/marketplace-offering-users/{uuid}/history/",
        "/api/marketplace-service-providers/",
        "/api/marketplace-provider-offerings/",
    ] {
        assert!(doc.body["paths"].get(path).is_some(), "missing {path}");
    }
}

#[tokio::test]
async fn local_usernames_are_portable_login_names() {
    for s in Server::all(&[]).await {
        let l = s.label;
        let site = site(&s, "Names").await;
        let agent = Cred::Token(&site.token);
        let a = account(&s, &site, "names-person").await;
        let id = a["uuid"].as_str().expect("uuid").to_owned();
        for bad in [
            "<script>",
            "../../etc",
            "a/b",
            "JSmith",
            "1abc",
            ".hidden",
            "élodie",
            "x\u{0}y",
        ] {
            for method in [Method::PATCH, Method::PUT] {
                let r = call(
                    &s,
                    method.clone(),
                    &format!("{BASE}{id}/"),
                    agent,
                    Some(json!({"username": bad})),
                )
                .await;
                let r = r.expect_problem(400, "E001001");
                assert_eq!(r.body["errors"][0]["field"], json!("username"), "{l}: {bad:?}");
            }
            let user = s
                .create_user(json!({"username": format!("p{}", uuid::Uuid::new_v4().simple())}))
                .await;
            call(
                &s,
                Method::POST,
                BASE,
                agent,
                Some(json!({"offering_uuid": site.offering, "user_uuid": user["uuid"], "username": bad})),
            )
            .await
            .expect_problem(400, "E001001");
        }
        let after = get(&s, agent, &id).await;
        assert_eq!(
            (after["state"].clone(), after["username"].clone()),
            (json!("Requested"), Value::Null),
            "{l}: unchanged"
        );
        let ok = call(
            &s,
            Method::PATCH,
            &format!("{BASE}{id}/"),
            agent,
            Some(json!({"username": "j.smith-2"})),
        )
        .await
        .expect(200);
        assert_eq!(ok.body["username"], json!("j.smith-2"), "{l}");

        // An offering that names accounts after the directory uses the name's lower-case form
        // when that is a portable login name, and otherwise leaves the naming to the site.
        let admin = Cred::Bearer(&s.admin_token);
        let o = call(
            &s,
            Method::POST,
            "/api/marketplace-provider-offerings/",
            admin,
            Some(
                json!({"name": "Names Cloud", "provider_uuid": site.provider, "type": "Marketplace.Slurm",
                        "username_generation_policy": "waldur_username"}),
            ),
        )
        .await
        .expect(201);
        let offering = o.body["uuid"].as_str().expect("uuid").to_owned();
        for (name, expected_state, expected) in [
            ("Carol.Jones", "OK", json!("carol.jones")),
            ("\u{e9}lodie", "Requested", Value::Null),
            ("mallory<script>", "Requested", Value::Null),
        ] {
            let user = s.create_user(json!({"username": name})).await;
            let r = call(
                &s,
                Method::POST,
                BASE,
                agent,
                Some(json!({"offering_uuid": offering, "user_uuid": user["uuid"]})),
            )
            .await
            .expect(201);
            assert_eq!(
                (r.body["state"].clone(), r.body["username"].clone()),
                (json!(expected_state), expected),
                "{l}: {name}"
            );
        }
    }
}
