//! The workspace's layering, stated as absences and checked on the sources (ARCHITECTURE.md, "Invariants"):
//!
//! - no source file imports a file that imports it back, directly or through others (each file can be
//!   read knowing only the files below it);
//! - the adapter's front door never names the engine, and the adapter never names routing or other nodes;
//! - the engine never names HTTP or the coroutine runtime.
//!
//! "Imports" means a path in code (`use`, or a qualified path): `crate::a::b`, `super::x`, `self::x`, or
//! from a module file a child it declares (`mod conn;` then `conn::serve`). Comments (doc links included)
//! and `#[cfg(test)]` modules are not imports. A path resolves to the deepest module file it names.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the harness sits in the workspace").to_path_buf()
}

/// Every `.rs` file under `src`, keyed by its module path (`""` for the crate root, `"load::conn"`).
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("readable source directory") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src").with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                parts.pop();
            }
            out.insert(parts.join("::"), path);
        }
    }
    out
}

/// The code of a file: comments and `#[cfg(test)]` modules removed.
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]")
            && lines.peek().is_some_and(|l| l.trim_start().starts_with("mod "))
        {
            break; // test modules sit at the end of a file
        }
        let line = match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The module paths `file` (module `me`) names, resolved against `known`.
fn imports(me: &str, code: &str, known: &BTreeMap<String, PathBuf>) -> BTreeSet<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let me_parts: Vec<&str> = if me.is_empty() { vec![] } else { me.split("::").collect() };
    let children: BTreeSet<String> = known
        .keys()
        .filter_map(|m| {
            let rest = if me.is_empty() { Some(m.as_str()) } else { m.strip_prefix(me)?.strip_prefix("::") };
            rest.filter(|r| !r.is_empty() && !r.contains("::")).map(str::to_string)
        })
        .collect();
    let mut found = BTreeSet::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let starts_word = i == 0 || !(ident(bytes[i - 1] as char) || bytes[i - 1] == b':');
        if !starts_word || !ident(bytes[i] as char) {
            i += 1;
            continue;
        }
        // A path: identifiers joined by `::`, possibly opening a `{` group (its first item counts).
        let mut parts: Vec<&str> = Vec::new();
        let mut j = i;
        loop {
            let start = j;
            while j < code.len() && ident(bytes[j] as char) {
                j += 1;
            }
            parts.push(&code[start..j]);
            if code[j..].starts_with("::") && code[j + 2..].starts_with(|c: char| ident(c)) {
                j += 2;
            } else {
                break;
            }
        }
        i = j.max(i + 1);
        if code[j..].starts_with("::{") {
            // A use group: each of its items is a path of its own under this prefix.
            let body = &code[j + 3..];
            let mut depth = 0usize;
            let end = body
                .char_indices()
                .find(|&(_, c)| {
                    depth = match c {
                        '{' => depth + 1,
                        '}' if depth == 0 => return true,
                        '}' => depth - 1,
                        _ => depth,
                    };
                    false
                })
                .map_or(body.len(), |(at, _)| at);
            let prefix = parts.join("::");
            let mut items = Vec::new();
            let mut depth = 0usize;
            let mut item_start = 0;
            for (at, c) in body[..end].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth = depth.saturating_sub(1),
                    ',' if depth == 0 => {
                        items.push(&body[item_start..at]);
                        item_start = at + 1;
                    }
                    _ => {}
                }
            }
            items.push(&body[item_start..end]);
            let expanded =
                items.iter().map(|item| format!("{prefix}::{}\n", item.trim())).collect::<Vec<_>>().concat();
            found.extend(imports(me, &expanded, known));
            i = j + 3 + end;
            continue;
        }
        if parts.len() < 2 {
            continue;
        }
        let base: Vec<&str> = match parts[0] {
            "crate" => parts[1..].to_vec(),
            "self" => me_parts.iter().copied().chain(parts[1..].iter().copied()).collect(),
            "super" => {
                let mut p = me_parts.clone();
                let mut rest = &parts[..];
                while rest.first() == Some(&"super") {
                    p.pop();
                    rest = &rest[1..];
                }
                p.into_iter().chain(rest.iter().copied()).collect()
            }
            child if children.contains(child) => {
                me_parts.iter().copied().chain(parts.iter().copied()).collect()
            }
            _ => continue,
        };
        // The deepest module the path names.
        let target = (0..=base.len()).rev().map(|n| base[..n].join("::")).find(|m| known.contains_key(m));
        if let Some(target) = target.filter(|t| t != me) {
            found.insert(target);
        }
    }
    found
}

/// The groups of files that import each other, directly or through others (strongly connected
/// components of more than one file): every circle, not only the first.
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(n) = stack.pop() {
            for next in edges.get(&n).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> = edges.keys().map(|n| (n, reach(n))).collect();
    let mut groups: Vec<BTreeSet<String>> = Vec::new();
    for (n, r) in &reaches {
        if !r.contains(*n) || groups.iter().any(|g| g.contains(*n)) {
            continue;
        }
        let group: BTreeSet<String> =
            r.iter().filter(|m| reaches.get(m).is_some_and(|back| back.contains(*n))).cloned().collect();
        groups.push(group);
    }
    groups
}

fn crate_sources(name: &str) -> Vec<(String, PathBuf, String)> {
    let known = modules(&workspace().join(name).join("src"));
    known
        .iter()
        .map(|(m, p)| (m.clone(), p.clone(), fs::read_to_string(p).expect("readable source")))
        .collect()
}

#[test]
fn no_source_file_imports_a_file_that_imports_it_back() {
    let mut found = Vec::new();
    for name in ["engine", "adapter-http", "harness", "benches"] {
        let src = workspace().join(name).join("src");
        let known = modules(&src);
        let edges: BTreeMap<String, BTreeSet<String>> = known
            .iter()
            .map(|(m, p)| {
                (m.clone(), imports(m, &code(&fs::read_to_string(p).expect("readable source")), &known))
            })
            .collect();
        for group in circles(&edges) {
            let files: Vec<String> = group
                .iter()
                .map(|m| known[m].strip_prefix(workspace()).unwrap_or(&known[m]).display().to_string())
                .collect();
            found.push(files.join(", "));
        }
    }
    assert!(found.is_empty(), "files that import each other:\n{}", found.join("\n"));
}

#[test]
fn the_checker_sees_a_circle() {
    let known: BTreeMap<String, PathBuf> =
        ["", "a", "b", "load", "load::conn"].iter().map(|m| (m.to_string(), PathBuf::from(m))).collect();
    let mut edges = BTreeMap::new();
    edges.insert("a".to_string(), imports("a", "use crate::b::Thing;", &known));
    edges.insert("b".to_string(), imports("b", "fn f() { crate::a::go() }", &known));
    assert_eq!(circles(&edges).len(), 1);
    // A parent using its child and the child naming the parent's item is a circle too.
    let mut edges = BTreeMap::new();
    edges.insert("load".to_string(), imports("load", "mod conn;\nfn f() { conn::run() }", &known));
    edges.insert("load::conn".to_string(), imports("load::conn", "use super::Protocol;", &known));
    assert_eq!(circles(&edges).len(), 1);
    // Comments and test modules do not import.
    let text = "/// see [`crate::b::x`]\nfn f() {}\n#[cfg(test)]\nmod tests {\n use crate::b::y;\n}\n";
    assert!(imports("a", &code(text), &known).is_empty());
}

/// Files of `krate` (under `under`, a module path prefix) whose code names any of `words`.
fn naming(krate: &str, under: &str, words: &[&str]) -> Vec<String> {
    crate_sources(krate)
        .into_iter()
        .filter(|(m, _, _)| m == under || m.starts_with(&format!("{under}::")) || under.is_empty())
        .filter_map(|(_, path, text)| {
            let code = code(&text);
            let hits: Vec<&str> = words.iter().copied().filter(|w| code.contains(w)).collect();
            (!hits.is_empty()).then(|| format!("{} names {hits:?}", path.display()))
        })
        .collect()
}

#[test]
fn the_front_door_never_names_the_engine() {
    let found = naming("adapter-http", "front", &["otkv_engine", "crate::node"]);
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn the_adapter_never_names_routing_or_other_nodes() {
    let found = naming("adapter-http", "", &["otkv_harness", "Router", "rendezvous", "upstream"]);
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn the_engine_never_names_http_or_the_runtime() {
    let found = naming("engine", "", &["otkv_adapter_http", "may::", "httparse", "HttpError"]);
    assert!(found.is_empty(), "{found:#?}");
}
