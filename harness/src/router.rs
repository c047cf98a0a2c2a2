//! Client-side routing: which node owns a key.
//!
//! Both routers hash with XXH3-64 (seed 0), a frozen function: its output is specified byte for byte and
//! does not change across processes, machines, versions or architectures, unlike `ahash` (randomly seeded
//! and allowed to change between versions) or `std`'s `DefaultHasher`. The test vectors in this file pin it.
//!
//! - [`RendezvousRouter`] (highest random weight): a key goes to the node with the highest
//!   `xxh3(key, seed = xxh3(node name))`. Shares are as even as the hash; adding a node moves exactly the
//!   keys the new node now wins, about 1/(N+1), and only onto it.
//! - [`RingRouter`]: consistent hashing with `vnodes` points per node at `xxh3("{name}#{i}")`; a key goes
//!   to the first point at or after `xxh3(key)`, wrapping. O(log points) per key instead of O(N), at the
//!   price of uneven shares (the spread shrinks as vnodes grow).
//!
//! Nodes are identified by name, not position: the harness names the nodes it starts `node-0`, `node-1`,
//! ..., so that the node set {0, 1} routes every key the same way in every run and on every machine.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// The stable hash every router uses.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

/// Maps a key to the index of the node that owns it.
pub trait Router: Send + Sync {
    /// The index (into the node list the router was built from) of the key's node.
    fn route(&self, key: &[u8]) -> usize;
    /// How many nodes there are.
    fn nodes(&self) -> usize;
}

impl std::fmt::Debug for dyn Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Router({} nodes)", self.nodes())
    }
}

/// Which router to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RouterKind {
    /// Highest-random-weight hashing.
    Rendezvous,
    /// A consistent-hash ring with virtual nodes.
    Ring,
}

impl RouterKind {
    /// Builds the router for `names` (`vnodes` is used by the ring only).
    pub fn build(self, names: &[String], vnodes: usize) -> Box<dyn Router> {
        match self {
            RouterKind::Rendezvous => Box::new(RendezvousRouter::new(names)),
            RouterKind::Ring => Box::new(RingRouter::new(names, vnodes)),
        }
    }
}

/// How keys are routed, as `harness run` and `harness proxy` both take it on the command line.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct RoutingArgs {
    /// How keys are routed to nodes.
    #[arg(long, value_enum, default_value = "rendezvous")]
    pub router: RouterKind,
    /// Virtual nodes per node, for --router ring.
    #[arg(long, default_value_t = 160)]
    pub vnodes: usize,
}

impl RoutingArgs {
    /// The router over nodes with these names.
    pub fn build(&self, names: &[String]) -> Box<dyn Router> {
        self.router.build(names, self.vnodes)
    }

    /// `rendezvous`, or `ring (160 vnodes)`.
    pub fn describe(&self) -> String {
        match self.router {
            RouterKind::Rendezvous => "rendezvous".into(),
            RouterKind::Ring => format!("ring ({} vnodes)", self.vnodes),
        }
    }
}

/// Highest-random-weight (rendezvous) hashing.
#[derive(Debug, Clone)]
pub struct RendezvousRouter {
    seeds: Vec<u64>,
}

impl RendezvousRouter {
    /// A router over nodes with these names.
    pub fn new(names: &[String]) -> Self {
        RendezvousRouter { seeds: names.iter().map(|n| stable_hash(n.as_bytes())).collect() }
    }
}

impl Router for RendezvousRouter {
    fn route(&self, key: &[u8]) -> usize {
        let mut best = 0;
        let mut best_score = 0;
        for (i, &seed) in self.seeds.iter().enumerate() {
            let score = xxh3_64_with_seed(key, seed);
            // Ties (vanishingly rare) go to the lower index, the same everywhere.
            if i == 0 || score > best_score {
                best = i;
                best_score = score;
            }
        }
        best
    }

    fn nodes(&self) -> usize {
        self.seeds.len()
    }
}

/// A consistent-hash ring with virtual nodes.
#[derive(Debug, Clone)]
pub struct RingRouter {
    /// (point, node index), sorted by point.
    points: Vec<(u64, usize)>,
    nodes: usize,
}

impl RingRouter {
    /// A ring over nodes with these names, `vnodes` points each (at least 1).
    pub fn new(names: &[String], vnodes: usize) -> Self {
        let mut points: Vec<(u64, usize)> = names
            .iter()
            .enumerate()
            .flat_map(|(i, name)| {
                (0..vnodes.max(1)).map(move |v| (stable_hash(format!("{name}#{v}").as_bytes()), i))
            })
            .collect();
        points.sort_unstable();
        RingRouter { points, nodes: names.len() }
    }
}

impl Router for RingRouter {
    fn route(&self, key: &[u8]) -> usize {
        let h = stable_hash(key);
        let i = self.points.partition_point(|&(p, _)| p < h);
        self.points.get(i).or(self.points.first()).map_or(0, |&(_, node)| node)
    }

    fn nodes(&self) -> usize {
        self.nodes
    }
}

/// The names the harness gives the nodes it starts, or numbers the nodes it is given.
pub fn node_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("node-{i}")).collect()
}

/// Each node's fraction of keys `0..keys` (named as the load generator names them).
pub fn shares(router: &dyn Router, keys: u64) -> Vec<f64> {
    let mut counts = vec![0u64; router.nodes()];
    for i in 0..keys {
        counts[router.route(&crate::workload::key_bytes(i))] += 1;
    }
    counts.iter().map(|&c| c as f64 / keys.max(1) as f64).collect()
}

/// Going from `before` to `after` (which has one node more, the last): the fraction of keys that moved,
/// and whether every moved key moved onto the new node.
pub fn movement(before: &dyn Router, after: &dyn Router, keys: u64) -> (f64, bool) {
    let new_node = after.nodes() - 1;
    let mut moved = 0u64;
    let mut only_to_new = true;
    for i in 0..keys {
        let key = crate::workload::key_bytes(i);
        let (a, b) = (before.route(&key), after.route(&key));
        if a != b {
            moved += 1;
            only_to_new &= b == new_node;
        }
    }
    (moved as f64 / keys.max(1) as f64, only_to_new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxh3_test_vectors_are_frozen() {
        // Published XXH3-64 values (seed 0): the empty string and "a".
        assert_eq!(stable_hash(b""), 0x2D06_8005_38D3_94C2);
        assert_eq!(stable_hash(b"a"), 0xE6C6_32B6_1E96_4E1F);
        let pinned: Vec<u64> =
            ["a", "key0000000000042", "node-2"].iter().map(|s| stable_hash(s.as_bytes())).collect();
        assert_eq!(pinned, PINNED_HASHES);
    }

    /// Computed once and frozen: any change in the hash or its use shows here.
    const PINNED_HASHES: [u64; 3] = [0xE6C6_32B6_1E96_4E1F, 0x986A_1213_174B_8409, 0x1CC6_C50C_6B36_742E];

    #[test]
    fn routing_test_vectors_are_frozen() {
        let names = node_names(3);
        let rv = RendezvousRouter::new(&names);
        let ring = RingRouter::new(&names, 160);
        let keys = ["a", "b", "key0000000000000", "key0000000000001", "key0000000099999", "user:42"];
        let got: Vec<(usize, usize)> =
            keys.iter().map(|k| (rv.route(k.as_bytes()), ring.route(k.as_bytes()))).collect();
        assert_eq!(got, PINNED_ROUTES);
    }

    const PINNED_ROUTES: [(usize, usize); 6] = [(2, 0), (0, 2), (2, 1), (2, 0), (0, 1), (2, 0)];
}
