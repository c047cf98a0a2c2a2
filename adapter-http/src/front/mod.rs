//! # The front door: HTTP/1.1 for any [`Service`]
//!
//! Everything between a socket and a complete, trustworthy request, and between an answer and the bytes on
//! the wire: the accept loop and its connection cap, the connection loop with its timeouts and head and
//! body caps, request parsing and framing, the route table, response encoding, metrics and panic
//! isolation. Two services run behind it: the node (this crate's `otkv-server`) and the harness's routing
//! proxy. It knows no store: a service gives it only statuses, bodies and [`EntryMeta`].
//!
//! A server is: [`configure_runtime`], [`bind`], a [`Front`] from [`FrontArgs`], then [`serve`] with a
//! [`Service`]. The service pulls each batch's complete requests from [`Requests`] as [`Exchange`]s, and
//! answers each one through [`Requests::respond`] (a handler writing into a [`Responder`]) or, with bytes it
//! got elsewhere, [`Requests::pass`]. What a request means is [`resolve`]d once, from its head, into a
//! [`Route`]; errors are [`HttpError`], whose status is decided in one place.
//!
//! Also here, because clients of OTKV (the harness) need them too: the one `Content-Length` parser, the
//! head cap, socket [`Deadline`]s, percent-encoding of keys ([`percent`]), the Prometheus text writer, the
//! process's own counters and a poison-tolerant [`lock`].

mod access;
mod cli;
mod conn;
mod deadline;
mod error;
mod exchange;
mod metrics;
mod mutex;
mod notify;
pub mod percent;
mod process;
mod prometheus;
mod request;
#[doc(hidden)]
pub mod request_path;
mod response;
mod routes;
mod server;
mod service;
mod socket;
mod state;
pub mod tls;
mod word_scan;

pub use cli::FrontArgs;
pub use deadline::Deadline;
pub use error::{HttpError, StorageFailure};
pub use exchange::{Exchange, Requests, Responder};
pub use metrics::{Metrics, Op};
pub use mutex::lock;
pub use process::{background_priority, ProcessStats};
pub use prometheus::{Exposition, Kind};
pub use request::{parse_content_length, Method, Preconditions, MAX_HEAD_BYTES};
pub use response::{EntryMeta, Framing, JSON, OCTET_STREAM, PROMETHEUS, TEXT};
pub use routes::{listing_body, resolve, KvQuery, Limits, ListFrom, MemberChange, Route, MAX_TTL_SECS};
pub use server::{bind, configure_runtime, serve, spawn_coroutine, ListenError};
pub use service::Service;
pub use state::{Front, SecurityError};
