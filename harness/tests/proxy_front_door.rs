//! The proxy's front door is the node's: the adapter's own bad-input and connection suites, unchanged, run
//! here against `harness proxy` in front of two nodes (their `common::Node` starts that when built in this
//! crate). Every status, close and limit they check at a node holds at the proxy: malformed heads, 431,
//! framing (Content-Length, Transfer-Encoding, Expect, Connection: close, HTTP/1.0), 413 before the body,
//! key rules, timeouts, the connection cap, descriptor exhaustion, panic isolation, SIGTERM drain.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]
// Each suite declares its own `mod common;`, as it does in the adapter: two copies of the same helpers.
#![allow(clippy::duplicate_mod)]

#[path = "../../adapter-http/tests/bad_input.rs"]
mod bad_input;

#[path = "../../adapter-http/tests/connections.rs"]
mod connections;

#[path = "../../adapter-http/tests/listing_pages.rs"]
mod listing_pages;

#[path = "../../adapter-http/tests/openapi.rs"]
mod openapi;
