//! Rules of the house, checked on the workspace's sources: within a crate, no module refers to
//! one that refers back to it (`a` names `crate::b` and `b` names `crate::a`), and no source
//! file has more than [`MAX_LINES`] lines before its tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lines a source file may have before its `#[cfg(test)]` module.
const MAX_LINES: usize = 700;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's text before its tests.
fn non_test(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match text.find("#[cfg(test)]") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// The crate's top-level modules that `text` names: `crate::m…` and `crate::{m…, n…}`.
fn referenced_modules(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let names: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group.split('}').next().unwrap_or("").split(',').collect(),
            None => vec![rest],
        };
        for name in names {
            let ident: String = name
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            // A module is followed by `::`; `crate::on_db!` or `crate::Store` are not modules.
            if !ident.is_empty() && name.trim_start()[ident.len()..].starts_with("::") {
                out.insert(ident);
            }
        }
    }
    out
}

#[test]
fn no_module_refers_to_one_that_refers_back_and_no_file_is_too_long() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut circles = Vec::new();
    let mut long = Vec::new();
    let mut crate_dirs: Vec<PathBuf> = std::fs::read_dir(&crates)
        .expect("crates directory")
        .flatten()
        .map(|e| e.path().join("src"))
        .filter(|p| p.is_dir())
        .collect();
    crate_dirs.sort();
    assert!(crate_dirs.len() >= 10, "found the workspace's crates: {crate_dirs:?}");
    for src in crate_dirs {
        let mut files = Vec::new();
        sources(&src, &mut files);
        // Top-level module name → the modules it names.
        let mut refs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in &files {
            let text = non_test(file);
            let lines = text.lines().count();
            if lines > MAX_LINES {
                long.push(format!("{} ({lines} lines)", file.display()));
            }
            let rel = file.strip_prefix(&src).unwrap_or(file);
            let Some(top) = rel.components().next().and_then(|c| c.as_os_str().to_str()) else {
                continue;
            };
            let module = top.trim_end_matches(".rs").to_owned();
            if module == "lib" || module == "main" {
                continue;
            }
            refs.entry(module).or_default().extend(referenced_modules(&text));
        }
        for (a, named) in &refs {
            for b in named {
                if a < b && refs.get(b).is_some_and(|back| back.contains(a)) {
                    circles.push(format!("{}: {a} <-> {b}", src.display()));
                }
            }
        }
    }
    assert!(circles.is_empty(), "modules that refer to each other: {circles:#?}");
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines before their tests: {long:#?}"
    );
}

#[test]
fn the_reference_finder_sees_paths_and_groups() {
    let found = referenced_modules(
        "use crate::tx::{on_tx, write_stmt};\nuse crate::{Result, audit::insert, on_db};\nlet x = crate::bind::Value::Int(None); crate::on_db!(s);",
    );
    let expected: BTreeSet<String> = ["tx", "audit", "bind"].into_iter().map(String::from).collect();
    assert_eq!(found, expected);
}
