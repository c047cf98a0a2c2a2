//! A replica group whose members require TLS, client certificates and tokens of everyone, each other
//! included: members reach each other at `https://` URLs with their own certificate and a peer token,
//! and a write taken by one member is read on another. A member that presents no token is refused by the
//! others and never catches up.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

mod common;

use common::{eventually, Node, TestCerts};

const WRITER: &str = "write-token-for-members-0123456789";

fn https(certs: &TestCerts) -> ureq::Agent {
    ureq::AgentBuilder::new().tls_config(certs.client_config("ca.pem", Some("client"))).build()
}

fn member(certs: &TestCerts, dir: &std::path::Path, id: u64, extra: &[&str]) -> Node {
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("write {WRITER}\n")).expect("tokens");
    let peer_token = dir.join("peer-token");
    std::fs::write(&peer_token, format!("{WRITER}\n")).expect("peer token");
    let data = dir.join(format!("m{id}"));
    let mut args: Vec<String> = [
        "--member",
        &id.to_string(),
        "--durability",
        "sync",
        "--tls-cert",
        &certs.path("server.pem"),
        "--tls-key",
        &certs.path("server.key"),
        "--tls-client-ca",
        &certs.path("ca.pem"),
        "--peer-tls-ca",
        &certs.path("ca.pem"),
        "--auth-token-file",
        tokens.to_str().expect("path"),
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect();
    args.extend(["--data-dir".to_string(), data.to_string_lossy().into_owned()]);
    if !extra.contains(&"--no-peer-token") {
        args.extend(["--peer-token-file".to_string(), peer_token.to_string_lossy().into_owned()]);
    }
    args.extend(extra.iter().filter(|a| **a != "--no-peer-token").map(|s| (*s).to_string()));
    Node::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn applied(agent: &ureq::Agent, node: &Node) -> u64 {
    agent
        .get(&format!("{}/v1/stats", node.url))
        .set("Authorization", &format!("Bearer {WRITER}"))
        .call()
        .ok()
        .and_then(|r| r.into_string().ok())
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|d| d["replica"]["applied_index"].as_u64())
        .unwrap_or(0)
}

#[test]
fn members_talk_over_tls_with_client_certificates_and_tokens() {
    let certs = TestCerts::shared();
    let dir = tempfile::tempdir().expect("dir");
    let agent = https(certs);
    let auth = format!("Bearer {WRITER}");
    let first = member(certs, dir.path(), 1, &[]);
    assert!(first.url.starts_with("https://"), "{}", first.url);
    let second = member(certs, dir.path(), 2, &["--join"]);
    let add = format!("{}/v1/replica/members?add=2&url={}", first.url, second.url);
    eventually("member 2 added over TLS", || agent.post(&add).set("Authorization", &auth).call().is_ok());
    let third = member(certs, dir.path(), 3, &["--join"]);
    let add = format!("{}/v1/replica/members?add=3&url={}", first.url, third.url);
    eventually("member 3 added over TLS", || agent.post(&add).set("Authorization", &auth).call().is_ok());

    // A write taken by a follower, read on another member from its own copy once it has caught up.
    let put = agent
        .put(&format!("{}/v1/kv/secret", second.url))
        .set("Authorization", &auth)
        .send_bytes(b"over tls");
    assert_eq!(put.expect("put").status(), 201);
    let leader_applied = applied(&agent, &first);
    eventually("member 3 caught up", || applied(&agent, &third) >= leader_applied);
    let got = agent.get(&format!("{}/v1/kv/secret?stale", third.url)).set("Authorization", &auth).call();
    assert_eq!(got.expect("get").into_string().expect("body"), "over tls");
    // A linearizable read needs no more than that.
    let got = agent.get(&format!("{}/v1/kv/secret", third.url)).set("Authorization", &auth).call();
    assert_eq!(got.expect("get").into_string().expect("body"), "over tls");

    // A member without the peer token: the others refuse what it sends, so it never joins in.
    let tokenless_dir = tempfile::tempdir().expect("dir");
    let outsider = member(certs, tokenless_dir.path(), 4, &["--join", "--no-peer-token"]);
    let add = format!("{}/v1/replica/members?add=4&url={}", first.url, outsider.url);
    let added = agent.post(&add).set("Authorization", &auth).call();
    // The change commits (three of four members agree) but the outsider gets nothing it can answer.
    assert!(added.is_ok(), "{added:?}");
    let put = agent.put(&format!("{}/v1/kv/after", first.url)).set("Authorization", &auth).send_bytes(b"x");
    assert_eq!(put.expect("put").status(), 201);
    assert_eq!(applied(&agent, &outsider), 0, "a member without the peer token took the log in");
}
