//! Conformance of the offering-account storage: the same expectations on every backend.

use super::{audit_total, ctx, insert, new_user, open};
use muster_core::audit::{AuditEntry, actions, kinds, streams};
use muster_core::clock;
use muster_core::error::DomainError;
use muster_core::offering::lifecycle::{self, AccountState, Action, RuntimeState};
use muster_core::offering::model::{
    AccountFields, ApiToken, ApiTokenUuid, HistoryEntry, Offering, OfferingUserUuid, OfferingUuid, Provider,
    ProviderUuid, UsernamePolicy,
};
use muster_store::testing::TestDb;
use muster_store::{AccountChange, AccountOrder, AccountQuery, ChangeOutcome, Store, StoreError, Visibility};
use uuid::Uuid;

fn provider(name: &str) -> Provider {
    let now = clock::now();
    Provider {
        uuid: ProviderUuid::new_random(),
        name: name.to_owned(),
        posix: None,
        created: now,
        modified: now,
    }
}

fn offering(p: &Provider, slug: &str) -> Offering {
    let now = clock::now();
    Offering {
        uuid: OfferingUuid::new_random(),
        provider_uuid: p.uuid,
        name: format!("{slug} name"),
        slug: slug.to_owned(),
        kind: "Marketplace.Slurm".to_owned(),
        provider_can_create: true,
        username_policy: UsernamePolicy::ServiceProvider,
        username_prefix: "walduruser_".to_owned(),
        username_claim: Default::default(),
        posix_pool: Default::default(),
        posix: None,
        created: now,
        modified: now,
    }
}

fn entry(action: &'static str) -> AuditEntry {
    AuditEntry::new(&ctx(), action, Some("test".into()), None)
}

fn fields(username: &str, state: AccountState) -> AccountFields {
    AccountFields {
        username: username.to_owned(),
        state,
        runtime_state: RuntimeState::Active,
        is_restricted: false,
        comment: String::new(),
        comment_url: String::new(),
    }
}

fn created_history(state: AccountState) -> HistoryEntry {
    HistoryEntry {
        at: clock::now(),
        actor: Some("test".into()),
        action: "create".into(),
        from_state: None,
        to_state: state,
        comment: String::new(),
        comment_url: String::new(),
        cid: "t".into(),
    }
}

/// A provider with one offering, stored.
async fn setup(store: &Store, label: &str, slug: &str) -> (Provider, Offering) {
    let p = provider(slug);
    store
        .insert_provider(&p, &entry(actions::PROVIDER_CREATE))
        .await
        .unwrap_or_else(|e| panic!("{label}: insert_provider: {e}"));
    let o = offering(&p, slug);
    store
        .insert_offering(&o, &entry(actions::OFFERING_CREATE))
        .await
        .unwrap_or_else(|e| panic!("{label}: insert_offering: {e}"));
    (p, o)
}

/// A new person with an account on `o`, stored; returns the account's uuid.
async fn account(store: &Store, label: &str, o: &Offering, username: &str, state: AccountState) -> OfferingUserUuid {
    let user = new_user(&format!("person-{}", Uuid::new_v4().simple()));
    insert(store, label, &user).await;
    let uuid = OfferingUserUuid::new_random();
    let audit = entry(actions::OFFERING_USER_CREATE).with_event(
        streams::OFFERING_USERS,
        kinds::OFFERING_USER_CREATED,
        uuid.to_string(),
        serde_json::json!({"provider_uuid": o.provider_uuid.to_string()}),
    );
    store
        .insert_offering_user(
            uuid,
            o,
            user.uuid,
            &fields(username, state),
            &created_history(state),
            &audit,
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("{label}: insert_offering_user: {e}"));
    uuid
}

/// The rule a transition applies, as the service writes it.
fn transition_rule(
    action: Action,
) -> impl Fn(&muster_core::offering::model::Account) -> Result<Option<AccountChange>, DomainError> {
    move |before| {
        let target = lifecycle::transition(action, before.state)?;
        let mut f = before.fields();
        f.state = target;
        let audit = entry(actions::OFFERING_USER_TRANSITION).with_event(
            streams::OFFERING_USERS,
            kinds::OFFERING_USER_UPDATED,
            before.uuid.to_string(),
            serde_json::json!({"provider_uuid": before.provider_uuid.to_string(), "action": action.name()}),
        );
        Ok(Some(AccountChange {
            history: Some(HistoryEntry {
                at: audit.at,
                actor: Some("test".into()),
                action: action.name().into(),
                from_state: Some(before.state),
                to_state: target,
                comment: String::new(),
                comment_url: String::new(),
                cid: "t".into(),
            }),
            fields: f,
            allowed_from: lifecycle::sources(action).to_vec(),
            audit,
        }))
    }
}

#[tokio::test]
async fn offering_providers_and_offerings_round_trip() {
    for db in TestDb::all().await {
        let store = open(&db).await;
        let label = db.label;
        let (p, o) = setup(&store, label, "hpc").await;
        assert_eq!(
            store.provider(p.uuid).await.ok().flatten().map(|x| x.name),
            Some("hpc".into())
        );
        let got = store.offering(o.uuid).await.ok().flatten();
        assert_eq!(
            got.as_ref().map(|x| (&x.slug, x.provider_uuid)),
            Some((&o.slug, p.uuid)),
            "{label}"
        );
        // Slugs are unique.
        let mut dup = offering(&p, "hpc");
        dup.name = "other".into();
        let r = store.insert_offering(&dup, &entry(actions::OFFERING_CREATE)).await;
        assert!(matches!(r, Err(StoreError::Duplicate("slug"))), "{label}: {r:?}");
        assert_eq!(
            store.list_offerings(None).await.map(|l| l.len()).ok(),
            Some(1),
            "{label}"
        );
        assert_eq!(
            store
                .list_offerings(Some(&[Uuid::new_v4()]))
                .await
                .map(|l| l.len())
                .ok(),
            Some(0),
            "{label}"
        );
        // A provider with offerings is not deleted.
        let r = store
            .delete_provider(p.uuid, &entry(actions::PROVIDER_DELETE))
            .await
            .ok();
        assert_eq!(r, Some(Some(false)), "{label}");
        assert_eq!(
            store
                .delete_offering(o.uuid, &entry(actions::OFFERING_DELETE))
                .await
                .ok(),
            Some(Some(true))
        );
        assert_eq!(
            store
                .delete_provider(p.uuid, &entry(actions::PROVIDER_DELETE))
                .await
                .ok(),
            Some(Some(true))
        );
        assert_eq!(
            store
                .delete_provider(p.uuid, &entry(actions::PROVIDER_DELETE))
                .await
                .ok(),
            Some(None)
        );
    }
}

#[tokio::test]
async fn offering_accounts_are_unique_per_person_and_live_username() {
    for db in TestDb::all().await {
        let store = open(&db).await;
        let label = db.label;
        let (_, o) = setup(&store, label, "uniq").await;
        let a = account(&store, label, &o, "", AccountState::Requested).await;
        let got = store.offering_user(a).await.ok().flatten();
        let got = got.unwrap_or_else(|| panic!("{label}: account should exist"));
        assert_eq!(
            (got.state, got.version, got.offering_name.as_str()),
            (AccountState::Requested, 1, "uniq name")
        );
        assert_eq!(got.provider_name, "uniq", "{label}");
        // One account per person per offering.
        let again = store
            .insert_offering_user(
                OfferingUserUuid::new_random(),
                &o,
                got.user_uuid,
                &fields("", AccountState::Requested),
                &created_history(AccountState::Requested),
                &entry(actions::OFFERING_USER_CREATE),
                None,
            )
            .await;
        assert!(
            matches!(again, Err(StoreError::Duplicate("offering user"))),
            "{label}: {again:?}"
        );
        // Two live accounts never share a local username; a deleted one releases it.
        let b = account(&store, label, &o, "jsmith", AccountState::Ok).await;
        let rename = |name: &'static str| {
            move |before: &muster_core::offering::model::Account| {
                let mut f = before.fields();
                f.username = name.to_owned();
                Ok(Some(AccountChange {
                    fields: f,
                    allowed_from: vec![before.state],
                    history: None,
                    audit: entry(actions::OFFERING_USER_UPDATE),
                }))
            }
        };
        let r = store.change_offering_user(a, rename("jsmith")).await;
        assert!(matches!(r, Err(StoreError::Duplicate("username"))), "{label}: {r:?}");
        // The failed write left nothing behind and the writer is usable at once.
        let r = store.change_offering_user(a, rename("asmith")).await;
        assert!(matches!(r, Ok(ChangeOutcome::Changed { .. })), "{label}: {r:?}");
        let r = store.change_offering_user(a, rename("")).await;
        assert!(matches!(r, Ok(ChangeOutcome::Changed { .. })), "{label}: {r:?}");
        let user = new_user("person-dup");
        insert(&store, label, &user).await;
        let dup = store
            .insert_offering_user(
                OfferingUserUuid::new_random(),
                &o,
                user.uuid,
                &fields("jsmith", AccountState::Ok),
                &created_history(AccountState::Ok),
                &entry(actions::OFFERING_USER_CREATE),
                None,
            )
            .await;
        assert!(
            matches!(dup, Err(StoreError::Duplicate("username"))),
            "{label}: {dup:?}"
        );
        for action in [Action::RequestDeletion, Action::SetDeleting, Action::SetDeleted] {
            let r = store.change_offering_user(b, transition_rule(action)).await;
            assert!(
                matches!(r, Ok(ChangeOutcome::Changed { .. })),
                "{label}: {action}: {r:?}"
            );
        }
        let reuse = store
            .insert_offering_user(
                OfferingUserUuid::new_random(),
                &o,
                user.uuid,
                &fields("jsmith", AccountState::Ok),
                &created_history(AccountState::Ok),
                &entry(actions::OFFERING_USER_CREATE),
                None,
            )
            .await;
        assert!(reuse.is_ok(), "{label}: {reuse:?}");
    }
}

#[tokio::test]
async fn offering_changes_are_conditional_and_atomic() {
    for db in TestDb::all().await {
        let store = open(&db).await;
        let label = db.label;
        let (_, o) = setup(&store, label, "cond").await;
        let a = account(&store, label, &o, "", AccountState::Requested).await;
        let audits = audit_total(&store, label).await;

        // The rule refuses: nothing written.
        let r = store.change_offering_user(a, transition_rule(Action::SetDeleted)).await;
        match r {
            Ok(ChangeOutcome::Refused(e)) => assert_eq!(
                e.message,
                "Cannot transition to DELETED from current state: Requested. Valid states for operation: Deleting.",
                "{label}"
            ),
            other => panic!("{label}: {other:?}"),
        }
        // The conditional update does not match the stored state: nothing written.
        let r = store
            .change_offering_user(a, |before| {
                let mut change = transition_rule(Action::BeginCreating)(before)?;
                if let Some(c) = change.as_mut() {
                    c.allowed_from = vec![AccountState::ErrorCreating];
                }
                Ok(change)
            })
            .await;
        assert!(matches!(r, Ok(ChangeOutcome::Refused(_))), "{label}: {r:?}");
        // Nothing to change: nothing written.
        let r = store.change_offering_user(a, |_| Ok(None)).await;
        assert!(matches!(r, Ok(ChangeOutcome::Unchanged(_))), "{label}: {r:?}");
        // No such account.
        let r = store
            .change_offering_user(OfferingUserUuid::new_random(), transition_rule(Action::BeginCreating))
            .await;
        assert!(matches!(r, Ok(ChangeOutcome::NotFound)), "{label}: {r:?}");
        let now = store
            .offering_user(a)
            .await
            .ok()
            .flatten()
            .map(|x| (x.state, x.version));
        assert_eq!(now, Some((AccountState::Requested, 1)), "{label}");
        assert_eq!(audit_total(&store, label).await, audits, "{label}");
        assert_eq!(store.offering_user_history(a).await.map(|h| h.len()).ok(), Some(1));

        // A change writes the row, its history entry and its audit record together.
        let r = store
            .change_offering_user(a, transition_rule(Action::BeginCreating))
            .await;
        match r {
            Ok(ChangeOutcome::Changed { before, after }) => {
                assert_eq!(
                    (before.state, after.state),
                    (AccountState::Requested, AccountState::Creating)
                );
                assert_eq!(after.version, 2, "{label}");
            }
            other => panic!("{label}: {other:?}"),
        }
        let stored = store
            .offering_user(a)
            .await
            .ok()
            .flatten()
            .map(|x| (x.state, x.version));
        assert_eq!(stored, Some((AccountState::Creating, 2)), "{label}");
        assert_eq!(audit_total(&store, label).await, audits + 1, "{label}");
        let h = store.offering_user_history(a).await.unwrap_or_default();
        assert_eq!(
            h.iter().map(|e| (e.from_state, e.to_state)).collect::<Vec<_>>(),
            [
                (None, AccountState::Requested),
                (Some(AccountState::Requested), AccountState::Creating)
            ],
            "{label}"
        );
    }
}

/// Many concurrent callers race for the same transition: exactly one wins.
#[tokio::test]
async fn offering_racing_transitions_have_one_winner() {
    for db in TestDb::all().await {
        let store = open(&db).await;
        let label = db.label;
        let (_, o) = setup(&store, label, "race").await;
        let a = account(&store, label, &o, "", AccountState::Requested).await;
        for action in [
            Action::BeginCreating,
            Action::SetOk,
            Action::RequestDeletion,
            Action::SetDeleting,
        ] {
            let tasks: Vec<_> = (0..16)
                .map(|_| {
                    let store = store.clone();
                    tokio::spawn(async move { store.change_offering_user(a, transition_rule(action)).await })
                })
                .collect();
            let mut wins = 0;
            let mut refusals = 0;
            for t in tasks {
                match t.await {
                    Ok(Ok(ChangeOutcome::Changed { .. })) => wins += 1,
                    Ok(Ok(ChangeOutcome::Refused(_))) => refusals += 1,
                    other => panic!("{label}: {other:?}"),
                }
            }
            assert_eq!((wins, refusals), (1, 15), "{label}: {action}");
        }
        assert_eq!(
            store.offering_user_history(a).await.map(|h| h.len()).ok(),
            Some(5),
            "{label}"
        );
    }
}

/// Many changes of different accounts at once (on SQLite they are committed together): each
/// keeps its own outcome, records and events, racing changes of one account still have one
/// winner, and one change that fails (a taken username) fails alone.
#[tokio::test]
async fn offering_concurrent_changes_keep_their_own_outcomes() {
    for db in TestDb::all().await {
        let store = open(&db).await;
        let label = db.label;
        let (_, o) = setup(&store, label, "group").await;
        let mut accounts = Vec::new();
        for _ in 0..12 {
            accounts.push(account(&store, label, &o, "", AccountState::Requested).await);
        }
        account(&store, label, &o, "taken", AccountState::Ok).await;
        let renamed = account(&store, label, &o, "", AccountState::Ok).await;
        let audits = audit_total(&store, label).await;
        // Numbers every event, then counts the stream.
        let events = |store: &Store| {
            let store = store.clone();
            async move {
                while store.sequence_events(1000).await.unwrap_or(0) > 0 {}
                store
                    .events_after(streams::OFFERING_USERS, 0, 10_000)
                    .await
                    .map(|e| e.len())
                    .unwrap_or_default()
            }
        };
        let events_before = events(&store).await;

        // With the writer held, every change below is queued before any is written, so that on
        // SQLite they are committed as one batch.
        let hold = store.hold_writer().await.unwrap_or_else(|e| panic!("{label}: {e}"));
        let mut tasks = Vec::new();
        // Each account once, the first one three times more (racing itself).
        for a in accounts.iter().chain([accounts[0]; 3].iter()) {
            let (store, a) = (store.clone(), *a);
            tasks.push(tokio::spawn(async move {
                store
                    .change_offering_user(a, transition_rule(Action::BeginCreating))
                    .await
            }));
        }
        let failing = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .change_offering_user(renamed, |before| {
                        let mut f = before.fields();
                        f.username = "taken".into();
                        Ok(Some(AccountChange {
                            fields: f,
                            allowed_from: vec![before.state],
                            history: None,
                            audit: entry(actions::OFFERING_USER_UPDATE),
                        }))
                    })
                    .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        drop(hold);
        let (mut wins, mut refusals) = (0, 0);
        for t in tasks {
            match t.await {
                Ok(Ok(ChangeOutcome::Changed { before, after })) => {
                    assert_eq!((before.version, after.version), (1, 2), "{label}");
                    wins += 1;
                }
                Ok(Ok(ChangeOutcome::Refused(_))) => refusals += 1,
                other => panic!("{label}: {other:?}"),
            }
        }
        assert_eq!((wins, refusals), (12, 3), "{label}");
        match failing.await {
            Ok(Err(StoreError::Duplicate("username"))) => {}
            other => panic!("{label}: {other:?}"),
        }
        for a in &accounts {
            let now = store
                .offering_user(*a)
                .await
                .ok()
                .flatten()
                .map(|x| (x.state, x.version));
            assert_eq!(now, Some((AccountState::Creating, 2)), "{label}");
            assert_eq!(
                store.offering_user_history(*a).await.map(|h| h.len()).ok(),
                Some(2),
                "{label}"
            );
        }
        let now = store
            .offering_user(renamed)
            .await
            .ok()
            .flatten()
            .map(|x| (x.username, x.version));
        assert_eq!(now, Some((String::new(), 1)), "{label}");
        assert_eq!(audit_total(&store, label).await, audits + 12, "{label}");
        assert_eq!(events(&store).await, events_before + 12, "{label}");
    }
}

#[tokio::test]
async fn offering_lists_filter_order_and_respect_visibility() {
    for db in TestDb::all().await {
        let store = open(&db).await;
        let label = db.label;
        let (p1, o1) = setup(&store, label, "list-a").await;
        let (_, o2) = setup(&store, label, "list-b").await;
        let a1 = account(&store, label, &o1, "b-user", AccountState::Requested).await;
        let a2 = account(&store, label, &o1, "a-user", AccountState::PendingAccountLinking).await;
        let a3 = account(&store, label, &o1, "c-user", AccountState::ErrorCreating).await;
        let b1 = account(&store, label, &o2, "", AccountState::PendingAccountLinking).await;
        let b1_user = store.offering_user(b1).await.ok().flatten().map(|x| x.user_uuid);

        let q = |f: &dyn Fn(&mut AccountQuery)| {
            let mut q = AccountQuery {
                limit: 100,
                ..Default::default()
            };
            f(&mut q);
            q
        };
        let count = |q: AccountQuery| {
            let store = store.clone();
            async move { store.count_offering_users(&q).await.unwrap_or(-1) }
        };
        assert_eq!(count(q(&|_| {})).await, 4, "{label}");
        assert_eq!(count(q(&|q| q.provider_uuids = vec![p1.uuid.0])).await, 3, "{label}");
        assert_eq!(
            count(q(&|q| {
                q.provider_uuids = vec![p1.uuid.0];
                q.states = vec![AccountState::PendingAccountLinking, AccountState::ErrorCreating];
            }))
            .await,
            2,
            "{label}"
        );
        assert_eq!(count(q(&|q| q.query = Some("A-US".into()))).await, 1, "{label}");
        // Visibility: a provider's accounts plus one's own.
        let vis = Visibility::Limited {
            providers: vec![p1.uuid.0],
            user: b1_user,
        };
        assert_eq!(count(q(&|q| q.visibility = vis.clone())).await, 4, "{label}");
        let vis = Visibility::Limited {
            providers: vec![],
            user: b1_user,
        };
        assert_eq!(count(q(&|q| q.visibility = vis.clone())).await, 1, "{label}");
        let vis = Visibility::Limited {
            providers: vec![],
            user: None,
        };
        assert_eq!(count(q(&|q| q.visibility = vis.clone())).await, 0, "{label}");

        // Default order: username (empty first), then uuid; paging.
        let page = store
            .list_offering_users(&q(&|q| q.provider_uuids = vec![p1.uuid.0]))
            .await
            .unwrap_or_default();
        let names: Vec<&str> = page.iter().map(|a| a.username.as_str()).collect();
        assert_eq!(names, ["a-user", "b-user", "c-user"], "{label}");
        let page = store
            .list_offering_users(&q(&|q| {
                q.provider_uuids = vec![p1.uuid.0];
                q.order = vec![(AccountOrder::Username, true)];
                q.offset = 1;
                q.limit = 1;
            }))
            .await
            .unwrap_or_default();
        assert_eq!(page.iter().map(|a| a.uuid).collect::<Vec<_>>(), [a1], "{label}");
        // Several states: each page of the merged per-state tops is the page of the whole.
        let two = [AccountState::PendingAccountLinking, AccountState::ErrorCreating];
        for (offset, desc, want) in [(0, false, a2), (1, false, a3), (0, true, a3), (1, true, a2)] {
            let page = store
                .list_offering_users(&q(&|q| {
                    q.provider_uuids = vec![p1.uuid.0];
                    q.states = two.to_vec();
                    q.order = vec![(AccountOrder::Username, desc)];
                    q.offset = offset;
                    q.limit = 1;
                }))
                .await
                .unwrap_or_else(|e| panic!("{label}: {e}"));
            assert_eq!(
                page.iter().map(|a| a.uuid).collect::<Vec<_>>(),
                [want],
                "{label}: {offset} {desc}"
            );
        }

        // The dashboard query is answered from the provider/state index.
        let plan = store
            .explain_offering_users(&q(&|q| {
                q.provider_uuids = vec![p1.uuid.0];
                q.states = vec![AccountState::PendingAccountLinking, AccountState::ErrorCreating];
            }))
            .await
            .unwrap_or_default();
        if db.label == "sqlite" {
            assert!(plan.contains("offering_users_provider_state"), "{label}: {plan}");
        }
    }
}

#[tokio::test]
async fn offering_api_tokens_are_found_by_hash_and_revoked() {
    for db in TestDb::all().await {
        let store = open(&db).await;
        let label = db.label;
        let (p, _) = setup(&store, label, "tok").await;
        let t = ApiToken {
            uuid: ApiTokenUuid::new_random(),
            provider_uuid: p.uuid,
            name: "agent".into(),
            created_by: "test".into(),
            created: clock::now(),
        };
        let hash = [7u8; 32];
        store
            .insert_api_token(&t, &hash, &entry(actions::API_TOKEN_CREATE))
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        let found = store.api_token_by_hash(&hash).await.ok().flatten();
        assert_eq!(
            found.map(|(x, h)| (x.uuid, h)),
            Some((t.uuid, hash.to_vec())),
            "{label}"
        );
        assert!(store.api_token_by_hash(&[8u8; 32]).await.ok().flatten().is_none());
        assert_eq!(store.list_api_tokens(p.uuid).await.map(|l| l.len()).ok(), Some(1));
        // Revoking another provider's token does nothing.
        assert_eq!(
            store
                .delete_api_token(ProviderUuid::new_random(), t.uuid, &entry(actions::API_TOKEN_REVOKE))
                .await
                .ok(),
            Some(false)
        );
        assert_eq!(
            store
                .delete_api_token(p.uuid, t.uuid, &entry(actions::API_TOKEN_REVOKE))
                .await
                .ok(),
            Some(true)
        );
        assert!(store.api_token_by_hash(&hash).await.ok().flatten().is_none(), "{label}");
    }
}

/// The per-node token cache: hits within the age, never caches a miss, forgets a token revoked
/// (or whose provider is deleted) through the same store at once, and another node's
/// revocation once the entry is older than the age.
#[tokio::test]
async fn offering_api_token_cache_never_outlives_revocation_on_its_node() {
    use std::time::Duration;
    const LONG: Duration = Duration::from_secs(3600);
    for db in TestDb::all().await {
        let node = open(&db).await;
        let other_node = open(&db).await;
        let label = db.label;
        let mint = |p: &Provider, hash: [u8; 32]| {
            let t = ApiToken {
                uuid: ApiTokenUuid::new_random(),
                provider_uuid: p.uuid,
                name: "agent".into(),
                created_by: "test".into(),
                created: clock::now(),
            };
            let store = node.clone();
            async move {
                store
                    .insert_api_token(&t, &hash, &entry(actions::API_TOKEN_CREATE))
                    .await
                    .unwrap_or_else(|e| panic!("{label}: {e}"));
                t
            }
        };
        let found = |store: &Store, hash: [u8; 32], age: Duration| {
            let store = store.clone();
            async move {
                store
                    .api_token_by_hash_cached(&hash, age)
                    .await
                    .unwrap_or_else(|e| panic!("{label}: {e}"))
                    .map(|(t, stored)| {
                        assert_eq!(stored, hash.to_vec(), "{label}");
                        t.uuid
                    })
            }
        };
        let (p, _) = setup(&node, label, "cache").await;

        // A miss is not remembered: a token created right after is found.
        let hash = [21u8; 32];
        assert_eq!(found(&node, hash, LONG).await, None, "{label}");
        let t = mint(&p, hash).await;
        assert_eq!(found(&node, hash, LONG).await, Some(t.uuid), "{label}");

        // Revoked on this node: gone at once, though the entry was young.
        assert_eq!(found(&node, hash, LONG).await, Some(t.uuid), "{label}");
        assert_eq!(
            node.delete_api_token(p.uuid, t.uuid, &entry(actions::API_TOKEN_REVOKE))
                .await
                .ok(),
            Some(true),
            "{label}"
        );
        assert_eq!(found(&node, hash, LONG).await, None, "{label}");

        // Revoked on another node: this node answers from its cache within the age, and asks
        // the database again once its entry is older.
        let hash = [22u8; 32];
        let t = mint(&p, hash).await;
        assert_eq!(found(&node, hash, LONG).await, Some(t.uuid), "{label}");
        assert_eq!(
            other_node
                .delete_api_token(p.uuid, t.uuid, &entry(actions::API_TOKEN_REVOKE))
                .await
                .ok(),
            Some(true),
            "{label}"
        );
        assert_eq!(found(&node, hash, LONG).await, Some(t.uuid), "{label}: cached");
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(
            found(&node, hash, Duration::from_millis(20)).await,
            None,
            "{label}: older than the age"
        );
        assert_eq!(found(&other_node, hash, LONG).await, None, "{label}");

        // Deleting the provider takes its (cached) tokens with it.
        let (q, _) = setup(&node, label, "cache-gone").await;
        let hash = [23u8; 32];
        let t = mint(&q, hash).await;
        assert_eq!(found(&node, hash, LONG).await, Some(t.uuid), "{label}");
        // `setup` gave it an offering, which a provider must not have when deleted.
        let offerings = node
            .list_offerings(Some(&[q.uuid.0]))
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        for o in offerings {
            node.delete_offering(o.uuid, &entry(actions::OFFERING_DELETE))
                .await
                .unwrap_or_else(|e| panic!("{label}: {e}"));
        }
        assert_eq!(
            node.delete_provider(q.uuid, &entry(actions::PROVIDER_DELETE))
                .await
                .ok(),
            Some(Some(true)),
            "{label}"
        );
        assert_eq!(found(&node, hash, LONG).await, None, "{label}");
    }
}

#[tokio::test]
async fn offering_events_are_filtered_by_provider() {
    for db in TestDb::all().await {
        let store = open(&db).await;
        let label = db.label;
        let (p1, o1) = setup(&store, label, "ev-a").await;
        let (p2, o2) = setup(&store, label, "ev-b").await;
        account(&store, label, &o1, "", AccountState::Requested).await;
        account(&store, label, &o2, "", AccountState::Requested).await;
        account(&store, label, &o1, "", AccountState::Requested).await;
        store
            .sequence_events(100)
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        let all = store
            .events_after(streams::OFFERING_USERS, 0, 100)
            .await
            .unwrap_or_default();
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3], "{label}");
        let mine = store
            .events_after_for_providers(streams::OFFERING_USERS, &[p1.uuid.to_string()], 0, 100)
            .await
            .unwrap_or_default();
        assert_eq!(mine.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 3], "{label}");
        let theirs = store
            .events_after_for_providers(streams::OFFERING_USERS, &[p2.uuid.to_string()], 1, 100)
            .await
            .unwrap_or_default();
        assert_eq!(theirs.iter().map(|e| e.seq).collect::<Vec<_>>(), [2], "{label}");
        let none = store
            .events_after_for_providers(streams::OFFERING_USERS, &[], 0, 100)
            .await
            .unwrap_or_default();
        assert!(none.is_empty(), "{label}");
    }
}

/// The account totals read from the tallies equal a count of the accounts themselves, after
/// creations, transitions, refused transitions, deletions and compactions.
#[tokio::test]
async fn offering_account_tallies_match_the_accounts() {
    for db in TestDb::all().await {
        let store = open(&db).await;
        let label = db.label;
        let (p, o) = setup(&store, label, "tally").await;
        let (_, o2) = setup(&store, label, "tally2").await;
        let mut accounts = Vec::new();
        for i in 0..6 {
            let on = if i % 3 == 0 { &o2 } else { &o };
            accounts.push(account(&store, label, on, "", AccountState::Requested).await);
        }
        // What the tallies say, against what a count of the rows says (the filter has a
        // runtime-state condition that every account meets, so it is counted row by row).
        let check = |store: Store, what: &'static str| async move {
            for (states, offerings, providers) in [
                (vec![], vec![], vec![]),
                (vec![AccountState::Requested], vec![], vec![]),
                (vec![AccountState::Creating, AccountState::Ok], vec![], vec![p.uuid.0]),
                (vec![AccountState::Ok], vec![o.uuid.0], vec![]),
                (vec![], vec![o2.uuid.0], vec![]),
            ] {
                let q = AccountQuery {
                    states: states.clone(),
                    offering_uuids: offerings.clone(),
                    provider_uuids: providers.clone(),
                    ..Default::default()
                };
                let rows = AccountQuery {
                    runtime_states: vec![RuntimeState::Active],
                    ..q.clone()
                };
                let tallied = store.count_offering_users(&q).await.expect("count");
                let counted = store.count_offering_users(&rows).await.expect("count");
                assert_eq!(
                    tallied, counted,
                    "{label} {what}: {states:?} {offerings:?} {providers:?}"
                );
            }
        };
        check(store.clone(), "created").await;
        for a in &accounts[..4] {
            let r = store
                .change_offering_user(*a, transition_rule(Action::BeginCreating))
                .await;
            assert!(matches!(r, Ok(ChangeOutcome::Changed { .. })), "{label}: {r:?}");
        }
        for a in &accounts[..2] {
            let r = store.change_offering_user(*a, transition_rule(Action::SetOk)).await;
            assert!(matches!(r, Ok(ChangeOutcome::Changed { .. })), "{label}: {r:?}");
        }
        // Refused: nothing counted.
        let r = store
            .change_offering_user(accounts[5], transition_rule(Action::SetDeleted))
            .await;
        assert!(matches!(r, Ok(ChangeOutcome::Refused(_))), "{label}: {r:?}");
        check(store.clone(), "after transitions").await;
        assert!(
            store.compact_offering_user_tallies().await.expect("compact") > 0,
            "{label}: the +1/-1 rows fold"
        );
        assert_eq!(
            store.compact_offering_user_tallies().await.expect("compact"),
            0,
            "{label}: folded already"
        );
        check(store.clone(), "compacted").await;
        assert!(
            store
                .delete_offering_user(accounts[0], &entry(actions::OFFERING_USER_DELETE))
                .await
                .expect("delete"),
            "{label}"
        );
        check(store.clone(), "after a deletion").await;
        store.compact_offering_user_tallies().await.expect("compact");
        check(store.clone(), "compacted again").await;
    }
}
