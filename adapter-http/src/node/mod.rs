//! The node: one engine behind the front door. [`run`] is `otkv-server` (and `harness node`).
//!
//! [`Node`] is the [`Service`] that answers requests from the engine: every complete request of a batch
//! runs inside one engine batch (one epoch guard, no I/O), and in `sync` mode the connection then parks
//! until the batch's writes are durable, before any of its answers leave.
//!
//! A listing is the exception: a page costs the engine about its keys (`otkv_engine::listing`), but a
//! page may be 100,000 keys (tens of milliseconds), and on flurry every page walks the whole map; on the
//! node's worker that would stall every other connection for as long. So a listing ends the engine
//! batch, runs on a listing thread ([`listing_threads`]), and its connection parks until it is done,
//! while the worker serves the others; the batch's later requests go on in a new engine batch.
//! The thread writes the page's JSON too ([`front::listing_body`]): a thousand keys encoded on the worker
//! cost it a few hundred microseconds, paid by every request queued behind.

use std::sync::Arc;

use otkv_engine::Engine;

use crate::front::{self, Exchange, Front, HttpError, ListFrom, Requests, Route, Service};

mod cli;
mod durable;
mod error;
mod handlers;
mod listing_threads;
mod preconditions;
pub mod replica;
mod stats;

pub use cli::{parse_bytes, ServerArgs};
pub use error::ServerError;

use durable::DurableWaits;
use handlers::Context;
use listing_threads::ListingThreads;

/// A node's state: the front door, the engine, and the connections waiting for durability.
#[derive(Debug)]
pub struct Node {
    front: Front,
    /// Shared with the threads listings run on.
    engine: Arc<Engine>,
    /// Connections waiting for their writes to become durable (`sync`).
    durable_waits: Arc<DurableWaits>,
    /// Where listings run.
    listing_threads: ListingThreads,
}

impl Service for Node {
    type Session = ();

    fn front(&self) -> &Front {
        &self.front
    }

    fn session(&self) {}

    /// `inline(never)` for the same reason as `conn::process_batch`: the engine batch uses thread-locals,
    /// and the durable wait below can move this coroutine to another worker thread.
    #[inline(never)]
    fn answer(&self, _session: &mut (), requests: &mut Requests<'_>) {
        let ctx = Context { engine: &self.engine, front: &self.front };
        let mut ticket = None;
        loop {
            let (written, listing) = self.engine.batch(|batch| {
                while let Some(exchange) = requests.next_request() {
                    if matches!(exchange.route, Ok(Route::List { .. })) {
                        return (batch.sync_ticket(), Some(exchange));
                    }
                    let (method, pre) = (exchange.method, exchange.preconditions);
                    requests.respond(exchange, |route, body, resp| {
                        handlers::handle(&route, method, &pre, body, batch, ctx, resp)
                    });
                }
                (batch.sync_ticket(), None)
            });
            // A ticket covers every write numbered up to it: the largest covers all of them.
            ticket = ticket.max(written);
            match listing {
                Some(exchange) => self.list_aside(exchange, requests),
                None => break,
            }
        }
        if let Some(ticket) = ticket {
            // `sync` durability: the batch's writes are acknowledged only once durable. The coroutine
            // parks (its worker thread serves other connections) until the flusher's sync covers it.
            if let Err(reason) = self.durable_waits.wait(&self.engine, ticket) {
                requests.fail_batch(&HttpError::NotDurable(reason));
            }
        }
    }
}

impl Node {
    /// Answers a listing from a listing thread while this connection parks (see the module's doc).
    #[inline(never)]
    fn list_aside<'c>(&self, exchange: Exchange<'c>, requests: &mut Requests<'c>) {
        let Ok(Route::List { prefix, from, limit }) = &exchange.route else { return };
        let (prefix, limit) = (prefix.to_vec(), *limit);
        let from = match from {
            ListFrom::Start => ListFrom::Start,
            ListFrom::Cursor(c) => ListFrom::Cursor(c.to_string().into()),
            ListFrom::AfterKey(k) => ListFrom::AfterKey(k.to_vec().into()),
        };
        let engine = Arc::clone(&self.engine);
        let (tx, rx) = may::sync::mpsc::channel();
        let queued = self.listing_threads.run(move || {
            let _ = tx.send(handlers::listing_page(&engine, &prefix, &from, limit));
        });
        let body = match queued {
            Ok(()) => rx.recv().unwrap_or(Err(HttpError::Internal)),
            Err(e) => Err(otkv_engine::EngineError::Unavailable(e).into()),
        };
        requests.respond(exchange, |_, _, resp| Ok(handlers::send_listing_body(&body?, resp)));
    }
}

/// Runs a node until SIGINT or SIGTERM. Prints `listening on http://ADDR` (`https://` with TLS) on stdout once it accepts.
pub fn run(args: ServerArgs) -> Result<(), ServerError> {
    if args.replica.member.is_some() {
        return replica::run(args);
    }
    let workers = front::configure_runtime(args.front.workers);
    // Certificates, tokens and protected mode first: a refusal must not wait for a recovery.
    let front = Front::new(&args.front)?;
    let engine = Arc::new(Engine::open(args.engine_config()?)?);
    let (listener, local) = front::bind(args.front.bind, args.port)?;
    let node = Arc::new(Node {
        front,
        engine,
        durable_waits: Arc::default(),
        listing_threads: ListingThreads::default(),
    });
    let config = node.engine.config();
    let max_memory = config.max_memory.map_or_else(|| "none".to_string(), |m| m.to_string());
    tracing::info!(
        %local, engine = %config.kind, durability = %config.durability, workers, %max_memory,
        eviction = %config.eviction, "listening"
    );
    let waits = Arc::clone(&node.durable_waits);
    front::serve(Arc::clone(&node), listener, local, move || {
        front::spawn_coroutine(move || waits.relay());
    })?;
    // A last snapshot (memory engine with a log) and flush; later writes are refused.
    node.engine.shutdown()?;
    tracing::info!(keys = node.engine.len(), "stopped");
    Ok(())
}
