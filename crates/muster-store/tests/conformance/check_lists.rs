//! The CHECK constraints of both migration sets list exactly the names `muster-core` declares:
//! a state added to (or renamed in) a core enum without a migration fails here, not at the
//! first INSERT of that state in production.

use muster_core::offering::lifecycle::{AccountState, RuntimeState};
use muster_core::offering::model::PosixPool;
use muster_core::workflow::lifecycle::{SubscriptionStatus, Target};
use muster_core::workflow::status::{ProcessStatus, StepStatus};
use std::collections::BTreeSet;

/// Every migration of one backend, in order, as one text.
fn migrations(backend: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The names in `CHECK (<column> IN (…))` of `table`: declared in its CREATE TABLE, or added
/// later by `ALTER TABLE <table> ADD COLUMN <column>`.
fn check_list(sql: &str, table: &str, column: &str) -> BTreeSet<String> {
    let needle = format!("CHECK ({column} IN (");
    // The table's definition ends at the first line that closes it; an added column's at the
    // end of its statement.
    let created = sql.find(&format!("CREATE TABLE {table} (")).map(|start| {
        let body = &sql[start..];
        &body[..body.find("\n);").unwrap_or(body.len())]
    });
    let added = sql
        .find(&format!("ALTER TABLE {table} ADD COLUMN {column} "))
        .map(|start| {
            let body = &sql[start..];
            &body[..body.find(';').unwrap_or(body.len())]
        });
    let (scope, at) = [created, added]
        .into_iter()
        .flatten()
        .find_map(|scope| scope.find(&needle).map(|at| (scope, at)))
        .unwrap_or_else(|| panic!("{table}.{column} has no CHECK list"));
    let list = &scope[at + needle.len()..];
    let list = &list[..list.find(')').unwrap_or(list.len())];
    list.split(',')
        .map(|s| s.trim().trim_matches('\'').to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn set<'a>(names: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    names.into_iter().map(str::to_owned).collect()
}

#[test]
fn migration_check_lists_equal_the_names_core_declares() {
    let expected = [
        (
            "offering_users",
            "state",
            set(AccountState::ALL.map(AccountState::as_db)),
        ),
        (
            "offering_users",
            "runtime_state",
            set(RuntimeState::ALL.map(RuntimeState::as_db)),
        ),
        ("offerings", "posix_pool", set(PosixPool::ALL.map(PosixPool::as_str))),
        (
            "subscriptions",
            "status",
            set(SubscriptionStatus::ALL.map(SubscriptionStatus::as_str)),
        ),
        ("workflows", "target", set(Target::ALL.map(Target::as_str))),
        (
            "processes",
            "last_status",
            set(ProcessStatus::ALL.map(ProcessStatus::as_str)),
        ),
        ("process_steps", "status", set(StepStatus::ALL.map(StepStatus::as_str))),
    ];
    for backend in ["sqlite", "postgres"] {
        let sql = migrations(backend);
        for (table, column, names) in &expected {
            assert_eq!(
                &check_list(&sql, table, column),
                names,
                "{backend}: the CHECK list of {table}.{column} differs from muster-core's names"
            );
        }
    }
}
