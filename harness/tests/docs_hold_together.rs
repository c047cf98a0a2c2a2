//! The documentation holds together, checked offline on the files themselves:
//!
//! - every relative link in every Markdown file of the workspace points at a file that exists, and its
//!   `#anchor` at a heading that exists there (GitHub's heading anchors);
//! - every repository path the docs name in backticks (`engine/src/map/`, `harness/src/reshard.rs`)
//!   exists, and every file or directory ARCHITECTURE.md's code map names, however briefly
//!   (`server.rs`, `src/front/`), is a real one.
//!
//! Links to the web are not followed (CI has no network to check them with).

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the harness sits in the workspace").to_path_buf()
}

/// Every file under the workspace, relative to it, leaving out builds, results and the patched crate.
fn files(root: &Path) -> Vec<PathBuf> {
    let skip = ["target", ".git", "third_party", "results"];
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("readable directory") {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if path.is_dir() {
                // benches/results holds the figures' index, which is checked; a run's results/ is not.
                if !skip.contains(&name.as_str()) || path.ends_with("benches/results") {
                    stack.push(path);
                }
            } else {
                out.push(path.strip_prefix(root).expect("under the root").to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// The lines of a Markdown file outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens; a repeated
/// heading gets `-1`, `-2`, ...
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for line in prose(text) {
        let Some(title) = line.strip_prefix('#').map(|t| t.trim_start_matches('#')) else { continue };
        if !title.starts_with(' ') {
            continue;
        }
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let n = seen.entry(slug.clone()).or_insert(0);
        out.insert(if *n == 0 { slug.clone() } else { format!("{slug}-{n}") });
        *n += 1;
    }
    out
}

/// The targets of the inline links `[text](target)` in `line`.
fn link_targets(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let end = after.find(')').unwrap_or(after.len());
        out.push(after[..end].trim());
        rest = &after[end..];
    }
    out
}

/// The backticked spans of `line` (inline code).
fn code_spans(line: &str) -> Vec<&str> {
    line.split('`').skip(1).step_by(2).collect()
}

fn markdown_files(root: &Path) -> Vec<PathBuf> {
    files(root).into_iter().filter(|p| p.extension().is_some_and(|e| e == "md")).collect()
}

#[test]
fn every_relative_link_and_anchor_exists() {
    let root = workspace();
    let docs = markdown_files(&root);
    assert!(docs.len() >= 8, "the docs were not found: {docs:?}");
    let mut broken = Vec::new();
    for doc in &docs {
        let text = fs::read_to_string(root.join(doc)).expect("readable Markdown");
        for line in prose(&text) {
            for target in link_targets(line) {
                if target.contains("://") || target.starts_with("mailto:") || target.is_empty() {
                    continue;
                }
                let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
                let path = if file.is_empty() { root.join(doc) } else { root.join(doc).with_file_name(file) };
                if !path.exists() {
                    broken.push(format!("{}: {target}: no such file", doc.display()));
                    continue;
                }
                let is_markdown = path.extension().is_some_and(|e| e == "md");
                if !anchor.is_empty() && is_markdown {
                    let there = fs::read_to_string(&path).expect("readable Markdown");
                    if !anchors(&there).contains(anchor) {
                        broken.push(format!("{}: {target}: no such heading", doc.display()));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_repository_path_the_docs_name_exists() {
    let root = workspace();
    let tops = ["engine/", "adapter-http/", "harness/", "benches/", "docs/", "img/", "third_party/", ".ci/"];
    let mut missing = Vec::new();
    for doc in markdown_files(&root) {
        let text = fs::read_to_string(root.join(&doc)).expect("readable Markdown");
        for line in prose(&text) {
            for span in code_spans(line) {
                let named = tops.iter().any(|t| span.starts_with(t)) && !span.contains(char::is_whitespace);
                if named && !root.join(span.trim_end_matches('/')).exists() {
                    missing.push(format!("{}: `{span}`", doc.display()));
                }
            }
        }
    }
    assert!(missing.is_empty(), "paths named in the docs that do not exist:\n{}", missing.join("\n"));
}

#[test]
fn every_file_the_code_map_names_exists() {
    let root = workspace();
    let all: Vec<String> = files(&root).iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let dirs: BTreeSet<String> = all
        .iter()
        .flat_map(|f| {
            let parts: Vec<&str> = f.split('/').collect();
            (1..parts.len()).map(move |n| format!("{}/", parts[..n].join("/")))
        })
        .collect();
    let text = fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let looks_like_path = |s: &str| {
        !s.is_empty()
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "_./-".contains(c))
            && (s.ends_with('/')
                || [".rs", ".md", ".sh", ".py", ".toml", ".yaml"].iter().any(|e| s.ends_with(e)))
    };
    let mut named = 0;
    let mut missing = Vec::new();
    for line in prose(&text) {
        for span in code_spans(line).into_iter().filter(|s| looks_like_path(s)) {
            named += 1;
            let found = if root.join(span.trim_end_matches('/')).exists() {
                true
            } else if span.ends_with('/') {
                dirs.iter().any(|d| *d == span || d.ends_with(&format!("/{span}")))
            } else {
                all.iter().any(|f| *f == span || f.ends_with(&format!("/{span}")))
            };
            if !found {
                missing.push(span.to_string());
            }
        }
    }
    assert!(named > 50, "the code map names only {named} paths: is the check reading it?");
    assert!(missing.is_empty(), "ARCHITECTURE.md names paths that do not exist: {missing:?}");
}

#[test]
fn anchors_follow_github() {
    let text =
        "# OTKV\n## Set-up: two commands on a fresh machine\n## Several client machines: `--start-at`, \
                `harness merge`\n## The memory engine's table (`engine/src/table/`)\n## Notes\n## Notes\n";
    let got = anchors(text);
    for want in [
        "otkv",
        "set-up-two-commands-on-a-fresh-machine",
        "several-client-machines---start-at-harness-merge",
        "the-memory-engines-table-enginesrctable",
        "notes",
        "notes-1",
    ] {
        assert!(got.contains(want), "{want} not in {got:?}");
    }
}
