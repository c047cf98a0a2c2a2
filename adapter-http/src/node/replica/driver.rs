//! The Raft thread: the one owner of a member's [`RawNode`], and the only writer of its engine.
//!
//! raft-rs has no runtime: it is a state machine that we feed ticks, messages and proposals, and that
//! hands back a `Ready` (entries to persist, messages to send, entries to apply). This thread runs that
//! loop, in the order raft-rs prescribes:
//!
//! 1. wait for the next request or the next tick (every [`TICK`]); take everything queued (so every
//!    write that arrived meanwhile shares one `Ready`, one log write and one sync: group commit);
//! 2. send the messages a leader may send before persisting; install a snapshot; apply what is committed;
//!    append the new entries and the hard state to the log and sync it (`sync` durability); only then
//!    send the messages that promise them (votes, acknowledgements);
//! 3. answer the writes this member proposed once their entries are applied, and the linearizable reads
//!    once the applied index reaches their read index (`ReadIndex`: the leader confirms with a majority
//!    that it still leads, batched: one confirmation per round, whatever the number of reads).
//!
//! Requests come from the front door's coroutines through [`Inbox`]; each carries a [`Reply`] callback
//! that wakes its coroutine. A request this thread cannot finish says why ([`Refusal`]): no leader
//! (nothing was done: safe to retry), or the outcome is unknown (a change of leader came first).

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use otkv_engine::Engine;
use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfChangeType, ConfState, Entry, EntryType, Message, Snapshot};
use raft::{RawNode, SnapshotStatus, StateRole, Storage};

use super::command::{self, context, context_of, Applied, Command};
use super::log_store::LogStore;
use super::state_dump::{self, Members};
use super::status::{Lag, Status};
use super::transport::{Report, Transport};
use crate::front::{lock, MemberChange};

/// How often Raft's clock ticks.
pub const TICK: Duration = Duration::from_millis(50);
/// Ticks without a leader's word before a follower stands for election (randomised up to twice this):
/// 0.5 to 1 s.
const ELECTION_TICKS: usize = 10;
/// Ticks between a leader's heartbeats: 100 ms.
const HEARTBEAT_TICKS: usize = 2;
/// A follower that has not heard from its leader for this many ticks (two heartbeats missed) stops
/// handing it requests: a leader that died would take them with it (their outcome unknown), while a
/// refusal now is safe to retry.
const LEADER_SILENT_TICKS: usize = 2 * HEARTBEAT_TICKS;
/// The most expired values the leader proposes to remove per tick (20,000 a second).
const EXPIRE_PER_TICK: usize = 1000;
/// The longest a write waits for its entry to be applied before its outcome is reported unknown.
const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a read waits for the leader to confirm its read index.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// A callback that gives a waiting request its result (and wakes its coroutine).
pub type Reply<T> = Box<dyn FnOnce(Result<T, Refusal>) + Send>;

/// Why a request to the group did not get an answer from it.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// No leader is known (an election, or this member is cut off from a majority): nothing was done.
    NoLeader,
    /// The write was proposed but is not known to be committed (the leader changed, or time ran out):
    /// it may still take effect.
    Unknown(&'static str),
    /// This member cannot go on (its log cannot be written, its engine refused an entry).
    Failed(String),
    /// The request makes no sense for this group (adding a member it has, removing its last one).
    Invalid(String),
}

/// What the front door asks of the Raft thread.
pub enum Inbox {
    /// Messages from another member, with its URL.
    Messages(String, Vec<Message>),
    /// A write (a [`Command`]'s bytes) to commit and apply.
    Propose(Vec<u8>, Reply<Applied>),
    /// A linearizable read: answered once this member's data is at least as new as the group's commit
    /// when the read arrived.
    Read(Reply<()>),
    /// Add or remove a member.
    ChangeMembers(MemberChange, Reply<()>),
    /// Hand leadership to this member.
    TransferLeader(u64, Reply<()>),
    /// What a sender found out about its peer.
    Peer(Report),
    /// Stop the thread.
    Stop,
}

/// A write waiting for its entry.
enum Waiting {
    Write(Reply<Applied>, Instant),
    Change(Reply<()>, Instant),
}

/// How a member's Raft thread is set up.
pub struct DriverConfig {
    /// This member's id.
    pub id: u64,
    /// Sync the log before acknowledging (durability `sync`).
    pub durable: bool,
    /// Otherwise, sync it this often (durability `periodic`); `None`: only when the OS writes it back.
    pub sync_every: Option<Duration>,
    /// Entries applied between two snapshots (each drops the log before it).
    pub snapshot_every: u64,
    /// The members known at start (from the snapshot, or the command line).
    pub members: Members,
}

/// The Raft thread's state.
pub struct Driver {
    node: RawNode<LogStore>,
    engine: Arc<Engine>,
    inbox: Receiver<Inbox>,
    transport: Transport,
    status: Arc<Mutex<Status>>,
    config: DriverConfig,
    conf: ConfState,
    applied: u64,
    next_id: u64,
    waiting: HashMap<u64, Waiting>,
    /// Reads not yet sent for a read index.
    reads: Vec<Reply<()>>,
    /// Reads whose read index was asked, by the request's id.
    reads_asked: HashMap<u64, (Vec<Reply<()>>, Instant)>,
    /// Reads with their read index, waiting for it to be applied.
    reads_ready: Vec<(u64, Vec<Reply<()>>)>,
    leader: u64,
    /// Peers a sender could not reach, until a message from them arrives.
    unreachable: std::collections::HashSet<u64>,
    /// Set when this member can no longer go on: everything is refused with it.
    failed: Option<String>,
}

/// raft-rs logs through `slog`; its records go to `tracing` (target `raft`).
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record<'_>, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        match record.level() {
            slog::Level::Critical | slog::Level::Error => tracing::error!(target: "raft", "{}", record.msg()),
            slog::Level::Warning => tracing::warn!(target: "raft", "{}", record.msg()),
            slog::Level::Info => tracing::info!(target: "raft", "{}", record.msg()),
            _ => tracing::debug!(target: "raft", "{}", record.msg()),
        }
        Ok(())
    }
}

impl Driver {
    /// A Raft node over `store` for `engine` (which must already hold the store's snapshot).
    pub fn new(
        store: LogStore,
        engine: Arc<Engine>,
        inbox: Receiver<Inbox>,
        transport: Transport,
        status: Arc<Mutex<Status>>,
        config: DriverConfig,
    ) -> raft::Result<Driver> {
        let applied = store.snapshot_ref().get_metadata().index;
        let conf = store.initial_state()?.conf_state;
        let raft_config = raft::Config {
            id: config.id,
            election_tick: ELECTION_TICKS,
            heartbeat_tick: HEARTBEAT_TICKS,
            applied,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            ..raft::Config::default()
        };
        let logger = slog::Logger::root(TracingDrain, slog::o!("member" => config.id));
        let node = RawNode::new(&raft_config, store, &logger)?;
        let mut driver = Driver {
            node,
            engine,
            inbox,
            transport,
            status,
            config,
            conf,
            applied,
            next_id: 1,
            waiting: HashMap::new(),
            reads: Vec::new(),
            reads_asked: HashMap::new(),
            reads_ready: Vec::new(),
            leader: 0,
            unreachable: std::collections::HashSet::new(),
            failed: None,
        };
        driver.transport.set_members(&driver.config.members);
        // A group of one elects itself at once rather than after an election timeout.
        if driver.conf.voters == [driver.config.id] {
            let _ = driver.node.campaign();
        }
        driver.publish();
        Ok(driver)
    }

    /// Runs until [`Inbox::Stop`] or until every sender is gone.
    pub fn run(mut self) {
        let mut next_tick = Instant::now() + TICK;
        let mut last_sync = Instant::now();
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match self.inbox.recv_timeout(wait) {
                Ok(Inbox::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(first) => {
                    self.take(first);
                    // Everything queued meanwhile joins this round.
                    let mut stop = false;
                    for _ in 0..4096 {
                        match self.inbox.try_recv() {
                            Ok(Inbox::Stop) => stop = true,
                            Ok(next) => self.take(next),
                            Err(_) => break,
                        }
                    }
                    if stop {
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = Instant::now();
            if now >= next_tick {
                self.node.tick();
                next_tick = now + TICK;
                self.expire(now);
                self.expire_due();
                if self.config.sync_every.is_some_and(|every| now.duration_since(last_sync) >= every) {
                    last_sync = now;
                    if let Err(e) = self.node.mut_store().flush(true) {
                        self.fail(format!("the Raft log cannot be synced: {e}"));
                    }
                }
            }
            self.ask_read_index();
            if self.node.has_ready() {
                self.on_ready();
            }
            self.notice_leader();
            self.publish();
        }
        self.refuse_all(|| Refusal::Failed("the member is shutting down".into()));
        if let Err(e) = self.node.mut_store().flush(true) {
            tracing::error!(error = %e, "syncing the Raft log at shutdown failed");
        }
    }

    fn take(&mut self, item: Inbox) {
        if let Some(why) = &self.failed {
            let why = why.clone();
            match item {
                Inbox::Propose(_, reply) => reply(Err(Refusal::Failed(why))),
                Inbox::Read(reply) | Inbox::ChangeMembers(_, reply) | Inbox::TransferLeader(_, reply) => {
                    reply(Err(Refusal::Failed(why)));
                }
                _ => {}
            }
            return;
        }
        match item {
            Inbox::Messages(url, messages) => {
                if let Some(first) = messages.first() {
                    self.transport.learn(first.from, &url);
                    self.unreachable.remove(&first.from);
                }
                for m in messages {
                    if let Err(e) = self.node.step(m) {
                        tracing::debug!(error = %e, "a Raft message was not taken");
                    }
                }
            }
            Inbox::Propose(data, reply) => {
                if !self.leader_heard() {
                    return reply(Err(Refusal::NoLeader));
                }
                let id = self.next_id;
                self.next_id += 1;
                match self.node.propose(context(self.config.id, id), data) {
                    Ok(()) => {
                        self.waiting.insert(id, Waiting::Write(reply, Instant::now()));
                    }
                    Err(_) => reply(Err(Refusal::NoLeader)),
                }
            }
            Inbox::Read(reply) => self.reads.push(reply),
            Inbox::ChangeMembers(change, reply) => self.change_members(change, reply),
            Inbox::TransferLeader(to, reply) => {
                if self.node.raft.state != StateRole::Leader {
                    return reply(Err(Refusal::Invalid(format!(
                        "this member does not lead the group; ask the leader (member {})",
                        self.node.raft.leader_id
                    ))));
                }
                if !self.conf.voters.contains(&to) {
                    return reply(Err(Refusal::Invalid(format!("member {to} is not a voting member"))));
                }
                self.node.transfer_leader(to);
                reply(Ok(()));
            }
            Inbox::Peer(Report::Unreachable(id)) => {
                self.node.report_unreachable(id);
                self.unreachable.insert(id);
            }
            Inbox::Peer(Report::Undelivered(requests)) => {
                // Never reached the leader: not written, and safe to send again.
                for id in requests {
                    if let Some(Waiting::Write(reply, _)) = self.waiting.remove(&id) {
                        reply(Err(Refusal::NoLeader));
                    }
                }
            }
            Inbox::Peer(Report::SnapshotSent { to, delivered }) => {
                let status = if delivered { SnapshotStatus::Finish } else { SnapshotStatus::Failure };
                self.node.report_snapshot(to, status);
            }
            Inbox::Stop => {}
        }
    }

    /// Whether a leader is known and, on a follower, was heard from lately and can be reached.
    fn leader_heard(&self) -> bool {
        let raft = &self.node.raft;
        raft.leader_id != raft::INVALID_ID
            && (raft.state == StateRole::Leader
                || (raft.election_elapsed <= LEADER_SILENT_TICKS
                    && !self.unreachable.contains(&raft.leader_id)))
    }

    fn change_members(&mut self, change: MemberChange, reply: Reply<()>) {
        if self.node.raft.state != StateRole::Leader {
            return reply(Err(Refusal::Invalid(format!(
                "this member does not lead the group; ask the leader (member {})",
                self.node.raft.leader_id
            ))));
        }
        let mut cc = ConfChange::default();
        let id = self.next_id;
        self.next_id += 1;
        let mut ctx = context(self.config.id, id);
        match &change {
            MemberChange::Add(member, url) => {
                if self.conf.voters.contains(member) {
                    return reply(Err(Refusal::Invalid(format!("member {member} is already in the group"))));
                }
                if !super::args::is_member_url(url) {
                    return reply(Err(Refusal::Invalid(
                        "a member's URL is http://HOST:PORT or https://HOST:PORT".into(),
                    )));
                }
                cc.set_change_type(ConfChangeType::AddNode);
                cc.node_id = *member;
                ctx.extend_from_slice(url.as_bytes());
            }
            MemberChange::Remove(member) => {
                if !self.conf.voters.contains(member) {
                    return reply(Err(Refusal::Invalid(format!("member {member} is not in the group"))));
                }
                if self.conf.voters.len() == 1 {
                    return reply(Err(Refusal::Invalid("the last member of a group cannot leave it".into())));
                }
                cc.set_change_type(ConfChangeType::RemoveNode);
                cc.node_id = *member;
            }
        }
        match self.node.propose_conf_change(ctx, cc) {
            Ok(()) => {
                self.waiting.insert(id, Waiting::Change(reply, Instant::now()));
            }
            // raft-rs takes one change at a time.
            Err(e) => reply(Err(Refusal::Invalid(format!("not proposed: {e} (one change at a time)")))),
        }
    }

    /// On the leader: proposes the removal of every value that expired by now, once, for every member:
    /// a delete of exactly that version, judged just before its expiry (when it was still live), so it
    /// removes the value on every member or, if the key was written since, nothing anywhere.
    fn expire_due(&mut self) {
        if self.node.raft.state != StateRole::Leader || self.failed.is_some() {
            return;
        }
        for (key, meta) in self.engine.take_expired(otkv_engine::now_ms(), EXPIRE_PER_TICK) {
            let command = Command {
                op: command::Op::Delete,
                key,
                cond: otkv_engine::Condition::Version(meta.version),
                now_ms: meta.expires_ms.saturating_sub(1),
            };
            // Request 0: nobody waits for it. If it is lost with a change of leader, the value stays
            // unreadable (expired) until it is written again.
            if self.node.propose(context(self.config.id, 0), command.encode()).is_err() {
                return;
            }
        }
    }

    /// One read index per round for all the reads that arrived in it.
    fn ask_read_index(&mut self) {
        if self.reads.is_empty() {
            return;
        }
        if !self.leader_heard() {
            for reply in self.reads.drain(..) {
                reply(Err(Refusal::NoLeader));
            }
            return;
        }
        let raft = &self.node.raft;
        // A new leader answers read indexes only once it has committed an entry of its term.
        if raft.state == StateRole::Leader && !raft.commit_to_current_term() {
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.node.read_index(id.to_le_bytes().to_vec());
        self.reads_asked.insert(id, (std::mem::take(&mut self.reads), Instant::now()));
    }

    fn on_ready(&mut self) {
        let mut ready = self.node.ready();
        if !ready.messages().is_empty() {
            self.transport.send(ready.take_messages());
        }
        if !ready.snapshot().is_empty() {
            let snap = ready.snapshot().clone();
            self.install_snapshot(snap);
        }
        for rs in ready.take_read_states() {
            let id = rs.request_ctx.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
            if let Some((replies, _)) = id.and_then(|id| self.reads_asked.remove(&id)) {
                self.reads_ready.push((rs.index, replies));
            }
        }
        let committed = ready.take_committed_entries();
        self.apply(committed);
        let store = self.node.mut_store();
        let mut persisted = store.append(ready.entries());
        if let Some(hard) = ready.hs() {
            persisted = persisted.and_then(|()| store.set_hard_state(hard));
        }
        persisted = persisted.and_then(|()| store.flush(self.config.durable));
        if let Err(e) = persisted {
            // A log that cannot be written cannot promise anything: stop answering, keep the data.
            self.fail(format!("the Raft log cannot be written: {e}"));
            return;
        }
        if !ready.persisted_messages().is_empty() {
            self.transport.send(ready.take_persisted_messages());
        }
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.node.mut_store().set_commit(commit);
        }
        self.transport.send(light.take_messages());
        let committed = light.take_committed_entries();
        self.apply(committed);
        self.node.advance_apply();
        self.release_reads();
        self.maybe_snapshot();
    }

    fn install_snapshot(&mut self, snap: Snapshot) {
        let index = snap.get_metadata().index;
        match state_dump::load(&self.engine, snap.get_data()) {
            Ok(members) => {
                self.conf = snap.get_metadata().get_conf_state().clone();
                self.config.members = members;
                self.transport.set_members(&self.config.members);
                self.applied = index;
                tracing::info!(index, keys = self.engine.len(), "installed a snapshot from the leader");
            }
            Err(e) => return self.fail(format!("a snapshot from the leader cannot be loaded: {e}")),
        }
        if let Err(e) = self.node.mut_store().apply_snapshot(snap) {
            self.fail(format!("a snapshot cannot be written: {e}"));
        }
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            if self.failed.is_some() {
                return;
            }
            let mine = context_of(&entry.context).filter(|(member, _)| *member == self.config.id);
            match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => {}
                EntryType::EntryNormal => {
                    let Some(command) = Command::decode(&entry.data) else {
                        return self.fail(format!("entry {} is not a command", entry.index));
                    };
                    let applied = self.engine.batch(|b| command::apply(b, &command, entry.index));
                    let applied = match applied {
                        Ok(a) => a,
                        Err(e) => return self.fail(format!("the engine refused entry {}: {e}", entry.index)),
                    };
                    if let Some(Waiting::Write(reply, _)) = mine.and_then(|(_, id)| self.waiting.remove(&id))
                    {
                        reply(Ok(applied));
                    }
                }
                EntryType::EntryConfChange => {
                    let cc = match ConfChange::parse_from_bytes(&entry.data) {
                        Ok(cc) => cc,
                        Err(e) => {
                            return self
                                .fail(format!("entry {} is not a change of members: {e}", entry.index))
                        }
                    };
                    self.apply_change(&cc, entry.context.get(16..).unwrap_or_default());
                    if let Some(Waiting::Change(reply, _)) = mine.and_then(|(_, id)| self.waiting.remove(&id))
                    {
                        reply(Ok(()));
                    }
                }
                // Never proposed by OTKV (it changes one member at a time).
                EntryType::EntryConfChangeV2 => {}
            }
            self.applied = entry.index;
        }
    }

    fn apply_change(&mut self, cc: &ConfChange, url: &[u8]) {
        match self.node.apply_conf_change(cc) {
            Ok(conf) => self.conf = conf,
            Err(e) => {
                tracing::warn!(error = %e, "a change of members did not apply");
                return;
            }
        }
        match cc.get_change_type() {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                let url = String::from_utf8_lossy(url).into_owned();
                tracing::info!(member = cc.node_id, %url, "member added");
                self.config.members.insert(cc.node_id, url);
            }
            ConfChangeType::RemoveNode => {
                tracing::info!(member = cc.node_id, "member removed");
                self.config.members.remove(&cc.node_id);
                if cc.node_id == self.config.id {
                    tracing::warn!("this member was removed from its group: it serves nothing more");
                }
            }
        }
        self.transport.set_members(&self.config.members);
    }

    fn release_reads(&mut self) {
        let applied = self.applied;
        let (ready, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.reads_ready).into_iter().partition(|(i, _)| *i <= applied);
        self.reads_ready = later;
        for reply in ready.into_iter().flat_map(|(_, replies)| replies) {
            reply(Ok(()));
        }
    }

    /// Every `snapshot_every` entries: a snapshot of the engine at the applied index, and the log before
    /// it dropped.
    fn maybe_snapshot(&mut self) {
        let taken = self.node.store().snapshot_ref().get_metadata().index;
        let asked = self.node.store().take_wants_fresh() && self.applied > taken;
        if (self.applied < taken + self.config.snapshot_every && !asked) || self.failed.is_some() {
            return;
        }
        let started = Instant::now();
        let data = state_dump::dump(&self.engine, &self.config.members);
        let (applied, conf, bytes) = (self.applied, self.conf.clone(), data.len());
        if let Err(e) = self.node.mut_store().compact(applied, conf, data) {
            return self.fail(format!("a snapshot cannot be written: {e}"));
        }
        tracing::debug!(index = applied, bytes, took = ?started.elapsed(), "snapshot taken");
    }

    /// When the leader changes, writes proposed through the old one may be lost: their outcome is
    /// unknown; reads asked of it are refused (safe to retry).
    fn notice_leader(&mut self) {
        let leader = self.node.raft.leader_id;
        if leader == self.leader {
            return;
        }
        tracing::info!(leader, term = self.node.raft.term, "leader changed");
        self.leader = leader;
        let own = self.config.id;
        // A member that becomes leader keeps its own proposals: its log has them.
        if leader != own {
            for (_, waiting) in self.waiting.drain() {
                let why = "the leader changed before the write was known to be committed: it may or may not have taken effect";
                match waiting {
                    Waiting::Write(reply, _) => reply(Err(Refusal::Unknown(why))),
                    Waiting::Change(reply, _) => reply(Err(Refusal::Unknown(why))),
                }
            }
        }
        for (_, (replies, _)) in self.reads_asked.drain() {
            for reply in replies {
                reply(Err(Refusal::NoLeader));
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        let late: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, w)| match w {
                Waiting::Write(_, at) | Waiting::Change(_, at) => now.duration_since(*at) > PROPOSAL_TIMEOUT,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            let why = "the write was not committed in time: it may or may not take effect";
            match self.waiting.remove(&id) {
                Some(Waiting::Write(reply, _)) => reply(Err(Refusal::Unknown(why))),
                Some(Waiting::Change(reply, _)) => reply(Err(Refusal::Unknown(why))),
                None => {}
            }
        }
        let late: Vec<u64> = self
            .reads_asked
            .iter()
            .filter(|(_, (_, at))| now.duration_since(*at) > READ_TIMEOUT)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            for reply in self.reads_asked.remove(&id).map(|(r, _)| r).unwrap_or_default() {
                reply(Err(Refusal::NoLeader));
            }
        }
    }

    fn fail(&mut self, why: String) {
        tracing::error!(%why, "this member stops serving");
        self.failed = Some(why.clone());
        self.refuse_all(|| Refusal::Failed(why.clone()));
    }

    fn refuse_all(&mut self, why: impl Fn() -> Refusal) {
        for (_, waiting) in self.waiting.drain() {
            match waiting {
                Waiting::Write(reply, _) => reply(Err(why())),
                Waiting::Change(reply, _) => reply(Err(why())),
            }
        }
        let asked = self.reads_asked.drain().flat_map(|(_, (r, _))| r);
        let ready = self.reads_ready.drain(..).flat_map(|(_, r)| r);
        for reply in self.reads.drain(..).chain(asked).chain(ready).collect::<Vec<_>>() {
            reply(Err(why()));
        }
    }

    fn publish(&self) {
        let raft = &self.node.raft;
        let last = raft.raft_log.last_index();
        let leading = raft.state == StateRole::Leader;
        let lag = if leading {
            raft.prs()
                .iter()
                .filter(|(id, _)| **id != self.config.id)
                .map(|(id, pr)| Lag {
                    member: *id,
                    matched: pr.matched,
                    behind: last.saturating_sub(pr.matched),
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut s = lock(&self.status);
        s.role = match raft.state {
            StateRole::Leader => "leader",
            StateRole::Follower => "follower",
            StateRole::Candidate | StateRole::PreCandidate => "candidate",
        };
        s.term = raft.term;
        s.leader = raft.leader_id;
        s.commit = raft.raft_log.committed;
        s.applied = self.applied;
        s.last_index = last;
        s.snapshot_index = self.node.store().snapshot_ref().get_metadata().index;
        s.voters.clone_from(&self.conf.voters);
        s.members.clone_from(&self.config.members);
        s.lag = lag;
        s.failed.clone_from(&self.failed);
    }
}
