//! The bad-input and connection suites again, unchanged, over TLS: every status, close, limit and timeout
//! they check in clear holds on an HTTPS node (`common::over_tls` is true in this crate, so `common::Node`
//! starts the node with `--tls-cert/--tls-key` and every connection does a handshake first).

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]
// Each suite declares its own `mod common;`: two copies of the same helpers.
#![allow(clippy::duplicate_mod)]

mod common;

#[path = "bad_input.rs"]
mod bad_input;

#[path = "connections.rs"]
mod connections;

#[test]
fn these_suites_speak_tls() {
    assert!(common::over_tls());
    let node = common::Node::start(&[]);
    assert!(node.url.starts_with("https://"), "{}", node.url);
}
