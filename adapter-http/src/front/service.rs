//! The seam between the connection layer and what answers requests.
//!
//! The connection layer (the connection loop and the accept loop) is the hardened part: head and body caps,
//! timeouts, framing rules, pipelining, connection cap, panic isolation. It is the same for every server
//! this workspace runs. What differs is only what happens to a complete request, and that is a
//! [`Service`]:
//!
//! - the node (`otkv-server`) answers each request from its engine, inside one engine batch per
//!   read, and parks the connection until `sync` writes are durable;
//! - the harness's routing proxy forwards each request to the node that owns its key, and copies the
//!   node's answer back in order. It lives in the harness crate: this crate knows nothing of other nodes.
//!
//! A service pulls the requests of one batch from [`Requests`], in order, and answers each one, either
//! with [`Requests::respond`] (encoded here, counted here) or by appending a response it got elsewhere
//! after [`Requests::pass`]. Every request gets exactly one response, in request order.

use super::exchange::Requests;
use super::state::Front;

/// What a server does with the complete requests its connections read.
pub trait Service: Send + Sync + 'static {
    /// State one client connection keeps between its batches (the proxy's node connections); `()` for a
    /// node.
    type Session: Send;

    /// The shared front-door state: limits, timeouts, metrics, the shutdown flag.
    fn front(&self) -> &Front;

    /// A new connection's state.
    fn session(&self) -> Self::Session;

    /// Answers every request `requests` hands out, in order, until `next_request` returns `None`.
    ///
    /// Runs between two socket operations of the connection: it may do I/O of its own (the proxy does),
    /// and it must not hold a thread-local reference across such I/O (a coroutine can move to another
    /// worker thread whenever it blocks). A panic here ends this connection only: the connection layer
    /// catches it and answers `500`.
    fn answer(&self, session: &mut Self::Session, requests: &mut Requests<'_>);

    /// SIGHUP: re-read what the service reads from files (the front door re-reads its tokens itself).
    fn reload(&self) {}
}
