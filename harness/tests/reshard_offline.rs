//! Growing and shrinking a cluster with `harness reshard`: 1,000 keys written through a proxy in front
//! of two nodes; a proxy in front of three misses a third of them until the mover has run, and none
//! after; every value (and TTL) is kept, and no key lives on two nodes. A mover stopped half-way and run
//! again finishes the job. Then back from three nodes to two.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

use std::process::Command;

#[path = "../../adapter-http/tests/common/mod.rs"]
mod common;

use common::harness as start;

const HARNESS: &str = env!("CARGO_BIN_EXE_harness");
const KEYS: usize = 1000;

type Server = common::Listening;

fn proxy(nodes: &[&Server]) -> Server {
    let mut args = vec!["proxy", "--port", "0"];
    for n in nodes {
        args.extend(["--node", n.url.as_str()]);
    }
    start(&args)
}

fn key(i: usize) -> String {
    format!("user:{i:04}")
}

/// (status, body, `OTKV-Expires` present) of a GET through `server`.
fn get(server: &Server, k: &str) -> (u16, String, bool) {
    match common::agent().get(&format!("{}/v1/kv/{k}", server.url)).call() {
        Ok(r) => {
            let ttl = r.header("OTKV-Expires").is_some();
            (200, r.into_string().expect("text"), ttl)
        }
        Err(ureq::Error::Status(code, _)) => (code, String::new(), false),
        Err(e) => panic!("{e}"),
    }
}

fn missing(proxy: &Server) -> usize {
    (0..KEYS).filter(|&i| get(proxy, &key(i)).0 == 404).count()
}

/// Every key of every node, by listing; asserts none is on two nodes.
fn one_copy_each(nodes: &[&Server]) -> usize {
    common::one_copy_each(&nodes.iter().map(|n| n.url.as_str()).collect::<Vec<_>>())
}

fn reshard(
    from: &[&Server],
    to: &[&Server],
    state: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    let mut c = Command::new(HARNESS);
    c.arg("reshard");
    for n in from {
        c.args(["--from", &n.url]);
    }
    for n in to {
        c.args(["--to", &n.url]);
    }
    c.arg("--state").arg(state).args(extra).output().expect("reshard")
}

#[test]
fn growing_then_shrinking_loses_no_acknowledged_key() {
    let nodes =
        [start(&["node", "--port", "0"]), start(&["node", "--port", "0"]), start(&["node", "--port", "0"])];
    let two = [&nodes[0], &nodes[1]];
    let three = [&nodes[0], &nodes[1], &nodes[2]];
    let before = proxy(&two);
    for i in 0..KEYS {
        let ttl = if i % 10 == 0 { "?ttl=3600" } else { "" };
        let url = format!("{}/v1/kv/{}{ttl}", before.url, key(i));
        assert_eq!(common::agent().put(&url).send_string(&format!("v{i}")).expect("put").status(), 201);
    }
    // The issue as a user meets it: a third node, and a third of the keys cannot be reached.
    let after = proxy(&three);
    let lost = missing(&after);
    assert!((200..500).contains(&lost), "{lost} of {KEYS} unreachable before the move");

    // A mover stopped half-way (slowed down, then SIGTERM), then run again.
    let dir = tempfile::tempdir().expect("dir");
    let state = dir.path().join("state.json");
    let mut c = Command::new(HARNESS);
    c.arg("reshard");
    for n in two {
        c.args(["--from", &n.url]);
    }
    for n in three {
        c.args(["--to", &n.url]);
    }
    let mut slow =
        c.arg("--state").arg(&state).args(["--rate", "300", "--page", "50"]).spawn().expect("reshard");
    common::eventually("the mover saved some progress", || {
        std::fs::read_to_string(&state).is_ok_and(|s| s.contains("\"moved\"") && !s.contains("\"moved\": 0,"))
    });
    let ok = Command::new("kill").args(["-TERM", &slow.id().to_string()]).status().expect("kill");
    assert!(ok.success());
    assert_eq!(slow.wait().expect("wait").code(), Some(143), "stopped by SIGTERM");
    let partly = missing(&after);
    assert!(partly < lost, "some keys were moved before the stop ({partly} of {lost} still missing)");
    let done = reshard(&two, &three, &state, &[]);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let said = String::from_utf8_lossy(&done.stdout);
    assert!(said.contains("reshard done: moved"), "{said}");

    // After: every key, with its value and its TTL, on exactly one node.
    for i in 0..KEYS {
        let (status, body, ttl) = get(&after, &key(i));
        assert_eq!((status, body.as_str()), (200, format!("v{i}").as_str()), "{}", key(i));
        assert_eq!(ttl, i % 10 == 0, "{}: the TTL is kept", key(i));
    }
    assert_eq!(one_copy_each(&three), KEYS);
    // Run again: nothing left to move.
    let again = reshard(&two, &three, &dir.path().join("again.json"), &[]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("moved 0,"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );

    // Back to two nodes: node-2's keys go to their owners among the first two.
    let back = reshard(&three, &two, &dir.path().join("back.json"), &[]);
    assert!(back.status.success(), "{}", String::from_utf8_lossy(&back.stderr));
    assert_eq!(missing(&before), 0);
    assert_eq!(one_copy_each(&two), KEYS);
    assert_eq!(one_copy_each(&[&nodes[2]]), 0, "the removed node holds nothing");
    // A finished change leaves no state behind; an unfinished one's state stops a mover given another
    // change, saying so.
    assert!(!state.exists() && !dir.path().join("back.json").exists());
    let urls = |ns: &[&Server]| ns.iter().map(|n| n.url.clone()).collect::<Vec<_>>();
    let unfinished = serde_json::json!({ "from": urls(&two), "to": urls(&three), "done": [true, false] });
    std::fs::write(&state, unfinished.to_string()).expect("state");
    let other = reshard(&three, &two, &state, &[]);
    assert!(!other.status.success());
    assert!(String::from_utf8_lossy(&other.stderr).contains("another change"));
}
