//! Look-alike usernames (migration 0008): refused by the index even when racing; rows from
//! before the rules get their keys.

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------------------------------------
// Look-alike usernames (migration 0008)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn look_alike_usernames_are_refused_by_the_index_even_when_racing() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        insert(&store, label, &new_user("admin")).await;
        insert(&store, label, &new_user("straße")).await;
        let audits = audit_total(&store, label).await;
        for name in ["\u{430}dmin", "adrnin", "STRASSE", "strasse"] {
            let dup = new_user(name);
            let r = store.insert_user(&dup, &create_entry(&dup)).await;
            assert!(
                matches!(r, Err(StoreError::Duplicate("username"))),
                "{label}: inserting {name:?}: {r:?}"
            );
            assert!(
                load(&store, label, dup.uuid).await.is_none(),
                "{label}: {name:?}: no row"
            );
        }
        assert_eq!(audit_total(&store, label).await, audits, "{label}: nothing audited");

        // Renaming into a look-alike is refused too, and changes nothing.
        let bob = new_user("bob");
        insert(&store, label, &bob).await;
        let mut rename = bob.clone();
        rename.username = "\u{430}dmin".into();
        let r = store.update_user(&rename, 1, false, &create_entry(&rename)).await;
        assert!(matches!(r, Err(StoreError::Duplicate("username"))), "{label}: {r:?}");
        let (kept, _) = load(&store, label, bob.uuid).await.expect("bob");
        assert_eq!(kept.username, "bob", "{label}: rename refused");

        // Eight look-alikes of one new name at once: exactly one goes in.
        let names = [
            "carol",
            "car\u{43e}l",
            "\u{441}arol",
            "CAROL",
            "c\u{430}rol",
            "car\u{3bf}l",
            "\u{441}ar\u{43e}l",
            "\u{ff43}\u{ff41}\u{ff52}\u{ff4f}\u{ff4c}",
        ];
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(names.len()));
        let tasks: Vec<_> = names
            .iter()
            .map(|name| {
                let (store, barrier) = (store.clone(), barrier.clone());
                let u = new_user(name);
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.insert_user(&u, &create_entry(&u)).await
                })
            })
            .collect();
        let (mut ok, mut clash) = (0, 0);
        for t in tasks {
            match t.await.unwrap_or_else(|e| panic!("{label}: task: {e}")) {
                Ok(()) => ok += 1,
                Err(StoreError::Duplicate(_)) => clash += 1,
                Err(e) => panic!("{label}: concurrent insert_user: unexpected error {e:?}"),
            }
        }
        assert_eq!(ok, 1, "{label}: one of the look-alikes goes in ({clash} refused)");
        store.close().await;
    }
}

/// Makes `user`'s row look as it did before migration 0008: `username` as stored then, its key
/// lower-cased, no look-alike key.
async fn as_before_0008(db: &TestDb, user: Uuid, username: &str) {
    let sql = "UPDATE users SET username = $2, username_key = $3, username_skeleton = NULL WHERE uuid = $1";
    if db.label == "postgres" {
        let raw = sqlx::PgPool::connect(&db.url).await.expect("raw connection");
        sqlx::query(sql)
            .bind(user)
            .bind(username)
            .bind(username.to_lowercase())
            .execute(&raw)
            .await
            .expect("legacy row");
        raw.close().await;
    } else {
        let raw = sqlx::SqlitePool::connect(&db.url).await.expect("raw connection");
        sqlx::query(sql)
            .bind(user)
            .bind(username)
            .bind(username.to_lowercase())
            .execute(&raw)
            .await
            .expect("legacy row");
        raw.close().await;
    }
}

#[tokio::test]
async fn keys_of_rows_from_before_the_username_rules_are_filled_in_and_clashes_flagged() {
    for db in TestDb::all().await {
        let label = db.label;
        let store = open(&db).await;
        let t0 = clock::now() - Duration::days(100);
        // (name as stored before the rules, sign-up day); each is inserted under a neutral name
        // first, then turned into the old row.
        let old = [
            ("\u{ff41}\u{ff44}\u{ff4d}\u{ff49}\u{ff4e}", 0), // full-width: its key changes
            ("admin", 1),
            ("\u{430}dmin", 2), // Cyrillic а
            ("STRASSE", 3),
            ("Stra\u{df}e", 4),
            ("Admin\u{200b}", 5), // refused by PRECIS today
            ("bob", 6),
        ];
        let mut ids = Vec::new();
        for (i, (name, day)) in old.iter().enumerate() {
            let mut u = new_user(&format!("placeholder{i}x"));
            u.sign_up_time = t0 + Duration::days(*day);
            insert(&store, label, &u).await;
            as_before_0008(&db, u.uuid, name).await;
            ids.push(u.uuid);
        }
        let audits = audit_total(&store, label).await;

        let mut conflicts = store
            .fill_username_keys()
            .await
            .unwrap_or_else(|e| panic!("{label}: fill_username_keys: {e}"));
        conflicts.sort_by_key(|c| ids.iter().position(|u| *u == c.user));
        let (fullwidth, admin, cyrillic, strasse, strasse2, zwsp) = (ids[0], ids[1], ids[2], ids[3], ids[4], ids[5]);
        assert_eq!(
            conflicts,
            vec![
                // The full-width name signed up first, but "admin" already held the key: a name
                // that logs in today keeps doing so.
                UsernameConflict {
                    user: fullwidth,
                    with: Some(admin)
                },
                UsernameConflict {
                    user: cyrillic,
                    with: Some(admin)
                },
                UsernameConflict {
                    user: strasse2,
                    with: Some(strasse)
                },
                UsernameConflict {
                    user: zwsp,
                    with: Some(admin)
                },
            ],
            "{label}"
        );
        assert_eq!(
            audit_total(&store, label).await,
            audits + 4,
            "{label}: each clash audited"
        );
        let rec = newest_audit(&store, label).await;
        assert_eq!(rec.action, actions::USER_USERNAME_CONFLICT, "{label}");
        assert_eq!(
            rec.target.as_deref(),
            Some(muster_core::ids::UserId::from_uuid(fullwidth).to_string().as_str()),
            "{label}: names whose key changes are done last"
        );

        // Every account is still there; names reach the accounts that kept their keys.
        assert_eq!(user_count(&store, label).await, 7, "{label}");
        for (typed, owner) in [
            ("ADMIN", admin),
            ("\u{ff41}\u{ff44}\u{ff4d}\u{ff49}\u{ff4e}", admin),
            ("strasse", strasse),
            ("Stra\u{df}e", strasse2),
            ("Admin\u{200b}", zwsp),
            ("BOB", ids[6]),
        ] {
            let (got, _) = store
                .user_by_username(typed)
                .await
                .unwrap_or_else(|e| panic!("{label}: {e}"))
                .unwrap_or_else(|| panic!("{label}: {typed:?} should be found"));
            assert_eq!(got.uuid, owner, "{label}: {typed:?}");
        }
        // A flagged user can still be changed otherwise (its keys stay)…
        let (mut u, version) = load(&store, label, fullwidth).await.expect("row");
        u.email = Some("fw@example.org".into());
        assert!(
            store
                .update_user(&u, version, false, &create_entry(&u))
                .await
                .expect("update"),
            "{label}"
        );
        // …and renamed out of the clash.
        let (mut u, version) = load(&store, label, fullwidth).await.expect("row");
        u.username = "admin-two".into();
        assert!(
            store
                .update_user(&u, version, false, &create_entry(&u))
                .await
                .expect("rename"),
            "{label}"
        );
        assert_eq!(
            store
                .user_by_username("ADMIN-TWO")
                .await
                .expect("read")
                .map(|(u, _)| u.uuid),
            Some(fullwidth)
        );

        // Nothing left to do, and a clash never comes back.
        assert_eq!(store.fill_username_keys().await.expect("again"), vec![], "{label}");
        // A new look-alike of a flagged name's owner is refused as ever.
        let dup = new_user("\u{430}DMIN");
        assert!(store.insert_user(&dup, &create_entry(&dup)).await.is_err(), "{label}");
        store.close().await;
    }
}
