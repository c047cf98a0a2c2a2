//! # otkv-adapter-http: one OTKV node over HTTP/1.1
//!
//! `otkv-server` exposes one [`otkv_engine::Engine`] over HTTP/1.1, on `may` stackful coroutines: one
//! coroutine per connection, written as plain blocking code, multiplexed over a few worker threads.
//!
//! A tour, in the order a request meets the code:
//!
//! 1. [`run`] (the whole of `otkv-server`, from [`ServerArgs`]) opens the engine, builds the node
//!    (`node/mod.rs`) and hands it to the front door: [`front::bind`] prints `listening on http://ADDR`,
//!    and [`front::serve`] accepts connections (capped; backing off when out of file descriptors).
//!    SIGINT/SIGTERM drain, then the node flushes the engine.
//! 2. The front door's connection loop (`front/conn.rs`) reads into a buffer and hands every complete
//!    request in it to the [`front::Service`] (the node runs them inside one engine batch), then writes all
//!    the answers with one write. Timeouts, the head cap, body framing and panic isolation live there;
//!    [`front::Deadline`] enforces the timeouts (may's own socket timeouts are racy).
//! 3. `front/request.rs` parses a head (the common form with its own word-at-a-time scanner,
//!    `front/word_scan.rs`; anything else with `httparse`) and applies the framing rules
//!    (`Content-Length`, `Transfer-Encoding`, `Connection`, `Expect`).
//! 4. [`front::resolve`] maps method and path to a [`front::Route`]; the node's handlers
//!    (`node/handlers.rs`) run it; [`front::HttpError`] maps every failure to its status in one place;
//!    `front/response.rs` encodes the answer.
//! 5. `node/durable.rs` parks a connection until its `sync` writes are durable, and wakes it from the
//!    engine's flusher through one relay coroutine.
//! 6. [`front::Metrics`] counts requests for `/metrics` and `/v1/stats`; [`front::ProcessStats`] adds the
//!    process's own CPU time and memory, read at scrape time.
//!
//! Why not `may_minihttp` itself: its connection loop is private and has no timeouts, no head or body cap,
//! panics on a bad `Content-Length`, ignores `Transfer-Encoding` and `Connection: close`, and parses an
//! unread body as the next request. This crate keeps its shape (buffer, parse all, one write) and adds the
//! rules. `may_minihttp` stays as a dev-dependency: `examples/minihttp_hello.rs` is the speed baseline.
//!
//! The [`front`] door is reusable: any [`front::Service`] runs behind it with the same hardening. The
//! harness's routing proxy is the other one. This crate knows nothing about other nodes or routing
//! between them.

pub mod config;
pub mod front;
mod logging;
mod node;

pub use logging::{init_logging, init_logging_with, LogArgs, LogFormat};
pub use node::{parse_bytes, run, ServerArgs, ServerError};
