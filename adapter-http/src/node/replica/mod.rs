//! Replica groups: a node that is one member of a group of nodes holding the same data, kept the same by
//! Raft (`TiKV`'s `raft` crate), so the group goes on serving, and loses no acknowledged write, while a
//! minority of its members is down.
//!
//! A tour, in the order a write meets the code:
//!
//! 1. Any member takes any request ([`ReplicaNode`], the [`Service`] behind the same front door as a
//!    node). A write becomes a [`command::Command`], with its condition and its expiry decided here,
//!    once, and is handed to the member's Raft thread; the connection's coroutine parks.
//! 2. The Raft thread ([`driver`]) proposes it; on a follower raft-rs forwards the proposal to the
//!    leader. The leader appends it to its log, sends it to the others ([`transport`]: `POST
//!    /v1/replica/raft` on their front doors), and once a majority has it in their logs, each member
//!    applies it to its engine in log order ([`command::apply`]). The member that took the request
//!    wakes its coroutine with what applying did, and the answer leaves.
//! 3. A read is linearizable: the member asks the leader for its commit index (`ReadIndex`, confirmed
//!    with a majority), waits until it has applied that far, then reads its own engine. `?stale` skips
//!    the question.
//! 4. The log and its snapshots are the member's data on disk ([`log_store`]); a snapshot holds the
//!    engine's entries and the members ([`state_dump`]); a member that restarts replays them, one that
//!    is behind is sent the log it lacks or the latest snapshot.
//!
//! The engine of a member is a memory engine without a log of its own: the Raft log is its log.

pub mod args;
mod command;
mod driver;
mod log_store;
mod state_dump;
mod status;
mod transport;

use std::sync::mpsc::{self, SendError, Sender};
use std::sync::{Arc, Mutex};

use otkv_engine::{Condition, Engine, EngineKind, PutOutcome};
use raft::prelude::Snapshot;

use self::command::{Applied, Command, Op};
use self::driver::{Driver, DriverConfig, Inbox, Refusal, Reply};
use self::log_store::LogStore;
use self::status::Status;
use super::cli::ServerArgs;
use super::durable::DurableWaits;
use super::error::ServerError;
use super::handlers::{self, Context};
use super::preconditions::write_condition;
use super::stats;
use crate::front::{
    self, EntryMeta, Exchange, Front, HttpError, Method, Requests, Responder, Route, Service, StorageFailure,
    JSON, PROMETHEUS, TEXT,
};

/// A member of a replica group: the front door, its engine, and the way to its Raft thread.
pub struct ReplicaNode {
    front: Front,
    engine: Arc<Engine>,
    inbox: Sender<Inbox>,
    status: Arc<Mutex<Status>>,
    waits: Arc<DurableWaits>,
    /// The group's durability (the engine itself keeps no log: the Raft log is its durability).
    durability: otkv_engine::Durability,
}

impl std::fmt::Debug for ReplicaNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaNode").finish_non_exhaustive()
    }
}

/// What a request asks of the group.
enum Need {
    /// A write: committed by the group.
    Write,
    /// A read: after a read index.
    Read,
    /// Answered from this member's own state at once (a `?stale` read, an error, a bad request).
    Local,
}

impl Service for ReplicaNode {
    type Session = ();

    fn front(&self) -> &Front {
        &self.front
    }

    fn session(&self) {}

    #[inline(never)]
    fn answer(&self, _session: &mut (), requests: &mut Requests<'_>) {
        while let Some(exchange) = requests.next_request() {
            let method = exchange.method;
            let need = match &exchange.route {
                Ok(Route::Kv(_, _) | Route::Compat(_))
                    if matches!(method, Method::Put | Method::Post | Method::Delete) =>
                {
                    Need::Write
                }
                Ok(Route::Kv(_, query)) if query.stale => Need::Local,
                Ok(Route::Kv(..) | Route::Compat(_) | Route::List { .. }) => Need::Read,
                Ok(Route::ReplicaMessages) => {
                    requests.respond(exchange, |_, body, resp| self.take_messages(body, resp));
                    continue;
                }
                Ok(Route::ReplicaMembers(change)) => {
                    let change = change.clone();
                    let done = self.ask(|reply| Inbox::ChangeMembers(change, reply));
                    requests.respond(exchange, |_, _, resp| {
                        done.map_err(refusal_error)?;
                        Ok(self.send_status(resp, 200))
                    });
                    continue;
                }
                Ok(Route::ReplicaLeader(to)) => {
                    let to = *to;
                    let done = self.ask(|reply| Inbox::TransferLeader(to, reply));
                    requests.respond(exchange, |_, _, resp| {
                        done.map_err(refusal_error)?;
                        Ok(self.send_status(resp, 202))
                    });
                    continue;
                }
                Ok(Route::Stats) => {
                    requests.respond(exchange, |_, _, resp| Ok(self.send_status(resp, 200)));
                    continue;
                }
                Ok(Route::Metrics) => {
                    requests.respond(exchange, |_, _, resp| Ok(self.metrics(resp)));
                    continue;
                }
                Ok(Route::Health) => {
                    requests.respond(exchange, |_, _, resp| self.health(resp));
                    continue;
                }
                _ => Need::Local,
            };
            match need {
                Need::Write => self.write(exchange, requests),
                Need::Read => match self.ask(Inbox::Read) {
                    Ok(()) => self.local(exchange, requests),
                    Err(refusal) => {
                        requests.respond(exchange, |_, _, _| Err(refusal_error(refusal)));
                    }
                },
                Need::Local => self.local(exchange, requests),
            }
        }
    }
}

impl ReplicaNode {
    /// Sends the Raft thread a request that carries a reply, and parks until the reply comes.
    fn ask<T: Send + 'static>(&self, make: impl FnOnce(Reply<T>) -> Inbox) -> Result<T, Refusal> {
        self.waits.wait_for(|done: Box<dyn FnOnce(Result<T, Refusal>) + Send>| {
            if let Err(SendError(item)) = self.inbox.send(make(done)) {
                refuse(item);
            }
        })
    }

    /// Answers from this member's engine as a single node would.
    fn local<'c>(&self, exchange: Exchange<'c>, requests: &mut Requests<'c>) {
        let ctx = Context { engine: &self.engine, front: &self.front };
        let (method, pre) = (exchange.method, exchange.preconditions);
        self.engine.batch(|batch| {
            requests.respond(exchange, |route, body, resp| {
                handlers::handle(&route, method, &pre, body, batch, ctx, resp)
            })
        });
    }

    fn write<'c>(&self, exchange: Exchange<'c>, requests: &mut Requests<'c>) {
        let command = match self.command(&exchange) {
            Ok(c) => c,
            Err(e) => {
                requests.respond(exchange, |_, _, _| Err(e));
                return;
            }
        };
        let bytes = command.encode();
        let applied = self.ask(|reply| Inbox::Propose(bytes, reply));
        let compat = matches!(exchange.route, Ok(Route::Compat(_)));
        requests.respond(exchange, |_, _, resp| {
            let applied = applied.map_err(refusal_error)?;
            answer_write(&command, compat, applied, resp)
        });
    }

    /// The command a write request asks for, its condition and expiry decided now.
    fn command(&self, exchange: &Exchange<'_>) -> Result<Command, HttpError> {
        let now_ms = otkv_engine::now_ms();
        let method = exchange.method;
        let route = exchange.route.as_ref().map_err(|_| HttpError::Internal)?;
        Ok(match (route, method) {
            (Route::Kv(key, query), Method::Put) => {
                let expires_ms = query.ttl.map_or(0, |secs| now_ms.saturating_add(secs * 1000));
                let cond = write_condition(Method::Put, &exchange.preconditions)?;
                Command {
                    op: Op::Put { value: exchange.body.to_vec(), expires_ms },
                    key: key.to_vec(),
                    cond,
                    now_ms,
                }
            }
            (Route::Kv(key, _), _) => {
                let cond = write_condition(Method::Delete, &exchange.preconditions)?;
                Command { op: Op::Delete, key: key.to_vec(), cond, now_ms }
            }
            (Route::Compat(key), Method::Post) => {
                let value = handlers::compat_value(exchange.body, &self.front)?;
                Command {
                    op: Op::Put { value, expires_ms: 0 },
                    key: key.to_vec(),
                    cond: Condition::Always,
                    now_ms,
                }
            }
            (Route::Compat(key), _) => {
                Command { op: Op::Delete, key: key.to_vec(), cond: Condition::Always, now_ms }
            }
            _ => return Err(HttpError::Internal),
        })
    }

    fn take_messages(&self, body: &[u8], resp: &mut Responder<'_>) -> Result<u16, HttpError> {
        let (url, messages) = transport::decode(body)
            .ok_or_else(|| HttpError::BadRequest("the body is not a batch of Raft messages".into()))?;
        self.inbox.send(Inbox::Messages(url, messages)).map_err(|_| stopped())?;
        Ok(resp.send(204, None, b""))
    }

    /// `/v1/stats`: a node's document with the group's view in `replica`.
    fn send_status(&self, resp: &mut Responder<'_>, status: u16) -> u16 {
        let mut doc = stats::stats_json(&self.front.metrics, &self.front.limits, &self.engine);
        if let Some(map) = doc.as_object_mut() {
            map.insert("durability".into(), self.durability.as_str().into());
            map.insert("replica".into(), front::lock(&self.status).json());
        }
        resp.send(status, Some(JSON), doc.to_string().as_bytes())
    }

    fn metrics(&self, resp: &mut Responder<'_>) -> u16 {
        let mut e = self.front.metrics.prometheus(self.front.busy.load(std::sync::atomic::Ordering::Relaxed));
        stats::write_engine_prometheus(&mut e, &self.engine);
        front::lock(&self.status).prometheus(&mut e);
        resp.send(200, Some(PROMETHEUS), e.into_text().as_bytes())
    }

    /// `/healthz`: 200 while this member knows a leader; 503 saying why not.
    fn health(&self, resp: &mut Responder<'_>) -> Result<u16, HttpError> {
        let status = front::lock(&self.status).clone();
        if let Some(why) = status.failed {
            return Err(HttpError::Unhealthy(why));
        }
        if status.leader == 0 {
            return Err(HttpError::Unhealthy(format!(
                "member {} knows no leader of its group (term {})",
                status.id, status.term
            )));
        }
        Ok(resp.send(200, Some(TEXT), b"ok\n"))
    }
}

/// A request the Raft thread will never see gets its reply here.
fn refuse(item: Inbox) {
    let why = || Refusal::Failed("the member is shutting down".into());
    match item {
        Inbox::Propose(_, reply) => reply(Err(why())),
        Inbox::Read(reply) | Inbox::ChangeMembers(_, reply) | Inbox::TransferLeader(_, reply) => {
            reply(Err(why()));
        }
        _ => {}
    }
}

fn stopped() -> HttpError {
    HttpError::Storage { failure: StorageFailure::Unavailable, message: "the member is shutting down".into() }
}

/// The one mapping from a refusal of the group to an HTTP error.
fn refusal_error(refusal: Refusal) -> HttpError {
    match refusal {
        Refusal::NoLeader => HttpError::NoLeader(
            "no leader in this replica group right now (an election, or this member is cut off from a \
             majority): nothing was done; retry"
                .into(),
        ),
        Refusal::Unknown(why) => HttpError::OutcomeUnknown(why.into()),
        Refusal::Failed(message) => HttpError::Storage { failure: StorageFailure::Unavailable, message },
        Refusal::Invalid(why) => HttpError::BadRequest(why),
    }
}

/// The answer to a committed write, as a single node gives it.
fn answer_write(
    command: &Command,
    compat: bool,
    applied: Applied,
    resp: &mut Responder<'_>,
) -> Result<u16, HttpError> {
    let expires_ms = match &command.op {
        Op::Put { expires_ms, .. } => *expires_ms,
        Op::Delete => 0,
    };
    match applied {
        Applied::Refused(message) => Err(HttpError::Storage { failure: StorageFailure::Full, message }),
        Applied::Put(None) | Applied::Delete(None) => {
            Err(HttpError::PreconditionFailed(if command.cond == Condition::Absent {
                "the key exists"
            } else {
                "the key's version differs (or it is absent)"
            }))
        }
        Applied::Put(Some((outcome, version))) => {
            let meta = Some(EntryMeta { version, expires_ms });
            if compat {
                return Ok(handlers::compat_stored(&command.key, meta, resp));
            }
            Ok(match outcome {
                PutOutcome::Created => resp.send_entry(201, Some(TEXT), b"", meta),
                PutOutcome::Replaced => resp.send_entry(204, None, b"", meta),
            })
        }
        Applied::Delete(Some(false)) => Err(HttpError::KeyNotFound),
        Applied::Delete(Some(true)) if compat => Ok(handlers::compat_deleted(&command.key, resp)),
        Applied::Delete(Some(true)) => Ok(resp.send(204, None, b"")),
    }
}

/// A new group's first snapshot: index 1, term 1, these members as voters, no data.
fn first_snapshot(members: &state_dump::Members) -> Snapshot {
    let mut snap = Snapshot::default();
    snap.set_data(state_dump::members_only(members).into());
    let meta = snap.mut_metadata();
    meta.index = 1;
    meta.term = 1;
    meta.mut_conf_state().voters = members.keys().copied().collect();
    snap
}

/// Runs a member of a replica group until SIGINT or SIGTERM.
pub fn run(args: ServerArgs) -> Result<(), ServerError> {
    let replica = args.replica.clone();
    let Some(id) = replica.member else { return Err(ServerError::Config("--member ID is missing".into())) };
    if args.engine == EngineKind::Sled {
        return Err(ServerError::Config(
            "a replica group keeps its data in a memory engine (memory or flurry), made durable by the Raft \
             log and its snapshots in --data-dir; sled cannot be a member"
                .into(),
        ));
    }
    let workers = front::configure_runtime(args.front.workers);
    let front = Front::new(&args.front)?;
    let mut engine_config = args.engine_config()?;
    // The Raft log is the member's log: the engine keeps none of its own.
    engine_config.durability = otkv_engine::Durability::None;
    engine_config.data_dir = None;
    // Expiry is the leader's to decide, once, for every member (`Driver::expire_due`).
    engine_config.active_expiry = false;
    let engine = Arc::new(Engine::open(engine_config)?);
    let (listener, local) = front::bind(args.front.bind, args.port)?;
    let scheme = if args.front.tls_cert.is_some() { "https" } else { "http" };
    let own_url = replica.advertise_url.clone().unwrap_or_else(|| format!("{scheme}://{local}"));
    let initial = match (&replica.peers, replica.join) {
        (_, true) => None,
        (Some(peers), false) => {
            if !peers.contains_key(&id) {
                return Err(ServerError::Config(format!("--peers does not name this member ({id})")));
            }
            Some(first_snapshot(peers))
        }
        (None, false) => Some(first_snapshot(&[(id, own_url.clone())].into())),
    };
    let store = LogStore::open(args.data_dir.as_deref(), initial)
        .map_err(|e| ServerError::Config(format!("the Raft log in --data-dir: {e}")))?;
    let members = state_dump::load(&engine, store.snapshot_ref().get_data())
        .map_err(|e| ServerError::Config(format!("the latest snapshot in --data-dir: {e}")))?;
    let token = match &replica.peer_token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ServerError::Config(format!("--peer-token-file {}: {e}", path.display())))?;
            Some(text.lines().next().unwrap_or_default().trim().to_string()).filter(|t| !t.is_empty())
        }
        None => None,
    };
    let (inbox, rx) = mpsc::channel();
    let reports = Mutex::new(inbox.clone());
    let reporter: transport::Reporter = Arc::new(move |report| {
        let _ = front::lock(&reports).send(Inbox::Peer(report));
    });
    let cert_key = args.front.tls_cert.as_deref().zip(args.front.tls_key.as_deref());
    let tls = crate::front::tls::client_config(replica.peer_tls_ca.as_deref(), cert_key)
        .map_err(|e| ServerError::Config(format!("TLS towards the other members: {e}")))?;
    let transport = transport::Transport::new(id, own_url.clone(), token, Some(tls), reporter);
    let status = Arc::new(Mutex::new(Status { id, ..Status::default() }));
    let config = DriverConfig {
        id,
        durable: args.durability == otkv_engine::Durability::Sync,
        sync_every: (args.durability == otkv_engine::Durability::Periodic).then_some(args.flush_interval),
        snapshot_every: replica.snapshot_entries,
        members,
    };
    let driver = Driver::new(store, Arc::clone(&engine), rx, transport, Arc::clone(&status), config)
        .map_err(|e| ServerError::Config(format!("Raft: {e}")))?;
    let raft_thread = std::thread::Builder::new()
        .name("otkv-raft".into())
        .spawn(move || driver.run())
        .map_err(|e| ServerError::Config(format!("cannot start the Raft thread: {e}")))?;
    let node = Arc::new(ReplicaNode {
        front,
        engine,
        inbox: inbox.clone(),
        status,
        waits: Arc::default(),
        durability: args.durability,
    });
    tracing::info!(%local, member = id, url = %own_url, durability = %args.durability, workers, "member listening");
    let waits = Arc::clone(&node.waits);
    front::serve(Arc::clone(&node), listener, local, move || {
        front::spawn_coroutine(move || waits.relay());
    })?;
    let _ = inbox.send(Inbox::Stop);
    let _ = raft_thread.join();
    tracing::info!(keys = node.engine.len(), "stopped");
    Ok(())
}
