//! `docs/openapi.yaml` is a valid `OpenAPI` 3.1 description, and the server keeps to it.
//!
//! Two third-party tools do the judging, not our own code: `openapi-spec-validator` checks the document
//! against the `OpenAPI` 3.1 schema, and `schemathesis` generates requests from it (valid ones, and ones
//! that break it) against a real server and checks every answer: no 5xx, every status, content type and
//! header documented, every body matching its schema, invalid input refused. Schemathesis's
//! `positive_data_acceptance` check is left out: it counts a documented 412 of a conditional write, and
//! the 400 for `cursor` and `after` given together (a rule a schema cannot state), as a bug.
//!
//! The routes only a proxy answers (`/v1/reshard/*`, tag `proxy`) are left out: they act on a move,
//! which `harness/tests/reshard_online.rs` drives properly. The harness runs this suite against its proxy
//! too.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::Node;

fn description() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let workspace = here.parent().expect("the crate sits in the workspace");
    workspace.join("docs/openapi.yaml")
}

/// Runs `command`, failing the test with its output unless it succeeds.
fn must_pass(mut command: Command, what: &str) {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: cannot run it ({e}); .ci/run installs it"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn server_keeps_to_the_description(node: &Node) {
    // Schemathesis keeps a cache in its working directory: a temporary one, not the source tree.
    let scratch = tempfile::tempdir().expect("scratch directory");
    let mut st = Command::new("schemathesis");
    st.current_dir(scratch.path())
        .arg("run")
        .arg(description())
        .args(["--url", &node.url])
        .args(["--checks", "all", "--exclude-checks", "positive_data_acceptance"])
        .args(["--exclude-tag", "proxy", "--max-examples", "40", "--workers", "1"])
        .args(["--seed", "7"])
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .env("NO_COLOR", "1");
    must_pass(st, "schemathesis");
}

#[test]
fn the_description_is_valid_openapi() {
    let mut validator = Command::new("python3");
    validator.args(["-m", "openapi_spec_validator"]).arg(description());
    must_pass(validator, "openapi-spec-validator");
}

#[test]
fn a_memory_node_keeps_to_the_description() {
    server_keeps_to_the_description(&Node::start(&[]));
}

#[test]
fn a_sled_node_keeps_to_the_description() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().to_string_lossy().into_owned();
    server_keeps_to_the_description(&Node::start(&["--engine", "sled", "--data-dir", &data]));
}
