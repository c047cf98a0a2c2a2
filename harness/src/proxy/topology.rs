//! The proxy's node sets: the current one, and, while keys move to a new set, the previous one.
//!
//! The sets come from `--node` (fixed) or `--nodes-file` (re-read on SIGHUP): one URL per line for the
//! current set, `previous URL` lines for the set the keys are moving from, `#` comments. While a
//! previous set exists, a request for a key whose owner differs between the two sets first moves that
//! key (if the previous owner still holds it) with the mover's own conditional copy and delete
//! ([`crate::reshard::move_key`]), then goes to the new owner as usual: writes land where reads look,
//! deletes remove the only copy, and `If-Match`/`If-None-Match` are checked against the value that
//! counts. A read does not wait for a move: it asks the previous owner (the new one only on a miss) and
//! the key moves afterwards, in the background ([`super::migration`]).
//! `POST /v1/reshard/done` (sent by `harness reshard` when it is done) drops the previous set, and
//! rewrites the nodes file without it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::reshard::Outcome;
use crate::router::{Router, RoutingArgs};
use crate::secure::Secure;

use super::migration::claims::Claims;
use super::upstream::Upstream;

/// One node set and its router.
#[derive(Debug)]
pub struct NodeSet {
    /// Routes a key to an index of `upstreams`.
    pub router: Box<dyn Router>,
    /// The nodes, in routing order.
    pub upstreams: Vec<Arc<Upstream>>,
}

/// The current set, and the previous one during a move.
#[derive(Debug)]
pub struct Topology {
    /// Where keys live now.
    pub current: NodeSet,
    /// Where they lived before, while they move.
    pub previous: Option<NodeSet>,
    /// Why these sets are not what the nodes file said when it was re-read ([`plan_reload`]).
    pub note: Option<String>,
    /// During a move: the keys being moved now, and the keys settled (`claims.rs`).
    pub claims: Claims,
    /// Keys read on their previous owner, to be moved in the background.
    later: std::sync::Mutex<Later>,
    /// Replaced by another topology: keys queued for later are left to the mover.
    retired: AtomicBool,
    /// When the mover last asked for keys to be moved ([`Topology::mover_at_work`]), in milliseconds
    /// since `born`; 0 for never.
    mover_seen_ms: AtomicU64,
    born: Instant,
}

/// The mover counts as at work for this long after its last request.
const MOVER_QUIET: Duration = Duration::from_secs(2);

/// The most keys waiting for a background move; a key read while the queue is full is left to the
/// mover (its reads keep asking its previous owner until then).
const LATER_CAP: usize = 10_000;

/// The background moves' queue.
#[derive(Debug, Default)]
struct Later {
    keys: VecDeque<Box<[u8]>>,
    /// A coroutine is draining the queue.
    draining: bool,
}

/// What builds node sets: the routing, how to reach nodes, and the pools to reuse.
#[derive(Debug)]
pub struct Builder {
    /// The routing options.
    pub routing: RoutingArgs,
    /// TLS and token towards the nodes.
    pub secure: Secure,
    /// `--upstream-timeout`.
    pub timeout: Duration,
    /// `--upstream-connections`.
    pub max_connections: usize,
}

impl Builder {
    /// A set of `urls`, reusing the pool of a node already known by the same name and URL.
    pub fn set(&self, urls: &[String], known: &[Arc<Upstream>]) -> Result<NodeSet, String> {
        let targets = crate::nodes::remote_targets(urls, &self.secure)?;
        let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
        let upstreams = targets
            .iter()
            .map(|t| {
                known.iter().find(|u| u.name == t.name && u.url() == t.url()).map_or_else(
                    || Arc::new(Upstream::new(t, self.timeout, self.max_connections)),
                    Arc::clone,
                )
            })
            .collect();
        Ok(NodeSet { router: self.routing.build(&names), upstreams })
    }
}

impl Topology {
    /// The previous owner of `key` when a move is on and it is another node than `node`, its current
    /// owner.
    pub fn moved_from(&self, key: &[u8], node: usize) -> Option<&Arc<Upstream>> {
        let previous = self.previous.as_ref()?;
        let from = &previous.upstreams[previous.router.route(key)];
        let moves = from.url() != self.current.upstreams[node].url();
        (moves && !self.is_settled(key)).then_some(from)
    }

    fn is_settled(&self, key: &[u8]) -> bool {
        self.claims.is_settled(key)
    }

    /// Runs `move_key` for `key` with the key claimed, unless another connection settled it while this
    /// one waited; marks it settled when the move ends (unless the key kept changing on its previous
    /// owner, and is still there). Returns `None` if it was settled already.
    pub fn move_once<E>(
        &self,
        key: &[u8],
        move_key: impl FnOnce() -> Result<Outcome, E>,
    ) -> Result<Option<Outcome>, E> {
        let _claim = self.claims.claim(key);
        if self.is_settled(key) {
            return Ok(None);
        }
        let outcome = move_key()?;
        if outcome != Outcome::Conflict {
            self.claims.settle(key);
        }
        Ok(Some(outcome))
    }

    /// Queues `key` for a background move; returns whether the caller is to start the coroutine that
    /// drains the queue ([`Topology::next_later`]). A full queue, or a retired topology, drops the key.
    pub fn queue_later(&self, key: &[u8]) -> bool {
        if self.mover_at_work() {
            return false;
        }
        let mut later = otkv_adapter_http::front::lock(&self.later);
        if later.keys.len() >= LATER_CAP || self.retired.load(Relaxed) {
            return false;
        }
        later.keys.push_back(key.into());
        !std::mem::replace(&mut later.draining, true)
    }

    /// The next keys to move in the background (at most `n`); none when the queue is empty (or the
    /// topology retired), and then the drainer is to stop.
    pub fn next_later(&self, n: usize) -> Vec<Vec<u8>> {
        let mut later = otkv_adapter_http::front::lock(&self.later);
        if self.retired.load(Relaxed) || self.mover_at_work() {
            later.keys.clear();
        }
        let take = later.keys.len().min(n);
        let next: Vec<Vec<u8>> = later.keys.drain(..take).map(Vec::from).collect();
        later.draining = !next.is_empty();
        next
    }

    /// The mover asked for keys to be moved: while it goes on, keys read on their previous owner are
    /// left to it, so the moves the proxy makes are the ones the mover paces (`harness reshard --rate`).
    pub fn mover_working(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX).max(1);
        self.mover_seen_ms.store(ms, Relaxed);
    }

    /// Whether the mover asked for a move within [`MOVER_QUIET`].
    pub fn mover_at_work(&self) -> bool {
        let seen = self.mover_seen_ms.load(Relaxed);
        let now = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        seen != 0 && now.saturating_sub(seen) < MOVER_QUIET.as_millis() as u64
    }

    /// This topology is replaced: nothing more is moved in its background.
    pub fn retire(&self) {
        self.retired.store(true, Relaxed);
    }

    /// A topology of `current` and `previous`.
    pub fn new(current: NodeSet, previous: Option<NodeSet>) -> Topology {
        Topology {
            current,
            previous,
            note: None,
            claims: Claims::default(),
            later: std::sync::Mutex::default(),
            retired: AtomicBool::new(false),
            mover_seen_ms: AtomicU64::new(0),
            born: Instant::now(),
        }
    }

    /// Every node of both sets, each once (for stats and health).
    pub fn all(&self) -> Vec<Arc<Upstream>> {
        let mut all: Vec<Arc<Upstream>> = self.current.upstreams.clone();
        for u in self.previous.iter().flat_map(|p| &p.upstreams) {
            if !all.iter().any(|a| a.url() == u.url()) {
                all.push(Arc::clone(u));
            }
        }
        all
    }
}

/// What a nodes file re-read on SIGHUP leads to: the sets to serve, and, when they are not what the file
/// says, why (logged, and written back into the file so a restart serves the same).
#[derive(Debug, PartialEq, Eq)]
pub struct Reload {
    /// The current set's URLs.
    pub current: Vec<String>,
    /// The previous set's URLs (empty: no move).
    pub previous: Vec<String>,
    /// Why the sets differ from the file's, if they do.
    pub amended: Option<String>,
}

/// The sets to serve after re-reading a nodes file (`file_*`) while serving `now_*`. A changed set never
/// strands a key: a previous set is dropped only by the end of a move (`POST /v1/reshard/done`), never by
/// an edit; a new set without `previous` lines keeps the set before as its previous one, so
/// `harness reshard --proxy` moves the keys; and a new set while a move is still going on is refused
/// (`Err`, the sets in force written back), since keys would then have two sets to come from.
pub fn plan_reload(
    now_current: &[String],
    now_previous: &[String],
    file_current: Vec<String>,
    file_previous: Vec<String>,
) -> Result<Reload, String> {
    if !file_previous.is_empty() {
        return Ok(Reload { current: file_current, previous: file_previous, amended: None });
    }
    let same = file_current == now_current;
    match (now_previous.is_empty(), same) {
        (true, true) => Ok(Reload { current: file_current, previous: Vec::new(), amended: None }),
        (true, false) => Ok(Reload {
            current: file_current,
            previous: now_current.to_vec(),
            amended: Some(
                "the node set changed without `previous` lines: the set before is kept as the previous \
                 one, so its keys can move; run `harness reshard --proxy URL` to move them"
                    .into(),
            ),
        }),
        (false, true) => Ok(Reload {
            current: file_current,
            previous: now_previous.to_vec(),
            amended: Some(
                "a move is in progress: its previous set stays until `harness reshard --proxy URL` \
                 finishes it"
                    .into(),
            ),
        }),
        (false, false) => Err(
            "a move to the current set is still in progress: finish it with `harness reshard --proxy URL` \
             before changing the set again; the sets in force are written back to the nodes file"
                .into(),
        ),
    }
}

/// `--nodes-file`: the current set's URLs, and `previous URL` lines.
#[derive(Debug, Clone)]
pub struct NodesFile {
    path: PathBuf,
}

impl NodesFile {
    /// The file at `path`.
    pub fn new(path: &Path) -> NodesFile {
        NodesFile { path: path.to_owned() }
    }

    /// Reads it: (current, previous).
    pub fn read(&self) -> Result<(Vec<String>, Vec<String>), String> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("--nodes-file {}: {e}", self.path.display()))?;
        let (mut current, mut previous) = (Vec::new(), Vec::new());
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // A line with several URLs (spaces or commas between them) is one replica group.
            let words: Vec<&str> =
                line.split(|c: char| c.is_ascii_whitespace() || c == ',').filter(|w| !w.is_empty()).collect();
            match words.as_slice() {
                ["previous", urls @ ..] if !urls.is_empty() => previous.push(urls.join(",")),
                urls if !urls.is_empty() && !urls.contains(&"previous") => current.push(urls.join(",")),
                _ => {
                    return Err(format!(
                        "--nodes-file {} line {}: expected `URL`, `URL URL ...` (a replica group's members) \
                         or `previous URL ...`",
                        self.path.display(),
                        i + 1
                    ))
                }
            }
        }
        if current.is_empty() {
            return Err(format!("--nodes-file {}: no node", self.path.display()));
        }
        Ok((current, previous))
    }

    /// Writes the current set alone (the move is over).
    pub fn settle(&self, current: &[String]) -> Result<(), String> {
        self.write(current, &[], "written by harness proxy when a move ended")
    }

    /// Writes both sets, with a comment line saying why.
    pub fn write(&self, current: &[String], previous: &[String], why: &str) -> Result<(), String> {
        let mut text = format!("# {why}\n");
        for url in current {
            text.push_str(url);
            text.push('\n');
        }
        for url in previous {
            text.push_str("previous ");
            text.push_str(url);
            text.push('\n');
        }
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::{plan_reload, Builder, Reload, Topology, LATER_CAP};

    fn urls(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| format!("http://{n}")).collect()
    }

    #[test]
    fn an_edited_set_without_previous_lines_keeps_the_set_before_as_previous() {
        let plan = plan_reload(&urls(&["a", "b"]), &[], urls(&["a", "b", "c"]), Vec::new()).expect("plan");
        assert_eq!((plan.current, plan.previous), (urls(&["a", "b", "c"]), urls(&["a", "b"])));
        assert!(plan.amended.is_some(), "said, and written back");
    }

    #[test]
    fn explicit_previous_lines_and_unchanged_sets_are_taken_as_they_are() {
        let plan = plan_reload(&urls(&["a"]), &[], urls(&["a", "b"]), urls(&["a"])).expect("plan");
        assert_eq!(plan, Reload { current: urls(&["a", "b"]), previous: urls(&["a"]), amended: None });
        let plan = plan_reload(&urls(&["a"]), &[], urls(&["a"]), Vec::new()).expect("plan");
        assert_eq!(plan, Reload { current: urls(&["a"]), previous: Vec::new(), amended: None });
    }

    #[test]
    fn an_edit_never_drops_a_move_in_progress() {
        // The previous lines taken out by hand: the move stays on.
        let plan =
            plan_reload(&urls(&["a", "b"]), &urls(&["a"]), urls(&["a", "b"]), Vec::new()).expect("plan");
        assert_eq!(plan.previous, urls(&["a"]));
        assert!(plan.amended.is_some());
        // Another set while one move is not over: refused.
        assert!(plan_reload(&urls(&["a", "b"]), &urls(&["a"]), urls(&["a", "b", "c"]), Vec::new()).is_err());
    }
    use crate::router::{RouterKind, RoutingArgs};
    use std::time::Duration;

    fn topology() -> Topology {
        let builder = Builder {
            routing: RoutingArgs { router: RouterKind::Rendezvous, vnodes: 160 },
            secure: crate::secure::Secure::default(),
            timeout: Duration::from_secs(1),
            max_connections: 4,
        };
        let urls = |n: usize| (0..n).map(|i| format!("http://127.0.0.1:{}", 9 + i)).collect::<Vec<_>>();
        let set = |n| builder.set(&urls(n), &[]).expect("a node set");
        Topology::new(set(3), Some(set(2)))
    }

    #[test]
    fn background_moves_queue_once_per_drainer_and_up_to_the_cap() {
        let t = topology();
        assert!(t.queue_later(b"a"), "the first key starts the drainer");
        assert!(!t.queue_later(b"b"), "one drainer at a time");
        assert_eq!(t.next_later(16), vec![b"a".to_vec(), b"b".to_vec()]);
        assert!(t.next_later(16).is_empty(), "an empty queue stops the drainer");
        for i in 0..LATER_CAP + 5 {
            t.queue_later(format!("k{i}").as_bytes());
        }
        let mut drained = 0;
        while let n @ 1.. = t.next_later(1000).len() {
            drained += n;
        }
        assert_eq!(drained, LATER_CAP);
    }

    #[test]
    fn background_moves_stand_aside_while_the_mover_works() {
        let t = topology();
        assert!(!t.mover_at_work());
        assert!(t.queue_later(b"queued before the mover came"));
        t.mover_working();
        assert!(t.mover_at_work());
        assert!(!t.queue_later(b"read while the mover works"), "left to the mover");
        assert!(t.next_later(16).is_empty(), "what was queued is left to the mover too");
    }

    #[test]
    fn a_retired_topology_moves_nothing_more() {
        let t = topology();
        t.queue_later(b"a");
        t.retire();
        assert!(t.next_later(16).is_empty());
        assert!(!t.queue_later(b"b"));
    }
}
