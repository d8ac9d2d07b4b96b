//! The mail outbox and one-time tokens: written with their change, claimed by one sender,
//! recorded, retried; a token replaced by the next, spent once, refused when expired.

use super::{entry, insert, load_some, new_user, open};
use muster_core::audit::actions;
use muster_core::clock;
use muster_store::testing::TestDb;
use muster_store::{Followups, NewActionToken, NewMail, Redemption};
use time::Duration;
use uuid::Uuid;

fn mail(user: Option<Uuid>, now: time::OffsetDateTime) -> NewMail {
    NewMail {
        id: Uuid::new_v4(),
        kind: "password_reset",
        recipient: "a@example.test".into(),
        user_uuid: user,
        sealed_message: "sealed".into(),
        created_at: now,
    }
}

fn token(user: Uuid, hash: u8, now: time::OffsetDateTime, ttl: Duration) -> NewActionToken {
    NewActionToken {
        hash: [hash; 32],
        purpose: "password_reset",
        user_uuid: user,
        created_at: now,
        expires_at: now + ttl,
    }
}

#[tokio::test]
async fn outbox_mail_is_claimed_once_sent_failed_and_retried() {
    for db in TestDb::all().await {
        let l = db.label;
        let store = open(&db).await;
        let now = clock::now();
        let m = mail(None, now);
        let f = Followups {
            tokens: vec![],
            mails: vec![m.clone()],
        };
        store
            .write_followups(&f, &entry(actions::USER_PASSWORD_RESET_REQUEST, None))
            .await
            .expect("write");
        let claimed = store
            .claim_due_mail(now, now + Duration::minutes(2), 10)
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 1, "{l}");
        assert_eq!(claimed[0].sealed_message.as_deref(), Some("sealed"), "{l}");
        // Claimed: nobody else gets it until the claim lapses.
        let again = store
            .claim_due_mail(now, now + Duration::minutes(2), 10)
            .await
            .expect("claim");
        assert!(again.is_empty(), "{l}");
        let later = now + Duration::minutes(3);
        let lapsed = store
            .claim_due_mail(later, later + Duration::minutes(2), 10)
            .await
            .expect("claim");
        assert_eq!(lapsed.len(), 1, "{l}: a lapsed claim makes it due again");

        store
            .mail_attempt_failed(m.id, later + Duration::seconds(30), "421 busy", false)
            .await
            .expect("failed");
        let row = &store.list_mail(Some("pending"), 10).await.expect("list")[0];
        assert_eq!((row.attempts, row.last_error.as_deref()), (1, Some("421 busy")), "{l}");
        assert!(
            store.claim_due_mail(later, later, 10).await.expect("claim").is_empty(),
            "{l}: not due before its back-off"
        );
        store
            .mail_attempt_failed(m.id, later, "550 no", true)
            .await
            .expect("give up");
        assert_eq!(store.list_mail(Some("failed"), 10).await.expect("list").len(), 1, "{l}");
        assert!(
            store.claim_due_mail(later, later, 10).await.expect("claim").is_empty(),
            "{l}"
        );
        assert_eq!(
            store.mail_counts().await.expect("counts"),
            vec![("failed".to_owned(), 1)],
            "{l}"
        );

        let retry = entry(actions::MAIL_RETRY, Some(m.id.to_string()));
        assert!(store.retry_mail(m.id, later, &retry).await.expect("retry"), "{l}");
        assert!(
            !store.retry_mail(m.id, later, &retry).await.expect("retry"),
            "{l}: only a failed mail"
        );
        let due = store
            .claim_due_mail(later, later + Duration::minutes(2), 10)
            .await
            .expect("claim");
        assert_eq!(due.len(), 1, "{l}");
        assert_eq!(due[0].attempts, 0, "{l}: counted afresh");
        store.mail_sent(m.id, later).await.expect("sent");
        let sent = &store.list_mail(Some("sent"), 10).await.expect("list")[0];
        assert!(sent.sealed_message.is_none(), "{l}: the message is erased once sent");
        assert!(sent.sent_at.is_some(), "{l}");
    }
}

#[tokio::test]
async fn a_token_replaces_the_older_is_spent_once_and_refused_when_expired() {
    for db in TestDb::all().await {
        let l = db.label;
        let store = open(&db).await;
        let u = new_user(&format!("tok-{l}"));
        insert(&store, l, &u).await;
        let now = clock::now();
        let first = Followups {
            tokens: vec![token(u.uuid, 1, now, Duration::minutes(30))],
            mails: vec![mail(Some(u.uuid), now)],
        };
        let audit = entry(actions::USER_PASSWORD_RESET_REQUEST, None);
        store.write_followups(&first, &audit).await.expect("first");
        let second = Followups {
            tokens: vec![token(u.uuid, 2, now, Duration::minutes(30))],
            mails: vec![],
        };
        store.write_followups(&second, &audit).await.expect("second");
        assert!(
            store
                .action_token(&[1; 32], "password_reset")
                .await
                .expect("read")
                .is_none(),
            "{l}: replaced"
        );
        let (owner, _) = store
            .action_token(&[2; 32], "password_reset")
            .await
            .expect("read")
            .expect("live");
        assert_eq!(owner, u.uuid, "{l}");

        let (user, version) = load_some(&store, l, u.uuid).await;
        let redeem = |hash: u8, at: time::OffsetDateTime, version: i64| {
            let store = store.clone();
            let user = user.clone();
            async move {
                let audit = entry(actions::USER_PASSWORD_RESET, None);
                store
                    .redeem_token(
                        &[hash; 32],
                        "password_reset",
                        at,
                        Redemption {
                            user: &user,
                            version,
                            session: None,
                            followups: &Followups::default(),
                            verify_email: Some("a@example.test"),
                            audit: &audit,
                        },
                    )
                    .await
                    .expect("redeem")
            }
        };
        assert!(!redeem(2, now + Duration::minutes(31), version).await, "{l}: expired");
        assert!(!redeem(2, now, version + 1).await, "{l}: the user moved on");
        assert!(redeem(2, now, version).await, "{l}");
        assert!(!redeem(2, now, version + 1).await, "{l}: spent");
        assert!(store.email_verification(u.uuid).await.expect("read").is_some(), "{l}");
        // Expired tokens are purged.
        store
            .write_followups(
                &Followups {
                    tokens: vec![token(u.uuid, 3, now - Duration::hours(1), Duration::minutes(30))],
                    mails: vec![],
                },
                &audit,
            )
            .await
            .expect("old");
        assert_eq!(store.purge_action_tokens(now).await.expect("purge"), 1, "{l}");
    }
}
