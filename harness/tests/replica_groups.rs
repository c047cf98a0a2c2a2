//! Replica groups under faults, through real processes: a group keeps every acknowledged write, stays
//! linearizable per key, and keeps serving while a minority of its members is killed, restarted, wiped
//! and re-added, or cut off by a partition; a leader cut off from the majority acknowledges nothing.
//!
//! Clients send reads, writes, conditional writes and deletes through `harness proxy` (which knows the
//! group's members) while the faults happen; every operation's call and answer are timed, and each
//! key's history is checked for linearizability ([`replica::history`]), which is also what finds a lost
//! write: a read that misses an acknowledged write has no linearization.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

mod replica {
    pub mod cluster;
    pub mod history;
}

#[path = "../../engine/tests/support/wing_gong.rs"]
mod wing_gong;

// The adapter's test helpers: `eventually` (for what a group does on its own time: an election,
// catching up) and starting a `harness` process on its `listening on` line.
#[path = "../../adapter-http/tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::{eventually as eventually_ok, harness, Listening};
use replica::cluster::{call, cond_header, group, split, Member, HARNESS};
use replica::history::{linearizable, Call, Cond, Timed};

const KEYS: [&str; 3] = ["a", "b", "c"];
const CLIENTS: usize = 4;

/// `harness proxy` in front of one group (its members' URLs, comma-separated, as one node).
fn proxy(members: &[Member]) -> Listening {
    let group: Vec<String> = members.iter().map(Member::url).collect();
    harness(&["proxy", "--port", "0", "--node", &group.join(",")])
}

/// Clients racing on [`KEYS`] at `url` until `stop`; each key's history.
struct Load {
    stop: Arc<AtomicBool>,
    /// Operations answered so far, all clients.
    done: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<Vec<(usize, Timed)>>>,
    /// Answers that were not the group's own (no answer at all, 502), by status.
    pub oddities: Arc<Mutex<Vec<u16>>>,
}

impl Load {
    fn start(url: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let oddities = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..CLIENTS)
            .map(|t| {
                let (stop, done, url, oddities) =
                    (Arc::clone(&stop), Arc::clone(&done), url.to_string(), Arc::clone(&oddities));
                std::thread::spawn(move || client(t, &url, &stop, &done, &oddities))
            })
            .collect();
        Load { stop, done, threads, oddities }
    }

    /// Waits for `n` more operations to be answered.
    fn run_for(&self, n: usize) {
        let target = self.done.load(SeqCst) + n;
        eventually_ok("operations answered", || self.done.load(SeqCst) >= target);
    }

    fn finish(self) -> Vec<Vec<Timed>> {
        self.stop.store(true, SeqCst);
        let mut per_key = vec![Vec::new(); KEYS.len()];
        for t in self.threads {
            for (k, op) in t.join().expect("client") {
                per_key[k].push(op);
            }
        }
        per_key
    }
}

fn client(
    t: usize,
    url: &str,
    stop: &AtomicBool,
    done: &AtomicUsize,
    oddities: &Mutex<Vec<u16>>,
) -> Vec<(usize, Timed)> {
    let mut out = Vec::new();
    let mut last_version = [0u64; KEYS.len()];
    let mut n = 0u64;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ (t as u64 * 0x1234_5678);
    let mut rng = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    while !stop.load(SeqCst) {
        n += 1;
        let k = (rng() % KEYS.len() as u64) as usize;
        let target = format!("{url}/v1/kv/{}", KEYS[k]);
        let value = format!("c{t}n{n}").into_bytes();
        let cond = match rng() % 4 {
            0 => Cond::Absent,
            1 if last_version[k] > 0 => Cond::Version(last_version[k]),
            _ => Cond::Always,
        };
        let start = Instant::now();
        let kind = rng() % 4;
        // A delete takes If-Match only.
        let cond = if kind == 3 && cond == Cond::Absent { Cond::Always } else { cond };
        let (status, out_bytes) = match kind {
            0 | 1 => call("GET", &target, None, &[]),
            2 => call("PUT", &target, Some(&value), &cond_header(cond)),
            _ => call("DELETE", &target, None, &cond_header(cond)),
        };
        let end = Instant::now();
        done.fetch_add(1, SeqCst);
        let (version, body) = split(&out_bytes);
        let call = match (kind, status) {
            // Refused before anything was done: not part of the history.
            (_, 503) => continue,
            (0 | 1, 200) => Call::Get(Some((body, version.expect("a read's ETag")))),
            (0 | 1, 404) => Call::Get(None),
            (0 | 1, _) => {
                oddities.lock().expect("lock").push(status);
                continue;
            }
            (2, 201 | 204) => Call::Put(value, cond, Some(version.expect("a write's ETag"))),
            (2, 412) => Call::Put(value, cond, None),
            (2, _) => {
                if status != 504 {
                    oddities.lock().expect("lock").push(status);
                }
                out.push((k, Timed { call: Call::MaybePut(value, cond), start, end: None }));
                continue;
            }
            (_, 204) => Call::Delete(cond, Some(true)),
            (_, 404) => Call::Delete(cond, Some(false)),
            (_, 412) => Call::Delete(cond, None),
            (_, _) => {
                if status != 504 {
                    oddities.lock().expect("lock").push(status);
                }
                out.push((k, Timed { call: Call::MaybeDelete(cond), start, end: None }));
                continue;
            }
        };
        if let Call::Get(Some((_, v))) | Call::Put(_, _, Some(v)) = &call {
            last_version[k] = *v;
        }
        out.push((k, Timed { call, start, end: Some(end) }));
    }
    out
}

/// The member that leads, as the members say.
fn leader(members: &[Member]) -> usize {
    let mut found = None;
    eventually_ok("a leader", || {
        found = members
            .iter()
            .position(|m| m.child.is_some() && m.replica().is_some_and(|r| r["role"] == "leader"));
        found.is_some()
    });
    found.expect("leader")
}

/// The highest commit index any running member reports.
fn commit_index(members: &[Member]) -> Option<u64> {
    members
        .iter()
        .filter(|m| m.child.is_some())
        .filter_map(Member::replica)
        .filter_map(|r| r["commit_index"].as_u64())
        .max()
}

/// Waits until every running member has applied all the group had committed when called. Writes may go
/// on meanwhile: the target is fixed, so the wait ends once the slowest member has caught up with it.
fn caught_up(members: &[Member]) {
    let mut target = None;
    eventually_ok("every member caught up", || {
        let Some(goal) = target.or_else(|| commit_index(members)) else {
            return false;
        };
        target = Some(goal);
        members
            .iter()
            .filter(|m| m.child.is_some())
            .all(|m| m.replica().is_some_and(|r| r["applied_index"].as_u64().is_some_and(|a| a >= goal)))
    });
}

/// With no writes in flight: waits until every running member has applied what the group committed, then
/// checks that each holds the same data (read locally, `?stale`, so every member answers from its own copy).
fn in_sync(members: &[Member]) {
    caught_up(members);
    for key in KEYS {
        let copies: Vec<_> = members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| call("GET", &format!("{}/v1/kv/{key}?stale", m.url()), None, &[]))
            .collect();
        assert!(copies.windows(2).all(|w| w[0] == w[1]), "members differ on {key}: {copies:?}");
    }
}

fn check(histories: &[Vec<Timed>]) {
    for (k, h) in histories.iter().enumerate() {
        assert!(h.len() > 10, "too few operations on {}: {}", KEYS[k], h.len());
        assert!(linearizable(h), "the history of {} is not linearizable: {h:#?}", KEYS[k]);
    }
}

/// Waits until a write is acknowledged again, then runs the load for a while.
fn until_writes(load: &Load, url: &str, what: &str) {
    eventually_ok(what, || {
        let (s, _) = call("PUT", &format!("{url}/v1/kv/probe"), Some(b"x"), &[]);
        matches!(s, 201 | 204)
    });
    load.run_for(300);
}

#[test]
fn killing_the_leader_loses_no_acknowledged_write_and_the_group_serves_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut members = group(3, dir.path());
    let proxy = proxy(&members);
    let load = Load::start(&proxy.url);
    until_writes(&load, &proxy.url, "writes before the kill");
    let l = leader(&members);
    let killed_at = Instant::now();
    members[l].kill();
    eventually_ok("writes after the leader's kill", || {
        matches!(call("PUT", &format!("{}/v1/kv/probe", proxy.url), Some(b"x"), &[]).0, 201 | 204)
    });
    let failover = killed_at.elapsed();
    load.run_for(300);
    members[l].restart();
    let restarted = Instant::now();
    caught_up(&members);
    let resync = restarted.elapsed();
    let oddities = load.oddities.lock().expect("lock").clone();
    let histories = load.finish();
    eprintln!("failover: writes acknowledged again {failover:?} after the kill; the restarted member in sync after {resync:?}; {} operations; non-group answers: {oddities:?}", histories.iter().map(Vec::len).sum::<usize>());
    check(&histories);
    in_sync(&members);
    // Answers the group did not give are the proxy's for the requests in flight on the killed member.
    assert!(oddities.iter().all(|&s| s == 502), "unexpected answers: {oddities:?}");
}

#[test]
fn a_follower_killed_and_restarted_catches_up_while_writes_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut members = group(3, dir.path());
    let proxy = proxy(&members);
    let load = Load::start(&proxy.url);
    until_writes(&load, &proxy.url, "writes");
    let l = leader(&members);
    let f = (l + 1) % 3;
    members[f].kill();
    until_writes(&load, &proxy.url, "writes without a follower");
    members[f].restart();
    caught_up(&members);
    let histories = load.finish();
    check(&histories);
    in_sync(&members);
}

#[test]
fn a_member_wiped_and_added_again_gets_the_data_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut members = group(3, dir.path());
    let leader_url = members[leader(&members)].url();
    for i in 0..200 {
        let (s, _) = call("PUT", &format!("{leader_url}/v1/kv/k{i}"), Some(format!("v{i}").as_bytes()), &[]);
        assert!(matches!(s, 201 | 204), "write {i}: {s}");
    }
    let l = leader(&members);
    let w = (l + 1) % 3;
    let id = members[w].id;
    members[w].kill();
    let (s, body) = call("POST", &format!("{}/v1/replica/members?remove={id}", members[l].url()), None, &[]);
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    std::fs::remove_dir_all(&members[w].dir).expect("wipe");
    let relay = members[w].relay.url();
    members[w] = Member::start(id, members[w].dir.clone(), &["--join"]);
    let relay_now = members[w].relay.url();
    assert_ne!(relay, relay_now);
    let path = format!("{}/v1/replica/members?add={id}&url={relay_now}", members[l].url());
    eventually_ok("the wiped member added again", || call("POST", &path, None, &[]).0 == 200);
    in_sync(&members);
    for i in (0..200).step_by(37) {
        let (s, out) = call("GET", &format!("{}/v1/kv/k{i}?stale", members[w].url()), None, &[]);
        assert_eq!((s, split(&out).1), (200, format!("v{i}").into_bytes()));
    }
}

#[test]
fn a_leader_cut_off_from_the_majority_acknowledges_no_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let members = group(3, dir.path());
    let l = leader(&members);
    let old = members[l].url();
    let (s, _) = call("PUT", &format!("{old}/v1/kv/x"), Some(b"before"), &[]);
    assert_eq!(s, 201);
    members[l].relay.set_cut(true);
    // Writes sent to the cut-off leader: none may be acknowledged.
    let mut answers = Vec::new();
    for i in 0..5 {
        let (s, _) = call("PUT", &format!("{old}/v1/kv/x"), Some(format!("minority {i}").as_bytes()), &[]);
        answers.push(s);
    }
    assert!(answers.iter().all(|s| matches!(s, 503 | 504)), "the minority acknowledged: {answers:?}");
    // The majority elects another leader and goes on.
    let other = members.iter().enumerate().find(|(i, _)| *i != l).map(|(_, m)| m.url()).expect("other");
    eventually_ok("the majority writes", || {
        matches!(call("PUT", &format!("{other}/v1/kv/x"), Some(b"majority"), &[]).0, 201 | 204)
    });
    members[l].relay.set_cut(false);
    in_sync(&members);
    let (s, out) = call("GET", &format!("{old}/v1/kv/x"), None, &[]);
    assert_eq!((s, split(&out).1), (200, b"majority".to_vec()));
}

#[test]
fn keys_move_between_groups_as_between_nodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = group(3, &dir.path().join("g0"));
    let second = group(3, &dir.path().join("g1"));
    let line = |g: &[Member]| g.iter().map(Member::url).collect::<Vec<_>>().join(" ");
    let nodes = dir.path().join("nodes.txt");
    std::fs::write(&nodes, format!("{}\n", line(&first))).expect("nodes file");
    let proxy = harness(&["proxy", "--port", "0", "--nodes-file", nodes.to_str().expect("path")]);
    for i in 0..100 {
        let (s, _) = call("PUT", &format!("{}/v1/kv/k{i}", proxy.url), Some(format!("v{i}").as_bytes()), &[]);
        assert_eq!(s, 201);
    }
    // The second group joins the set: a line of its members, the first group's as `previous`.
    std::fs::write(&nodes, format!("{}\n{}\nprevious {}\n", line(&first), line(&second), line(&first)))
        .expect("nodes file");
    assert!(Command::new("kill")
        .args(["-HUP", &proxy.child.id().to_string()])
        .status()
        .expect("kill")
        .success());
    eventually_ok("the proxy took the new set", || {
        let (_, out) = call("GET", &format!("{}/v1/stats", proxy.url), None, &[]);
        String::from_utf8_lossy(&split(&out).1).contains("previous")
    });
    let status = Command::new(HARNESS)
        .args(["reshard", "--proxy", &proxy.url, "--state"])
        .arg(dir.path().join("state.json"))
        .env("RUST_LOG", "warn")
        .status()
        .expect("reshard");
    assert!(status.success());
    let count = |g: &[Member]| {
        let (s, out) = call("GET", &format!("{}/v1/kv?limit=1000", g[0].url()), None, &[]);
        assert_eq!(s, 200);
        let doc: serde_json::Value = serde_json::from_slice(&split(&out).1).expect("listing");
        doc["keys"].as_array().map_or(0, Vec::len)
    };
    let (a, b) = (count(&first), count(&second));
    assert_eq!(a + b, 100, "each key once: {a} + {b}");
    assert!(a > 20 && b > 20, "both groups hold keys: {a} and {b}");
    for i in 0..100 {
        let (s, out) = call("GET", &format!("{}/v1/kv/k{i}", proxy.url), None, &[]);
        assert_eq!((s, split(&out).1), (200, format!("v{i}").into_bytes()));
    }
    // Every member of each group holds its group's keys.
    in_sync(&first);
    in_sync(&second);
}

#[test]
fn expiry_is_decided_by_the_leader_and_replicated_to_every_member() {
    let dir = tempfile::tempdir().expect("tempdir");
    let members = group(3, dir.path());
    let url = members[leader(&members)].url();
    for i in 0..50 {
        let (s, _) = call("PUT", &format!("{url}/v1/kv/short{i}?ttl=1"), Some(b"soon gone"), &[]);
        assert_eq!(s, 201);
    }
    assert_eq!(call("PUT", &format!("{url}/v1/kv/kept"), Some(b"stays"), &[]).0, 201);
    // Members remove nothing on their own clock: every removal is an entry of the log, applied by all.
    eventually_ok("the expired values removed on every member", || {
        members.iter().all(|m| m.stats().is_some_and(|d| d["keys"] == 1))
    });
    in_sync(&members);
    let (s, out) = call("GET", &format!("{url}/v1/kv/kept"), None, &[]);
    assert_eq!((s, split(&out).1), (200, b"stays".to_vec()));
}

/// Requests of kind `kind` (`put`, `get`, ...) member `m` has taken at its own front door.
fn taken(m: &Member, kind: &str) -> u64 {
    m.stats().and_then(|d| d["requests"][kind].as_u64()).unwrap_or(0)
}

/// Whether the proxy at `proxy` sends writes to member `to`: 20 writes through it, all taken by `to`.
fn proxy_writes_to(proxy: &str, to: &Member) -> bool {
    let before = taken(to, "put");
    for i in 0..20 {
        let (s, _) = call("PUT", &format!("{proxy}/v1/kv/w{i}"), Some(b"v"), &[]);
        assert!(matches!(s, 201 | 204), "write {i}: {s}");
    }
    taken(to, "put") >= before + 20
}

#[test]
fn leadership_handed_to_another_member_and_the_proxy_follows_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The members advertise their relays' addresses to each other; the proxy reaches them at their own.
    // It must find the leader by asking each member, not by matching the address the group names.
    let members = group(3, dir.path());
    let proxy = proxy(&members);
    let l = leader(&members);
    eventually_ok("the proxy writes to the leader", || proxy_writes_to(&proxy.url, &members[l]));
    let to = (l + 1) % 3;
    let path = format!("{}/v1/replica/leader?to={}", members[l].url(), members[to].id);
    let (s, body) = call("POST", &path, None, &[]);
    assert_eq!(s, 202, "{}", String::from_utf8_lossy(&body));
    eventually_ok("the new leader", || members[to].replica().is_some_and(|r| r["role"] == "leader"));
    eventually_ok("the proxy writes to the new leader", || proxy_writes_to(&proxy.url, &members[to]));
    in_sync(&members);
}
