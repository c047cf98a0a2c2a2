//! # otkv-adapter-http: one OTKV node over HTTP/1.1
//!
//! `otkv-server` exposes one [`otkv_engine::Engine`] over HTTP/1.1, on `may` stackful coroutines: one
//! coroutine per connection, written as plain blocking code, multiplexed over a few worker threads.
//!
//! A tour, in the order a request meets the code:
//!
//! 1. [`node`] opens the engine and hands a [`node::Node`] to [`server`], which binds, prints
//!    `listening on http://ADDR`, and accepts connections (capped; backing off when out of file
//!    descriptors); SIGINT/SIGTERM drain, then the node flushes.
//! 2. [`conn`] is the connection loop: read into a buffer, let the [`service::Service`] answer every
//!    complete request in it (the node: inside one engine batch), write all responses with one write.
//!    Timeouts, the head cap, body framing and panic isolation live here; [`deadline`] enforces the
//!    timeouts (may's own socket timeouts are racy).
//! 3. [`request`] parses a head (the common form with its own word-at-a-time scanner, [`swar`];
//!    anything else with `httparse`) and applies the framing rules (`Content-Length`,
//!    `Transfer-Encoding`, `Connection`, `Expect`).
//! 4. [`routes`] maps method and path to an operation and runs it; [`error`] maps every failure to its
//!    status in one place; [`response`] encodes the answer.
//! 5. [`durable`] parks a connection until its `sync` writes are durable, and wakes it from the engine's
//!    flusher through one relay coroutine.
//! 6. [`metrics`] counts requests for `/metrics` and `/v1/stats`; [`process`] adds the process's own CPU
//!    time and memory, read from `/proc` at scrape time.
//!
//! Why not `may_minihttp` itself: its connection loop is private and has no timeouts, no head or body cap,
//! panics on a bad `Content-Length`, ignores `Transfer-Encoding` and `Connection: close`, and parses an
//! unread body as the next request. This crate keeps its shape (buffer, parse all, one write) and adds the
//! rules. `may_minihttp` stays as a dev-dependency: `examples/minihttp_hello.rs` is the speed baseline.
//!
//! The front door ([`server`], [`conn`], [`request`], [`response`], [`error`]) is reusable: any
//! [`service::Service`] runs behind it with the same hardening. The harness's routing proxy is the other
//! one. This crate knows nothing about other nodes or routing between them.

pub mod front;
mod logging;
mod node;

pub use logging::init_logging;
pub use node::{parse_bytes, run, ServerArgs, ServerError};
