//! Growing and shrinking a cluster behind `harness proxy` while clients use it: the proxy's
//! `--nodes-file` gets the new set and `previous` lines, SIGHUP, `harness reshard --proxy`, and the proxy
//! drops the previous set when the mover is done. A writer, a reader and a deleter run through the proxy
//! the whole time: no request fails, every read sees what it should, and afterwards every acknowledged
//! key has its last acknowledged value, no deleted key is back, no key lives on two nodes, TTLs are kept.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

use std::collections::{BTreeSet, HashMap};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

#[path = "../../adapter-http/tests/common/mod.rs"]
mod common;

use common::{eventually, harness as start, stats};

const HARNESS: &str = env!("CARGO_BIN_EXE_harness");
/// Keys read only, keys rewritten, keys deleted.
const STABLE: usize = 300;
const WRITTEN: usize = 150;
const DELETED: usize = 150;

type Server = common::Listening;

fn url(proxy: &str, k: &str) -> String {
    format!("{proxy}/v1/kv/{k}")
}

/// (status, body, has a TTL) of a GET.
fn get(agent: &ureq::Agent, u: &str) -> (u16, String, bool) {
    match agent.get(u).call() {
        Ok(r) => {
            let ttl = r.header("OTKV-Expires").is_some();
            (200, r.into_string().expect("text"), ttl)
        }
        Err(ureq::Error::Status(code, _)) => (code, String::new(), false),
        Err(e) => panic!("{e}"),
    }
}

fn keys_on(node: &Server) -> Vec<String> {
    common::keys_on(&node.url)
}

/// What the clients did and saw.
#[derive(Default)]
struct Clients {
    stop: AtomicBool,
    failed: AtomicU64,
    requests: AtomicU64,
    /// The last acknowledged value of each rewritten key.
    written: Mutex<HashMap<String, String>>,
    /// Keys whose delete was acknowledged.
    deleted: Mutex<BTreeSet<String>>,
}

#[allow(
    clippy::many_single_char_names,
    reason = "three client threads, each with its proxy URL, shared state and key"
)]
fn clients(proxy: &str) -> (Arc<Clients>, Vec<std::thread::JoinHandle<()>>) {
    let c = Arc::new(Clients::default());
    let mut threads = Vec::new();
    let (p, cc) = (proxy.to_string(), Arc::clone(&c));
    threads.push(std::thread::spawn(move || {
        let agent = common::agent();
        let mut n = 0usize;
        while !cc.stop.load(Relaxed) {
            let k = format!("w{:04}", n % WRITTEN);
            let v = format!("w-{n}");
            cc.requests.fetch_add(1, Relaxed);
            match agent.put(&url(&p, &k)).send_string(&v) {
                Ok(_) => {
                    cc.written.lock().expect("lock").insert(k, v);
                }
                Err(_) => {
                    cc.failed.fetch_add(1, Relaxed);
                }
            }
            n += 1;
        }
    }));
    let (p, cc) = (proxy.to_string(), Arc::clone(&c));
    threads.push(std::thread::spawn(move || {
        let agent = common::agent();
        let mut n = 0usize;
        while !cc.stop.load(Relaxed) && n < DELETED {
            let k = format!("d{n:04}");
            cc.requests.fetch_add(1, Relaxed);
            match agent.delete(&url(&p, &k)).call() {
                Ok(_) => {
                    cc.deleted.lock().expect("lock").insert(k);
                }
                Err(_) => {
                    cc.failed.fetch_add(1, Relaxed);
                }
            }
            n += 1;
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }));
    let (p, cc) = (proxy.to_string(), Arc::clone(&c));
    threads.push(std::thread::spawn(move || {
        let agent = common::agent();
        let mut n = 0usize;
        while !cc.stop.load(Relaxed) {
            let i = (n * 7) % STABLE;
            let (status, body, _) = get(&agent, &url(&p, &format!("s{i:04}")));
            cc.requests.fetch_add(1, Relaxed);
            if (status, body.as_str()) != (200, format!("s-{i}").as_str()) {
                cc.failed.fetch_add(1, Relaxed);
            }
            let k = format!("d{:04}", n % DELETED);
            let deleted_before = cc.deleted.lock().expect("lock").contains(&k);
            let (status, _, _) = get(&agent, &url(&p, &k));
            cc.requests.fetch_add(1, Relaxed);
            if status >= 500 || (deleted_before && status != 404) {
                cc.failed.fetch_add(1, Relaxed);
            }
            n += 1;
        }
    }));
    (c, threads)
}

fn change(file: &std::path::Path, proxy: &Server, current: &[&Server], previous: &[&Server]) {
    let mut lines: Vec<String> = current.iter().map(|n| n.url.clone()).collect();
    lines.extend(previous.iter().map(|n| format!("previous {}", n.url)));
    let text = lines.join("\n") + "\n";
    std::fs::write(file, text).expect("nodes file");
    let ok = Command::new("kill").args(["-HUP", &proxy.child.id().to_string()]).status().expect("kill");
    assert!(ok.success());
    eventually("the proxy takes the new sets", || stats(&proxy.url)["topology"]["previous"].is_array());
}

fn reshard(proxy: &Server, state: &std::path::Path) {
    let out = Command::new(HARNESS)
        .args(["reshard", "--proxy", &proxy.url, "--state"])
        .arg(state)
        .output()
        .expect("reshard");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stats(&proxy.url)["topology"]["previous"].is_null(), "the previous set is dropped");
}

#[test]
fn a_cluster_grows_and_shrinks_under_load_without_losing_or_resurrecting_a_key() {
    let nodes =
        [start(&["node", "--port", "0"]), start(&["node", "--port", "0"]), start(&["node", "--port", "0"])];
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("nodes");
    std::fs::write(&file, format!("{}\n{}\n", nodes[0].url, nodes[1].url)).expect("nodes file");
    let proxy = start(&["proxy", "--port", "0", "--nodes-file", &file.to_string_lossy()]);
    let agent = common::agent();
    for i in 0..STABLE {
        let ttl = if i % 10 == 0 { "?ttl=3600" } else { "" };
        agent
            .put(&format!("{}{ttl}", url(&proxy.url, &format!("s{i:04}"))))
            .send_string(&format!("s-{i}"))
            .expect("put");
    }
    for i in 0..DELETED {
        agent.put(&url(&proxy.url, &format!("d{i:04}"))).send_string("to delete").expect("put");
    }
    let (c, threads) = clients(&proxy.url);
    eventually("the clients are under way", || c.requests.load(Relaxed) > 300);

    // 2 -> 3, under load.
    change(&file, &proxy, &[&nodes[0], &nodes[1], &nodes[2]], &[&nodes[0], &nodes[1]]);
    reshard(&proxy, &dir.path().join("grow.json"));
    let settled = std::fs::read_to_string(&file).expect("file");
    assert!(!settled.contains("previous"), "the nodes file is rewritten without the previous set: {settled}");
    assert!(!keys_on(&nodes[2]).is_empty(), "the new node took its keys");

    // 3 -> 2, under load.
    change(&file, &proxy, &[&nodes[0], &nodes[1]], &[&nodes[0], &nodes[1], &nodes[2]]);
    reshard(&proxy, &dir.path().join("shrink.json"));
    eventually("the clients went on after the moves", || c.requests.load(Relaxed) > 3000);
    c.stop.store(true, Relaxed);
    for t in threads {
        t.join().expect("client");
    }
    assert_eq!(c.failed.load(Relaxed), 0, "of {} requests, none failed", c.requests.load(Relaxed));

    // Every key where it belongs, once, with its last acknowledged value.
    assert!(keys_on(&nodes[2]).is_empty(), "the removed node holds nothing");
    let mut everywhere: Vec<String> = keys_on(&nodes[0]);
    everywhere.extend(keys_on(&nodes[1]));
    let unique: BTreeSet<&String> = everywhere.iter().collect();
    assert_eq!(unique.len(), everywhere.len(), "a key lives on two nodes");
    for i in 0..STABLE {
        let (status, body, ttl) = get(&agent, &url(&proxy.url, &format!("s{i:04}")));
        assert_eq!((status, body.as_str(), ttl), (200, format!("s-{i}").as_str(), i % 10 == 0), "s{i:04}");
    }
    for (k, v) in c.written.lock().expect("lock").iter() {
        assert_eq!(get(&agent, &url(&proxy.url, k)).1, *v, "{k}: its last acknowledged value");
    }
    for k in c.deleted.lock().expect("lock").iter() {
        assert_eq!(get(&agent, &url(&proxy.url, k)).0, 404, "{k} was deleted");
    }
}

/// `POST /v1/reshard/move` body (one key a line) through `agent`: the status and the answer's lines.
fn move_keys(agent: &ureq::Agent, proxy: &str, body: &str) -> (u16, Vec<String>) {
    match agent.post(&format!("{proxy}/v1/reshard/move")).send_string(body) {
        Ok(r) => (200, r.into_string().expect("text").lines().map(str::to_owned).collect()),
        Err(ureq::Error::Status(code, _)) => (code, Vec::new()),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn the_move_route_moves_each_key_once_and_says_how() {
    let nodes = [start(&["node", "--port", "0"]), start(&["node", "--port", "0"])];
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("nodes");
    std::fs::write(&file, format!("{}\n", nodes[0].url)).expect("nodes file");
    let proxy = start(&["proxy", "--port", "0", "--nodes-file", &file.to_string_lossy()]);
    let agent = common::agent();
    // Keys with characters that need encoding too; one batch holds more than the proxy's window of 16.
    let keys: Vec<String> = (0..40).map(|i| format!("k {i}/é")).collect();
    for k in &keys {
        agent.put(&url(&proxy.url, &pct(k))).send_string(&format!("v-{k}")).expect("put");
    }
    change(&file, &proxy, &[&nodes[0], &nodes[1]], &[&nodes[0]]);
    let mut body: Vec<String> = keys.iter().map(|k| pct(k)).collect();
    body.push("never-written".into());
    let (status, said) = move_keys(&agent, &proxy.url, &body.join("\n"));
    assert_eq!(status, 200);
    assert_eq!(said.len(), body.len(), "one outcome per key: {said:?}");
    let moved = said.iter().filter(|w| *w == "moved").count();
    assert!(moved > 0 && said.iter().all(|w| ["moved", "stays", "gone"].contains(&w.as_str())), "{said:?}");
    assert_eq!(keys_on(&nodes[1]).len(), moved, "each moved key is on its new owner");
    assert_eq!(keys_on(&nodes[0]).len(), keys.len() - moved, "and gone from its old one");
    // Again: every key is settled now.
    let (_, again) = move_keys(&agent, &proxy.url, &body.join("\n"));
    assert!(again.iter().all(|w| w == "stays"), "{again:?}");
    for k in &keys {
        assert_eq!(get(&agent, &url(&proxy.url, &pct(k))).1, format!("v-{k}"), "{k}");
    }
    // Bad input gets a 4xx, and a node has no such route.
    assert_eq!(move_keys(&agent, &proxy.url, "%zz").0, 400);
    assert_eq!(move_keys(&agent, &proxy.url, &"x".repeat(2000)).0, 414);
    assert_eq!(move_keys(&agent, &nodes[0].url, "a").0, 404);
    let wrong = agent.get(&format!("{}/v1/reshard/move", proxy.url)).call();
    assert!(matches!(wrong, Err(ureq::Error::Status(405, _))), "{wrong:?}");
}

fn pct(key: &str) -> String {
    otkv_adapter_http::front::percent::encode_segment(key.as_bytes())
}
