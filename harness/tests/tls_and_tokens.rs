//! The harness and the proxy with secured nodes: `harness run` against an HTTPS node with a token,
//! refusing certificates it cannot trust; `harness proxy` serving HTTPS, checking its clients' tokens
//! itself and talking to HTTPS nodes with its own token, so a read token cannot write through it.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

use std::process::{Child, Command, Output};

// The adapter's test helpers: certificates (`TestCerts`).
#[path = "../../adapter-http/tests/common/mod.rs"]
mod common;

use common::TestCerts;

const HARNESS: &str = env!("CARGO_BIN_EXE_harness");
const NODE_TOKEN: &str = "node-only-token-0123456789";
const READER: &str = "client-read-token-0123456789";
const WRITER: &str = "client-write-token-0123456789";

/// A `harness node` or `harness proxy`, killed on drop.
struct Server {
    child: Child,
    /// `https://localhost:PORT` (the test certificate's name).
    url: String,
}

impl Server {
    fn start(args: &[String]) -> Server {
        let mut command = Command::new(HARNESS);
        command.args(args).env("RUST_LOG", "warn");
        let (child, url) = common::spawn_listening(command);
        let port = url.strip_prefix("https://127.0.0.1:").expect("an https listening line");
        Server { child, url: format!("https://localhost:{port}") }
    }

    /// A node serving `cert` (`server`, `rogue`, `expired`) and requiring `tokens` (a file).
    fn node(certs: &TestCerts, cert: &str, tokens: &str) -> Server {
        Server::start(&[
            "node".into(),
            "--port".into(),
            "0".into(),
            "--tls-cert".into(),
            certs.path(&format!("{cert}.pem")),
            "--tls-key".into(),
            certs.path(&format!("{cert}.key")),
            "--auth-token-file".into(),
            tokens.into(),
        ])
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write");
    path.to_string_lossy().into_owned()
}

fn run(args: &[&str]) -> Output {
    Command::new(HARNESS).arg("run").args(args).arg("--json").output().expect("run harness")
}

#[test]
fn harness_run_measures_an_https_node_with_a_token_and_refuses_certificates_it_cannot_trust() {
    let certs = TestCerts::new();
    let dir = tempfile::tempdir().expect("dir");
    let tokens = file(&dir, "tokens", &format!("read {READER}\nwrite {WRITER}\n"));
    let out = dir.path().join("out");
    let out = out.to_str().expect("utf8");
    let node = Server::node(&certs, "server", &tokens);
    let ca = certs.path("ca.pem");
    let common = ["--keys", "500", "--ops", "3000", "--connections", "4", "--warmup", "0s", "--out", out];
    let ok = run(&[&["--node", &node.url, "--tls-ca", &ca, "--token-file", &tokens][..], &common].concat());
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&ok.stdout).expect("summary");
    let run0 = &summary["runs"][0];
    assert_eq!(run0["errors_total"].as_u64(), Some(0), "{run0}");
    assert!(run0["ops"].as_u64().expect("ops") >= 3000, "{run0}");

    // Without the token: the node's 401 stops the run before any load.
    let no_token = run(&[&["--node", &node.url, "--tls-ca", &ca][..], &common].concat());
    assert!(!no_token.status.success());
    assert!(
        String::from_utf8_lossy(&no_token.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&no_token.stderr)
    );

    // A certificate from another CA, and an expired one: refused, saying why.
    for (cert, why) in [("rogue", "UnknownIssuer"), ("expired", "certificate expired")] {
        let bad = Server::node(&certs, cert, &tokens);
        let refused =
            run(&[&["--node", &bad.url, "--tls-ca", &ca, "--token-file", &tokens][..], &common].concat());
        assert!(!refused.status.success(), "{cert}");
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(err.contains(why) && err.contains("node-0"), "{cert}: {err}");
    }
}

#[test]
fn the_proxy_checks_its_clients_tokens_and_talks_to_its_nodes_with_its_own() {
    let certs = TestCerts::new();
    let dir = tempfile::tempdir().expect("dir");
    // The nodes know only the proxy's token; the proxy knows only its clients'.
    let node_tokens = file(&dir, "node-tokens", &format!("write {NODE_TOKEN}\n"));
    let upstream_token = file(&dir, "upstream-token", &format!("{NODE_TOKEN}\n"));
    let client_tokens = file(&dir, "client-tokens", &format!("read {READER}\nwrite {WRITER}\n"));
    let nodes = [Server::node(&certs, "server", &node_tokens), Server::node(&certs, "server", &node_tokens)];
    let mut args: Vec<String> = vec!["proxy".into(), "--port".into(), "0".into()];
    for n in &nodes {
        args.extend(["--node".into(), n.url.clone()]);
    }
    args.extend([
        "--tls-cert".into(),
        certs.path("server.pem"),
        "--tls-key".into(),
        certs.path("server.key"),
        "--auth-token-file".into(),
        client_tokens,
        "--upstream-tls-ca".into(),
        certs.path("ca.pem"),
        "--upstream-token-file".into(),
        upstream_token,
    ]);
    let proxy = Server::start(&args);
    let agent = ureq::AgentBuilder::new().tls_config(certs.client_config("ca.pem", None)).build();
    let status = |method: &str, key: &str, token: Option<&str>| {
        let mut req = agent.request(method, &format!("{}/v1/kv/{key}", proxy.url));
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let result = if method == "PUT" { req.send_bytes(key.as_bytes()) } else { req.call() };
        common::status_of(result)
    };
    for i in 0..20 {
        let key = format!("k{i}");
        assert_eq!(status("PUT", &key, None).0, 401);
        assert_eq!(status("PUT", &key, Some(READER)).0, 403, "a read token cannot write through the proxy");
        assert_eq!(status("PUT", &key, Some(NODE_TOKEN)).0, 401, "the nodes' token is not a client's");
        // Accepted by the nodes, which do not know WRITER: the proxy sent its own token, not the client's.
        assert_eq!(status("PUT", &key, Some(WRITER)).0, 201);
        assert_eq!(status("GET", &key, Some(READER)), (200, key.clone()));
    }
    // What the proxy asks every node itself (listings, stats) carries its token too.
    let get = |path: &str| {
        let req =
            agent.get(&format!("{}{path}", proxy.url)).set("Authorization", &format!("Bearer {READER}"));
        common::status_of(req.call())
    };
    let (code, listing) = get("/v1/kv?prefix=k1");
    assert_eq!(code, 200, "{listing}");
    assert!(listing.contains("k10") && listing.contains("k19"), "{listing}");
    assert_eq!(get("/v1/stats").0, 200);
    assert_eq!(common::status_of(agent.get(&format!("{}/healthz", proxy.url)).call()).0, 200);
}
