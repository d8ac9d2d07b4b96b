//! The service calls other Rust code uses (the workflows): `request_account` is idempotent, also
//! under concurrent calls, and `request_deletion` follows the lifecycle table. On every database.

use muster_core::audit::{AuditEntry, RequestCtx, actions};
use muster_core::clock;
use muster_core::credentials::password::hash_generated;
use muster_core::directory::create::{self, CreateUserInput, Creator, PasswordPlan};
use muster_core::directory::{DirectoryConfig, User};
use muster_core::offering::model::{Offering, OfferingUserUuid, OfferingUuid, Provider, ProviderUuid, UsernamePolicy};
use muster_offerings::{Offerings, is_invalid_transition};
use muster_store::testing::TestDb;
use muster_store::{Store, StoreOptions};

fn ctx() -> RequestCtx {
    RequestCtx {
        cid: "t".into(),
        ..Default::default()
    }
}

fn user(username: &str) -> User {
    let now = clock::now();
    let input = CreateUserInput {
        username: Some(username.to_owned()),
        ..Default::default()
    };
    let p = create::plan(input, Creator::Auto, false, &DirectoryConfig::default(), now).expect("a valid test user");
    let password = match p.password {
        PasswordPlan::Chosen(s) | PasswordPlan::Generated(s) => s,
    };
    User {
        uuid: p.uuid,
        username: p.username,
        email: p.email,
        display_name: p.display_name,
        first_name: p.first_name,
        middle_name: p.middle_name,
        last_name: p.last_name,
        is_active: true,
        is_internal: false,
        is_super_user: false,
        is_approval_needed: p.is_approval_needed,
        approval_status: p.approval_status,
        approval_status_mod_by: p.approval_status_mod_by,
        approval_status_mod_time: now,
        is_locked: false,
        locked_time: None,
        locked_by: None,
        password_hash: hash_generated(&password),
        password_is_set: true,
        password_must_change: false,
        password_last_set: p.password_last_set,
        password_expiry: p.password_expiry,
        sign_up_status: p.sign_up_status,
        sign_up_time: p.sign_up_time,
        is_totp_enabled: false,
        totp_key_sealed: String::new(),
        totp_label: p.totp_label,
        totp_last_step: None,
        updated_at: now,
    }
}

async fn setup(db: &TestDb, policy: UsernamePolicy) -> (Offerings, OfferingUuid, User) {
    let store = Store::connect(&db.url, &StoreOptions::default())
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let now = clock::now();
    let entry = |a| AuditEntry::new(&ctx(), a, None, None);
    let p = Provider {
        uuid: ProviderUuid::new_random(),
        name: "P".into(),
        posix: None,
        created: now,
        modified: now,
    };
    store
        .insert_provider(&p, &entry(actions::PROVIDER_CREATE))
        .await
        .expect("provider");
    let o = Offering {
        uuid: OfferingUuid::new_random(),
        provider_uuid: p.uuid,
        name: "O".into(),
        slug: "o".into(),
        kind: "Marketplace.Basic".into(),
        provider_can_create: false,
        username_policy: policy,
        username_prefix: "walduruser_".into(),
        username_claim: Default::default(),
        posix_pool: Default::default(),
        posix: None,
        created: now,
        modified: now,
    };
    store
        .insert_offering(&o, &entry(actions::OFFERING_CREATE))
        .await
        .expect("offering");
    let u = user("svc-person");
    store.insert_user(&u, &entry(actions::USER_CREATE)).await.expect("user");
    (Offerings::new(store), o.uuid, u)
}

#[tokio::test]
async fn request_account_is_idempotent_even_when_racing() {
    for db in TestDb::all().await {
        let (svc, offering, u) = setup(&db, UsernamePolicy::ServiceProvider).await;
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let svc = svc.clone();
                tokio::spawn(async move { svc.request_account(&ctx(), u.uuid, offering).await })
            })
            .collect();
        let mut uuids = std::collections::BTreeSet::new();
        for c in calls {
            let a = c.await.expect("task").unwrap_or_else(|e| panic!("{}: {e:?}", db.label));
            assert_eq!(a.state.label(), "Requested", "{}", db.label);
            uuids.insert(a.uuid);
        }
        assert_eq!(uuids.len(), 1, "{}: one account", db.label);
        // The offering does not let its provider create accounts, but muster itself may.
        let again = svc.request_account(&ctx(), u.uuid, offering).await.expect("again");
        assert!(uuids.contains(&again.uuid));
    }
}

#[tokio::test]
async fn request_deletion_follows_the_table() {
    for db in TestDb::all().await {
        let (svc, offering, u) = setup(&db, UsernamePolicy::WaldurUsername).await;
        // Under the waldur_username policy the account is named, hence OK, at once.
        let a = svc.request_account(&ctx(), u.uuid, offering).await.expect("account");
        assert_eq!(
            (a.state.label(), a.username.as_deref()),
            ("OK", Some("svc-person")),
            "{}",
            db.label
        );
        let id = OfferingUserUuid::parse(&a.uuid).expect("uuid");
        let d = svc.request_deletion(&ctx(), id).await.expect("request_deletion");
        assert_eq!(d.state.label(), "Requested deletion", "{}", db.label);
        let e = svc
            .request_deletion(&ctx(), id)
            .await
            .expect_err("a second request is refused");
        assert!(is_invalid_transition(&e), "{}: {e:?}", db.label);
        assert!(
            svc.request_deletion(&ctx(), OfferingUserUuid::new_random())
                .await
                .is_err()
        );
    }
}
