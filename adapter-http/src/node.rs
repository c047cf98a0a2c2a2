//! The node: one engine behind the front door. [`run`] is `otkv-server` (and `harness node`).
//!
//! [`Node`] is the [`Service`] that answers requests from the engine: every complete request of a batch
//! runs inside one engine batch (one epoch guard, no I/O), and in `sync` mode the connection then parks
//! until the batch's writes are durable, before any of its answers leave.

use std::sync::Arc;

use otkv_engine::{Engine, EngineConfig};

use crate::cli::ServerArgs;
use crate::conn::Requests;
use crate::durable::DurableWaits;
use crate::error::HttpError;
use crate::routes::{self, Context};
use crate::server::{self, Front, ServerError};
use crate::service::Service;

/// A node's state: the front door, the engine, and the connections waiting for durability.
#[derive(Debug)]
pub struct Node {
    front: Front,
    engine: Engine,
    /// Connections waiting for their writes to become durable (`sync`).
    durable_waits: Arc<DurableWaits>,
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
        let front = &self.front;
        let ctx = Context {
            engine: &self.engine,
            metrics: &front.metrics,
            limits: &front.limits,
            in_flight: &front.busy,
        };
        let ticket = self.engine.batch(|batch| {
            while let Some(exchange) = requests.next_request() {
                let (method, pre) = (exchange.method, exchange.preconditions);
                requests.respond(exchange, |route, body, resp| {
                    routes::handle(&route, method, &pre, body, batch, &ctx, resp)
                });
            }
            batch.sync_ticket()
        });
        if let Some(ticket) = ticket {
            // `sync` durability: the batch's writes are acknowledged only once durable. The coroutine
            // parks (its worker thread serves other connections) until the flusher's sync covers it.
            if let Err(reason) = self.durable_waits.wait(&self.engine, ticket) {
                requests.fail_batch(&HttpError::NotDurable(reason));
            }
        }
    }
}

/// Runs a node until SIGINT or SIGTERM. Prints `listening on http://ADDR` on stdout once it accepts.
pub fn run(args: ServerArgs) -> Result<(), ServerError> {
    let workers = server::configure_runtime(args.front.workers);
    let engine = Engine::open(args.engine_config()?)?;
    let (listener, local) = server::bind(args.front.bind, args.port)?;
    let node = Arc::new(Node { front: Front::new(&args.front), engine, durable_waits: Arc::default() });
    let config = node.engine.config();
    let max_memory = config.max_memory.map_or_else(|| "none".to_string(), |m| m.to_string());
    tracing::info!(
        %local, engine = %config.kind, durability = %config.durability, workers, %max_memory,
        eviction = %config.eviction, "listening"
    );
    let waits = Arc::clone(&node.durable_waits);
    server::serve(Arc::clone(&node), listener, local, move || {
        server::spawn_coroutine(move || waits.relay());
    })?;
    // A last snapshot (memory engine with a log) and flush; later writes are refused.
    node.engine.shutdown()?;
    tracing::info!(keys = node.engine.len(), "stopped");
    Ok(())
}

impl ServerArgs {
    /// The engine configuration these arguments describe.
    pub fn engine_config(&self) -> Result<EngineConfig, ServerError> {
        use otkv_engine::EngineKind;
        if self.engine == EngineKind::Sled && self.data_dir.is_none() {
            return Err(ServerError::Config("--engine sled needs --data-dir DIR".into()));
        }
        if self.durability != otkv_engine::Durability::None && self.data_dir.is_none() {
            return Err(ServerError::Config(format!(
                "--durability {} needs --data-dir DIR",
                self.durability
            )));
        }
        Ok(EngineConfig {
            kind: self.engine,
            data_dir: self.data_dir.clone(),
            durability: self.durability,
            flush_interval: self.flush_interval,
            commit_delay: self.commit_delay,
            snapshot_interval: Some(self.snapshot_interval).filter(|d| !d.is_zero()),
            max_memory: self.max_memory,
            eviction: self.eviction,
        })
    }
}
