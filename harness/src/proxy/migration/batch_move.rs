//! `POST /v1/reshard/move`: many keys moved with three pipelined exchanges instead of three round trips
//! each.
//!
//! A key's move is three requests ([`crate::reshard::move_key`]). Made one key at a time, each is a round
//! trip, and on loopback each costs the proxy a send and a node a wake-up: at 3,000 keys a second that
//! doubled the proxy's CPU and made every client's p99 five times what it was. A batch makes the same
//! requests with the same conditions, phase by phase, each phase's requests to a node pipelined in one
//! write ([`WINDOW`] keys at a time):
//! 1. `GET` each key from its previous owner;
//! 2. `PUT` each one found to its new owner with `If-None-Match: *`, with the time it has left to live;
//! 3. `DELETE` each copied one from the previous owner with `If-Match` its version of step 1.
//!
//! A key whose delete fails (it changed or went on its previous owner meanwhile, which only a writer
//! that bypasses this proxy can do) has its copy taken back and is moved again on its own, as is a key
//! another request holds a claim on ([`super::claims`]); every key of the window is claimed throughout.

use std::sync::Arc;

use otkv_adapter_http::front::{percent, HttpError, Limits};

use super::claims::Claim;
use super::moving::{call, move_one, request};
use crate::cost::HttpAnswer;
use crate::proxy::topology::Topology;
use crate::proxy::upstream::{Upstream, MAX_GROUP_BYTES};
use crate::reshard::{ttl_left, Outcome, STAYS};
use crate::response_head::AnswerRules;

/// Keys moved together: bounds the values a window holds at once.
pub const WINDOW: usize = 16;

/// One key of a window.
struct Job<'t> {
    key: &'t [u8],
    path: String,
    from: &'t Arc<Upstream>,
    to: &'t Arc<Upstream>,
    _claim: Claim<'t>,
    outcome: Option<Outcome>,
}

/// A key found on its previous owner (step 1): which job, the answer, its `ETag`, and `?ttl=` for the
/// time it has left.
struct Found {
    job: usize,
    got: HttpAnswer,
    etag: String,
    ttl: String,
}

/// Moves each of `keys` whose owner changed and that is not settled; returns each one's outcome: `moved`,
/// `already there`, `gone`, `conflict` (changed while moving, still where its writer keeps it) or
/// `stays` (nothing to move: its owner did not change, or it was moved already). A node that fails is a
/// 502; what was done is kept (every step is conditional, so doing it again is safe).
pub(super) fn move_batch(
    t: &Topology,
    keys: &[Vec<u8>],
    max_body: usize,
) -> Result<Vec<&'static str>, HttpError> {
    let mut said = vec![STAYS; keys.len()];
    for (window, first) in keys.chunks(WINDOW).zip((0..).step_by(WINDOW)) {
        let (mut jobs, mut at, mut alone) = (Vec::new(), Vec::new(), Vec::new());
        for (i, key) in window.iter().enumerate() {
            let node = t.current.router.route(key);
            let Some(from) = t.moved_from(key, node) else { continue };
            let to = &t.current.upstreams[node];
            match t.claims.try_claim(key) {
                // Settled while another held it.
                Some(_) if t.claims.is_settled(key) => {}
                Some(claim) => {
                    let path = format!("/v1/kv/{}", percent::encode_segment(key));
                    jobs.push(Job { key, path, from, to, _claim: claim, outcome: None });
                    at.push(first + i);
                }
                None => alone.push((first + i, from, to)),
            }
        }
        move_window(&mut jobs, max_body)?;
        for (job, i) in jobs.iter().zip(at) {
            let outcome = job.outcome.unwrap_or(Outcome::Conflict);
            if outcome != Outcome::Conflict {
                t.claims.settle(job.key);
            }
            said[i] = word(Some(outcome));
        }
        drop(jobs);
        for (i, from, to) in alone {
            let key = &keys[i];
            said[i] = word(t.move_once(key, || move_one(from, to, key, max_body))?);
        }
    }
    Ok(said)
}

/// The pause of the background mover before each batch: it gathers a whole window of keys (a batch of
/// one key costs nearly what a batch of [`WINDOW`] costs) and moves at most [`WINDOW`] keys per pause
/// (about 300 a second). Moves are not free for clients: measured with a GET load through the proxy,
/// moving 800 keys a second in the background took its p99 from 0.20 to 0.39 ms, while the reads of
/// keys not moved yet, without background moves, cost 0.21 to 0.28 ms. A read does not need its key
/// moved to be answered in one request ([`super::moving::read_moving`]), so nothing waits for these
/// moves; the mover does the rest, at the pace its operator chose (and meanwhile these stand aside,
/// [`Topology::mover_at_work`]).
const LATER_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// Queues `key` to move in the background, and starts the coroutine that drains the queue if none runs
/// (it moves the queued keys in batches, as the mover's requests do, paced by [`LATER_PAUSE`]).
pub(super) fn move_later(topology: &Arc<Topology>, key: &[u8], max_body: usize) {
    if !topology.queue_later(key) {
        return;
    }
    let topology = Arc::clone(topology);
    otkv_adapter_http::front::spawn_coroutine(move || loop {
        may::coroutine::sleep(LATER_PAUSE);
        let keys = topology.next_later(WINDOW);
        if keys.is_empty() {
            break;
        }
        if let Err(e) = move_batch(&topology, &keys, max_body) {
            // Left where they are: reads keep asking the previous owner, and the mover moves them.
            tracing::warn!(error = %e, "background move failed");
        }
    });
}

/// The keys of a `POST /v1/reshard/move` body: one percent-encoded key a line.
pub(super) fn keys_of(body: &[u8], limits: &Limits) -> Result<Vec<Vec<u8>>, HttpError> {
    let text = std::str::from_utf8(body).map_err(|_| HttpError::BadRequest("keys must be UTF-8".into()))?;
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let key = percent::decode(line, false)
                .ok_or_else(|| HttpError::BadRequest(format!("invalid percent-encoding in {line:?}")))?;
            if key.len() > limits.max_key_bytes {
                return Err(HttpError::KeyTooLong { len: key.len(), max: limits.max_key_bytes });
            }
            Ok(key.into_owned())
        })
        .collect()
}

/// How an outcome is said (`None`: settled already).
fn word(outcome: Option<Outcome>) -> &'static str {
    outcome.map_or(STAYS, Outcome::word)
}

/// The three steps for claimed `jobs`; sets each one's outcome.
fn move_window(jobs: &mut [Job<'_>], max_body: usize) -> Result<(), HttpError> {
    // 1. Its value, from the previous owner.
    let err = |j: &Job<'_>, e: String| gateway(j, &e);
    let got = exchange(jobs, |j| j.from, |j, up| request(up, "GET", &j.path, &[], b""), err, max_body)?;
    let mut found = Vec::new();
    for (i, got) in got.into_iter().enumerate() {
        let etag = got.header("etag").map(str::to_owned);
        match (got.status, etag, ttl_left(&got)) {
            (404, ..) | (200, Some(_), Some(0)) => jobs[i].outcome = Some(Outcome::Gone),
            (200, Some(etag), ttl) => {
                let ttl = ttl.map(|s| format!("?ttl={s}")).unwrap_or_default();
                found.push(Found { job: i, got, etag, ttl });
            }
            (status, ..) => return Err(failed(&jobs[i], "GET", status, jobs[i].from)),
        }
    }
    // 2. A copy on the new owner, unless it has a value of its own.
    let js = &*jobs;
    let put = exchange(
        &found,
        |f| js[f.job].to,
        |f, up| {
            request(
                up,
                "PUT",
                &format!("{}{}", js[f.job].path, f.ttl),
                &["If-None-Match: *".into()],
                &f.got.body,
            )
        },
        |f, e| gateway(&js[f.job], &e),
        max_body,
    )?;
    let mut created = Vec::with_capacity(found.len());
    for (f, put) in found.iter().zip(put) {
        let ours = match put.status {
            201 => Some(put.header("etag").unwrap_or_default().to_owned()),
            412 => None,
            status => return Err(failed(&js[f.job], "PUT", status, js[f.job].to)),
        };
        created.push(ours);
    }
    // 3. The old copy gone, if unchanged since step 1.
    let del = exchange(
        &found,
        |f| js[f.job].from,
        |f, up| request(up, "DELETE", &js[f.job].path, &[format!("If-Match: {}", f.etag)], b""),
        |f, e| gateway(&js[f.job], &e),
        max_body,
    )?;
    for ((f, del), ours) in found.iter().zip(del).zip(created) {
        let job = &mut jobs[f.job];
        job.outcome = Some(match (del.status, ours) {
            (204, Some(_)) => Outcome::Moved,
            (204, None) => Outcome::AlreadyThere,
            (404 | 412, ours) => {
                // Changed or gone meanwhile: the copy taken back (only if still ours), then the key
                // moved again on its own.
                if let Some(ours) = ours {
                    let undo =
                        call(job.to, "DELETE", &job.path, &[format!("If-Match: {ours}")], b"", max_body)
                            .map_err(|e| gateway(job, &e))?;
                    if !matches!(undo.status, 204 | 404 | 412) {
                        return Err(failed(job, "DELETE", undo.status, job.to));
                    }
                }
                move_one(job.from, job.to, job.key, max_body)?
            }
            (status, _) => return Err(failed(job, "DELETE", status, job.from)),
        });
    }
    Ok(())
}

/// Sends each item's request (`make`, for the node `node` picks) and returns the answers in item order:
/// the requests to one node pipelined, in groups of at most [`MAX_GROUP_BYTES`] (one larger request
/// alone).
fn exchange<'u, T>(
    items: &[T],
    node: impl Fn(&T) -> &'u Arc<Upstream>,
    make: impl Fn(&T, &Upstream) -> Vec<u8>,
    err: impl Fn(&T, String) -> HttpError,
    max_body: usize,
) -> Result<Vec<HttpAnswer>, HttpError> {
    // The nodes of this step, and which items go to each.
    let mut nodes: Vec<(&Arc<Upstream>, Vec<usize>)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let up = node(item);
        match nodes.iter_mut().find(|(u, _)| Arc::ptr_eq(u, up)) {
            Some((_, ids)) => ids.push(i),
            None => nodes.push((up, vec![i])),
        }
    }
    let mut answers: Vec<Option<HttpAnswer>> = items.iter().map(|_| None).collect();
    for (up, ids) in &nodes {
        let mut requests = ids.iter().map(|&i| make(&items[i], up)).peekable();
        let mut start = 0;
        while start < ids.len() {
            let (mut bytes, mut end) = (Vec::new(), start);
            while let Some(one) =
                requests.next_if(|one| end == start || bytes.len() + one.len() <= MAX_GROUP_BYTES)
            {
                bytes.extend_from_slice(&one);
                end += 1;
            }
            let rules = vec![AnswerRules::body_up_to(max_body); end - start];
            let mut group = up.send(&bytes, rules.len(), Vec::new());
            group.read_answers(&rules, &bytes);
            for &i in &ids[start..end] {
                let answer = group.next_answer().map_err(|e| err(&items[i], up.error(e).to_string()))?;
                let parsed = HttpAnswer::parse(answer.raw)
                    .map_err(|e| err(&items[i], format!("{}: {e}", up.who())))?;
                answers[i] = Some(parsed);
            }
            start = end;
        }
    }
    Ok(answers.into_iter().flatten().collect())
}

fn gateway(job: &Job<'_>, e: &str) -> HttpError {
    HttpError::BadGateway(format!("moving {} from {} to {}: {e}", job.path, job.from.who(), job.to.who()))
}

fn failed(job: &Job<'_>, method: &str, status: u16, up: &Upstream) -> HttpError {
    gateway(job, &format!("{method} {} on {}: {status}", job.path, up.who()))
}
