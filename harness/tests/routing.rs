//! Routing properties on a million keys, and invariants under random node sets.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

use otkv_harness::router::{movement, node_names, shares, RendezvousRouter, RingRouter, RouterKind};
use proptest::prelude::*;

const KEYS: u64 = 1_000_000;

#[test]
fn rendezvous_shares_are_within_two_percent_of_even() {
    for n in [2, 3, 5] {
        let router = RendezvousRouter::new(&node_names(n));
        let ideal = 1.0 / n as f64;
        for (i, share) in shares(&router, KEYS).into_iter().enumerate() {
            assert!(
                (share - ideal).abs() / ideal < 0.02,
                "{n} nodes: node-{i} has {share:.4}, ideal {ideal:.4}"
            );
        }
    }
}

#[test]
fn adding_a_node_moves_about_one_in_n_plus_one_keys_and_only_onto_it() {
    for n in 1..=4 {
        let before = RendezvousRouter::new(&node_names(n));
        let after = RendezvousRouter::new(&node_names(n + 1));
        let (moved, only_new) = movement(&before, &after, KEYS);
        let ideal = 1.0 / (n + 1) as f64;
        assert!(
            (moved - ideal).abs() < 0.01,
            "rendezvous {n}->{}: moved {moved:.4}, ideal {ideal:.4}",
            n + 1
        );
        assert!(only_new, "rendezvous {n}->{}: keys moved between old nodes", n + 1);

        let before = RingRouter::new(&node_names(n), 160);
        let after = RingRouter::new(&node_names(n + 1), 160);
        let (ring_moved, only_new) = movement(&before, &after, KEYS);
        assert!(only_new, "ring {n}->{}: keys moved between old nodes", n + 1);
        // The ring moves what the new node's arcs cover: near 1/(N+1), less exactly than rendezvous.
        assert!((ring_moved - ideal).abs() < 0.05, "ring {n}->{}: moved {ring_moved:.4}", n + 1);
        println!(
            "{n}->{} nodes: rendezvous moved {moved:.4}, ring moved {ring_moved:.4} (ideal {ideal:.4})",
            n + 1
        );
    }
}

#[test]
fn ring_spread_is_reported_and_bounded() {
    let ring = RingRouter::new(&node_names(3), 160);
    let s = shares(&ring, KEYS);
    let worst = s.iter().map(|x| (x - 1.0 / 3.0).abs() * 3.0).fold(0.0, f64::max);
    println!("ring, 3 nodes, 160 vnodes: shares {s:?}, worst deviation {:.2}% of ideal", worst * 100.0);
    assert!(worst < 0.15, "160 vnodes should keep every share within 15% of even");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Removing any node moves only that node's keys, for both routers, whatever the node names.
    #[test]
    fn removing_a_node_moves_only_its_keys(
        names in prop::collection::hash_set("[a-z0-9-]{1,12}", 2..7),
        victim_pick in any::<prop::sample::Index>(),
        keys in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 200),
    ) {
        let names: Vec<String> = names.into_iter().collect();
        let victim = victim_pick.index(names.len());
        let rest: Vec<String> = names.iter().enumerate().filter(|&(i, _)| i != victim).map(|(_, n)| n.clone()).collect();
        for kind in [RouterKind::Rendezvous, RouterKind::Ring] {
            let all = kind.build(&names, 40);
            let fewer = kind.build(&rest, 40);
            for key in &keys {
                let owner = all.route(key);
                prop_assert!(owner < names.len());
                prop_assert_eq!(all.route(key), owner, "routing is deterministic");
                if owner != victim {
                    prop_assert_eq!(&rest[fewer.route(key)], &names[owner]);
                }
            }
        }
    }
}
