//! One load connection's life ([`Worker::run`]): connect, then batch after batch (fill it, send it with
//! one write, read and check every answer), reconnecting after a failure, until the run stops.
//!
//! Open loop (`--rate`): each batch is one request, sent at its slot on a fixed schedule; its latency
//! counts from the slot, not from the send. A read-modify-write (`--cas-share`) is a batch of its own,
//! since its write needs its read's answer.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::conn::{Cas, Conn};
use super::shared::{record, ConnStats, Shared, Source};
use crate::client::DEFAULT_MAX_BODY;
use crate::run_outcome::{OpKind, Tally};
use crate::workload::{check_value, key_bytes, write_value, Expect, WorkloadKind};

/// One request in flight.
struct Pending {
    key: u64,
    kind: OpKind,
    expect: Expect,
}

/// How filling a batch ended.
enum Filled {
    /// Requests are queued: send them.
    Batch,
    /// A read-modify-write ran on its own: start the next batch.
    ReadModifyWrite,
    /// Nothing is left to send (`--ops` used up, or a cursor ran out).
    Nothing,
}

/// The largest answer body a load connection accepts: its values, or an error's text.
fn answer_cap(value_size: usize) -> usize {
    value_size.max(DEFAULT_MAX_BODY)
}

/// One load connection.
pub(super) struct Worker<'a> {
    shared: &'a Shared<'a>,
    stats: &'a ConnStats,
    /// Written into every value, so a read can tell whose write it sees.
    id: u32,
    source: Source,
    /// Open loop: the interval between this connection's sends, and its next slot.
    schedule: Option<(Duration, Instant)>,
    rng: fastrand::Rng,
    /// Writes so far (each value carries its number).
    seq: u64,
    pending: Vec<Pending>,
    conn: Option<Conn>,
    /// A read-modify-write drawn while a batch was being filled: it goes first in the next one.
    carry: Option<u64>,
}

impl<'a> Worker<'a> {
    /// Connection `id` of the run, sending to `stats.node`; `first_send`: its first slot (open loop).
    pub(super) fn new(
        shared: &'a Shared<'a>,
        stats: &'a ConnStats,
        id: u32,
        source: Source,
        first_send: Option<(Duration, Instant)>,
    ) -> Self {
        Worker {
            shared,
            stats,
            id,
            source,
            schedule: first_send,
            rng: fastrand::Rng::with_seed(0x00C0_FFEE ^ u64::from(id) << 20),
            seq: 0,
            pending: Vec::with_capacity(shared.spec.pipeline.max(2)),
            conn: None,
            carry: None,
        }
    }

    /// Runs until the run stops or there is nothing left to send.
    pub(super) fn run(mut self) {
        while !self.shared.stop.load(Relaxed) {
            if !self.connected() {
                continue;
            }
            let intended = self.wait_for_slot();
            // The batch belongs to the phase it is sent in.
            let warm = self.shared.warming.load(Relaxed);
            match self.fill(warm, intended) {
                Filled::Batch => {
                    self.send_and_check(warm, intended);
                    if self.shared.spec.reconnect {
                        self.conn = None;
                    }
                }
                Filled::ReadModifyWrite => {}
                Filled::Nothing => break,
            }
        }
        self.shared.done.fetch_add(1, Relaxed);
    }

    /// Whether there is a connection, opening one if not (a failure is counted, then a pause).
    fn connected(&mut self) -> bool {
        if self.conn.is_some() {
            return true;
        }
        let spec = self.shared.spec;
        let target = &self.shared.targets[self.stats.node];
        match Conn::connect(target, spec.timeout, answer_cap(spec.value_size)) {
            Ok(c) => {
                self.conn = Some(c);
                true
            }
            Err(kind) => {
                self.shared.tally().failure(kind, 1);
                may::coroutine::sleep(Duration::from_millis(100));
                false
            }
        }
    }

    /// Open loop: waits for this request's slot and returns it (latency counts from it).
    fn wait_for_slot(&mut self) -> Option<Instant> {
        let (interval, at) = self.schedule?;
        let now = Instant::now();
        if at > now {
            may::coroutine::sleep(at - now);
        }
        self.schedule = Some((interval, at + interval));
        Some(at)
    }

    fn tally(&self, warm: bool) -> &'a Tally {
        &self.shared.tallies[usize::from(!warm)]
    }

    /// Takes one operation from the `--ops` budget (two for a seed's put and read-back); false when it is
    /// used up. The warm-up does not count.
    fn take_budget(&self, warm: bool, n: i64) -> bool {
        match (&self.shared.budget, warm) {
            (Some(budget), false) => {
                if budget.fetch_sub(n, Relaxed) <= 0 {
                    // Put it back, so that a conflict's refund is not lost below zero.
                    budget.fetch_add(n, Relaxed);
                    return false;
                }
                true
            }
            _ => true,
        }
    }

    /// Queues the batch's requests on the connection (or runs one read-modify-write by itself).
    fn fill(&mut self, warm: bool, intended: Option<Instant>) -> Filled {
        let spec = self.shared.spec;
        self.pending.clear();
        let want = if self.schedule.is_some() { 1 } else { spec.pipeline.max(1) };
        let seed =
            spec.workload == WorkloadKind::Seed && matches!(self.source, Source::Cursor { wrap: true, .. });
        while self.pending.len() < want {
            let (key, put, cas) = if let Some(key) = self.carry.take() {
                (key, true, true)
            } else {
                if !self.take_budget(warm, if seed { 2 } else { 1 }) {
                    break;
                }
                let Some((key, put)) = self.next_op() else { break };
                let cas = put && !seed && spec.cas_share > 0.0 && self.rng.f64() < spec.cas_share;
                (key, put, cas)
            };
            if cas && !self.pending.is_empty() {
                self.carry = Some(key);
                break;
            }
            if cas {
                self.read_modify_write(key, warm, intended);
                return Filled::ReadModifyWrite;
            }
            self.queue(key, put, seed);
        }
        if self.pending.is_empty() {
            Filled::Nothing
        } else {
            Filled::Batch
        }
    }

    /// Queues a put (and with `seed`, its read-back, expecting exactly this value) or a get.
    fn queue(&mut self, key: u64, put: bool, seed: bool) {
        let (value_size, ttl) = (self.shared.spec.value_size, self.shared.spec.ttl_secs);
        let Some(c) = self.conn.as_mut() else { return };
        let kb = key_bytes(key);
        if put {
            self.seq += 1;
            let (id, seq) = (self.id, self.seq);
            c.push_put(&kb, value_size, ttl, |out| write_value(out, key, id, seq, value_size));
            self.pending.push(Pending { key, kind: OpKind::Write, expect: Expect::AnyVersion });
            if seed {
                c.push_get(&kb);
                self.pending.push(Pending {
                    key,
                    kind: OpKind::Read,
                    expect: Expect::Exact { conn: id, seq },
                });
            }
        } else {
            c.push_get(&kb);
            self.pending.push(Pending { key, kind: OpKind::Read, expect: Expect::AnyVersion });
        }
    }

    /// A read-modify-write: GET (its version), then PUT with `If-Match`; its latency spans both.
    fn read_modify_write(&mut self, key: u64, warm: bool, intended: Option<Instant>) {
        let spec = self.shared.spec;
        let tally = self.tally(warm);
        let Some(c) = self.conn.as_mut() else { return };
        let sent_at = intended.unwrap_or_else(Instant::now);
        self.seq += 1;
        let (id, seq) = (self.id, self.seq);
        let outcome = c.cas(
            &key_bytes(key),
            |v| check_value(v, key, Expect::AnyVersion, spec.value_size),
            spec.value_size,
            spec.ttl_secs,
            |out| write_value(out, key, id, seq, spec.value_size),
        );
        match outcome {
            Ok(Ok(Cas::Applied)) => record(self.stats, warm, OpKind::Cas, sent_at),
            Ok(Ok(Cas::Conflict)) => {
                tally.conflict();
                // A lost race is retried, as a client would: it does not use up `--ops`.
                if let (Some(budget), false) = (&self.shared.budget, warm) {
                    budget.fetch_add(1, Relaxed);
                }
            }
            Ok(Ok(Cas::WrongValue)) => tally.wrong_value(),
            Ok(Err(refusal)) => tally.refusal(refusal),
            Err(kind) => {
                tally.failure(kind, 1);
                self.conn = None;
            }
        }
    }

    /// Sends the queued batch with one write, then reads and checks every answer in order. A failure
    /// drops the connection (the rest of the batch is lost with it, and counted).
    fn send_and_check(&mut self, warm: bool, intended: Option<Instant>) {
        let value_size = self.shared.spec.value_size;
        let tally = self.tally(warm);
        let Some(c) = self.conn.as_mut() else { return };
        let sent_at = intended.unwrap_or_else(Instant::now);
        if let Err(kind) = c.send() {
            tally.failure(kind, self.pending.len() as u64);
            self.conn = None;
            return;
        }
        for p in &self.pending {
            let value = match c.read_answer(p.kind == OpKind::Write) {
                Ok(Ok(value)) => value,
                Ok(Err(refusal)) => {
                    tally.refusal(refusal);
                    continue;
                }
                Err(kind) => {
                    tally.failure(kind, 1);
                    self.conn = None;
                    return;
                }
            };
            if p.kind == OpKind::Read && !check_value(value, p.key, p.expect, value_size) {
                tally.wrong_value();
                continue;
            }
            record(self.stats, warm, p.kind, sent_at);
        }
    }

    /// The next operation: `(key index, is_put)`, or `None` when a non-wrapping cursor is exhausted.
    fn next_op(&mut self) -> Option<(u64, bool)> {
        let spec = self.shared.spec;
        match &self.source {
            Source::Cursor { keys, next, wrap } => {
                if keys.is_empty() {
                    return None;
                }
                let i = next.fetch_add(1, Relaxed);
                if i >= keys.len() && !wrap {
                    return None;
                }
                Some((keys[i % keys.len()], true))
            }
            Source::Random => {
                let put = self.rng.f64() >= spec.workload.read_fraction();
                // Rejection sampling keeps the distribution, conditioned on this node; bounded in case a
                // node owns (almost) no keys.
                for _ in 0..10_000 {
                    let key = spec.chooser.next(&mut self.rng);
                    if self.shared.router.route(&key_bytes(key)) == self.stats.node {
                        return Some((key, put));
                    }
                }
                None
            }
        }
    }
}
