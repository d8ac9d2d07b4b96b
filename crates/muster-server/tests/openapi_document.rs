//! The OpenAPI document: a committed snapshot (`docs/openapi.json`), so that every change to
//! the API shows in review, and the properties generated clients rely on.
//!
//! After an intended change: `MUSTER_UPDATE_OPENAPI=1 cargo test -p muster-server --test
//! openapi_document`, then review and commit `docs/openapi.json`.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn document() -> Value {
    serde_json::to_value(muster_server::openapi_document()).expect("the document serializes")
}

fn snapshot_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

/// (method, path, operation) for every operation.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                out.push((method.to_owned(), path.clone(), op.clone()));
            }
        }
    }
    out
}

#[test]
fn document_matches_the_committed_snapshot() {
    let generated = format!("{}\n", serde_json::to_string_pretty(&document()).expect("pretty JSON"));
    let path = snapshot_path();
    if std::env::var_os("MUSTER_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("write docs/openapi.json");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let first = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
        let around = |text: &str| {
            text.lines()
                .skip(first.saturating_sub(3))
                .take(7)
                .collect::<Vec<_>>()
                .join("\n")
        };
        panic!(
            "the OpenAPI document differs from docs/openapi.json from line {}:\n--- committed\n{}\n--- generated\n{}\n\
             If the change is intended, run `MUSTER_UPDATE_OPENAPI=1 cargo test -p muster-server --test openapi_document` \
             and commit docs/openapi.json.",
            first + 1,
            around(&committed),
            around(&generated)
        );
    }
}

#[test]
fn operation_ids_are_unique() {
    let doc = document();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (method, path, op) in operations(&doc) {
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path} has no operationId"))
            .to_owned();
        if let Some(other) = seen.insert(id.clone(), format!("{method} {path}")) {
            panic!("operationId {id} is used by {other} and {method} {path}");
        }
    }
}

#[test]
fn path_parameters_are_exactly_those_of_the_path() {
    let doc = document();
    for (method, path, op) in operations(&doc) {
        let template: BTreeSet<String> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_owned)
            .collect();
        let mut declared = BTreeSet::new();
        for p in op["parameters"].as_array().into_iter().flatten() {
            let name = p["name"].as_str().expect("parameter name").to_owned();
            if p["in"] == "path" {
                assert!(
                    template.contains(&name),
                    "{method} {path}: {name} is declared in the path but is not in it"
                );
                assert_eq!(p["required"], true, "{method} {path}: path parameter {name}");
                declared.insert(name);
            }
        }
        assert_eq!(declared, template, "{method} {path}: every path parameter is declared");
    }
}

#[test]
fn errors_are_problem_documents_and_the_shared_ones_are_declared() {
    let doc = document();
    let problem = "#/components/schemas/Problem";
    for (method, path, op) in operations(&doc) {
        let responses = op["responses"].as_object().expect("responses");
        for (status, response) in responses {
            let response = match response["$ref"].as_str() {
                Some(r) => &doc["components"]["responses"][r.trim_start_matches("#/components/responses/")],
                None => response,
            };
            assert!(response.is_object(), "{method} {path} {status}: a dangling reference");
            let content = response["content"].as_object().cloned().unwrap_or_default();
            assert!(
                content.get("application/json").map(|c| &c["schema"]["$ref"]) != Some(&Value::from(problem)),
                "{method} {path} {status}: a problem document is declared as application/json"
            );
            assert!(
                !response["description"].as_str().unwrap_or("").is_empty(),
                "{method} {path} {status}: no description"
            );
        }
        let secured = op["security"]
            .as_array()
            .is_some_and(|reqs| !reqs.is_empty() && reqs.iter().all(|r| r.as_object().is_some_and(|o| !o.is_empty())));
        let mut expected = vec!["503"];
        if secured {
            expected.push("401");
        }
        if op.get("requestBody").is_some() {
            expected.extend(["400", "413", "415"]);
        }
        if op["parameters"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["in"] != "header"))
        {
            expected.push("400");
        }
        if method != "get" {
            expected.push("507");
        }
        for status in expected {
            assert!(
                responses.contains_key(status),
                "{method} {path} does not declare {status}"
            );
        }
    }
}

#[test]
fn a_regular_users_view_fits_the_user_schema() {
    // A regular user is shown only the regular fields: the schema must not require the others.
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    let mut required = BTreeSet::new();
    for part in schemas["UserView"]["allOf"].as_array().expect("UserView is allOf") {
        let part = match part["$ref"].as_str() {
            Some(r) => &schemas[r.trim_start_matches("#/components/schemas/")],
            None => part,
        };
        for name in part["required"].as_array().into_iter().flatten() {
            required.insert(name.as_str().expect("name").to_owned());
        }
    }
    let regular: BTreeSet<String> = ["user_id", "uuid", "username", "is_totp_enabled", "totp_label"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(required, regular);
}

/// `docs/api.md`'s lifecycle table is the table the service enforces, generated from it
/// (`MUSTER_UPDATE_OPENAPI=1` rewrites it there too), and each action's operation describes
/// its row.
#[test]
fn the_lifecycle_is_documented_from_its_table() {
    use muster_core::offering::lifecycle::{self, Action};
    let table = lifecycle::markdown_table();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/api.md");
    let doc = std::fs::read_to_string(&path).expect("read docs/api.md");
    let head = "| Action | From | To | Comments |\n";
    let start = doc.find(head).expect("docs/api.md has the lifecycle table");
    let end = doc[start..].find("\n\n").map_or(doc.len(), |e| start + e + 1);
    if std::env::var_os("MUSTER_UPDATE_OPENAPI").is_some() {
        let updated = format!("{}{}{}", &doc[..start], table, &doc[end..]);
        std::fs::write(&path, updated).expect("write docs/api.md");
        return;
    }
    assert_eq!(
        &doc[start..end],
        table,
        "docs/api.md's lifecycle table differs from muster_core::offering::lifecycle; \
         run MUSTER_UPDATE_OPENAPI=1 cargo test -p muster-server --test openapi_document"
    );
    let api = document();
    for action in Action::ALL {
        let op = &api["paths"][format!("/api/marketplace-offering-users/{{uuid}}/{}/", action.name())]["post"];
        let described = op["description"].as_str().unwrap_or("");
        assert!(
            described.starts_with(&lifecycle::describe(action)),
            "{}: {op}",
            action.name()
        );
    }
}
