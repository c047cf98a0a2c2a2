//! `harness proxy` takes its settings as a node does: a `--config` TOML file under `OTKV_PROXY_*`
//! variables under the command line, a bad file refused with its line and key (exit 2), and a proxy
//! that serves from its file alone.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

use std::process::Command;

#[path = "../../adapter-http/tests/common/mod.rs"]
mod common;

const HARNESS: &str = env!("CARGO_BIN_EXE_harness");

fn proxy() -> Command {
    let mut command = Command::new(HARNESS);
    command.arg("proxy").env_remove("OTKV_PROXY_CONFIG").env_remove("OTKV_PROXY_PORT");
    command
}

fn printed(command: &mut Command) -> String {
    let out = command.arg("--print-config").output().expect("run harness proxy");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_proxy_layers_its_settings_like_a_node() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("proxy.toml");
    std::fs::write(&file, "upstream-connections = 64\nport = 7100\nrouter = \"ring\"\n").expect("write");
    let file = file.to_string_lossy().into_owned();
    let out =
        printed(proxy().args(["--config", &file, "--port", "7200"]).env("OTKV_PROXY_ROUTER", "rendezvous"));
    assert!(out.contains("port = 7200  # --port"), "{out}");
    assert!(out.contains("router = \"rendezvous\"  # OTKV_PROXY_ROUTER"), "{out}");
    assert!(out.contains(&format!("upstream-connections = 64  # {file}:1")), "{out}");
    assert!(out.contains("upstream-timeout = \"5s\"  # default"), "{out}");

    std::fs::write(dir.path().join("bad.toml"), "upstream-conections = 64\n").expect("write");
    let bad = dir.path().join("bad.toml").to_string_lossy().into_owned();
    let out = proxy().args(["--config", &bad]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!(
            "{bad}:1: unknown key `upstream-conections` (did you mean `upstream-connections`?)"
        )),
        "{said}"
    );

    // Only the proxy reads a configuration file: the other commands know no --config.
    let out = Command::new(HARNESS).args(["ring", "--config", &file]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_proxy_serves_from_its_file_alone() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("proxy.toml");
    std::fs::write(&file, "nodes = 2\nport = 0\nlog-format = \"json\"\n").expect("write");
    let mut command = proxy();
    command.args(["--config", &file.to_string_lossy()]).env("RUST_LOG", "warn");
    let mut proxy = common::Listening::start(command);
    let url = proxy.url.clone();
    let put =
        ureq::put(&format!("{url}/v1/kv/greeting")).send_bytes(b"hello").expect("PUT through the proxy");
    assert_eq!(put.status(), 201);
    let got = ureq::get(&format!("{url}/v1/kv/greeting")).call().expect("GET").into_string().expect("body");
    assert_eq!(got, "hello");
    let stats = common::stats(&url);
    assert_eq!(stats["nodes"].as_array().map(Vec::len), Some(2), "{stats}");
    let _ = Command::new("kill").args(["-TERM", &proxy.child.id().to_string()]).status();
    assert!(proxy.child.wait().expect("wait").success());
}
