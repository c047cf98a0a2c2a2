//! `harness reshard`: moves every key whose owner changes when a cluster's node set changes, from the
//! node that holds it to the node that owns it under the new set, so no acknowledged key is stranded.
//!
//! Routing is a pure function of a key and the node names (`node-0`, `node-1`, ... in `--node` order), so
//! the owners before and after are known without asking anyone. The mover pages through each old node's
//! keys with the listing cursor (`?cursor=`, a page costing the node about a page) and moves each key whose new owner is another node, with the
//! nodes' own conditional writes, so nothing newer is ever overwritten and nothing is deleted that
//! changed meanwhile:
//! 1. `GET` it from the old node (its value, `ETag` and `OTKV-Expires`);
//! 2. `PUT` it to the new owner with `If-None-Match: *` (only if the new owner has no value of its own),
//!    with the time it has left to live;
//! 3. `DELETE` it from the old node with `If-Match` (only if unchanged since step 1); if that fails, the
//!    key changed or went meanwhile: the copy is taken back (`DELETE If-Match` its own version) and the
//!    key is looked at again.
//!
//! Progress is written to a state file after every page, so a mover that is stopped (Ctrl-C, a crash)
//! and run again with the same node sets goes on where it was; moving a key twice is harmless. The file
//! goes once the change is complete, so the next change starts afresh. A node restarted meanwhile may
//! list in another order and refuse its cursor: its listing then starts over. It moves
//! data with the cluster at rest: a key written through the new routing while its old copy waits to be
//! moved keeps the newer value (step 2), but reads through the new routing miss keys not moved yet.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use otkv_adapter_http::front::percent;

use crate::cost::{http_call, HttpAnswer};
use crate::nodes;
use crate::router::RoutingArgs;
use crate::secure::ClientSecurityArgs;
use crate::target::Target;

/// `harness reshard`: move keys after a change of node set.
#[derive(Debug, Args)]
pub struct ReshardArgs {
    /// A `harness proxy` in the middle of a move (its `--nodes-file` has `previous` lines): the sets are
    /// its previous and current ones, and when every key is moved it is told to drop the previous set.
    /// Clients keep using the proxy meanwhile.
    #[arg(long, value_name = "URL", conflicts_with_all = ["from", "to"], required_unless_present = "from")]
    pub proxy: Option<String>,
    /// A node of the set before the change, in its order (repeatable; named node-0, node-1, ... as
    /// `harness run` and `harness proxy` name them).
    #[arg(long = "from", value_name = "URL", requires = "to")]
    pub from: Vec<String>,
    /// A node of the set after the change, in its order (repeatable). A node in both sets keeps the keys
    /// it still owns.
    #[arg(long = "to", value_name = "URL", requires = "from")]
    pub to: Vec<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub routing: RoutingArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub security: ClientSecurityArgs,
    /// Where progress is kept; a mover run again with the same sets resumes from it. Removed once the
    /// change is complete.
    #[arg(long, default_value = "reshard-state.json")]
    pub state: PathBuf,
    /// At most this many keys moved per second (keys whose owner changed; the ones that stay cost only
    /// their share of a listing page). Unpaced, the mover goes as fast as the nodes allow, and clients'
    /// tail latency pays for it: benches/results (`reshard`) shows what each pace cost.
    #[arg(long, value_name = "KEYS_PER_SEC")]
    pub rate: Option<f64>,
    /// Keys per listing page. A page costs a node about its keys (it lists on its listing threads, off
    /// the worker that answers requests), so small pages keep each burst short and cost no more in all.
    #[arg(long, default_value_t = 1_000)]
    pub page: usize,
}

/// Keys the mover asks the proxy to move in one request: enough that the proxy's batches are full, few
/// enough that `--rate` paces them evenly (and well within the request's 64 KiB body).
const TOUCH_CHUNK: usize = 32;

/// ... and at most this many bytes of keys (the route takes a body of up to 64 KiB).
const TOUCH_BYTES: usize = 60 * 1024;

/// What the mover did, and where it is.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Progress {
    /// The old set's URLs.
    pub from: Vec<String>,
    /// The new set's URLs.
    pub to: Vec<String>,
    /// Per old node: the cursor of its next page, or `None` before the first.
    pub cursor: Vec<Option<String>>,
    /// Per old node: every key looked at.
    pub done: Vec<bool>,
    /// Keys copied to their new owner and removed from the old node.
    pub moved: u64,
    /// Keys whose new owner already had a value (written through the new routing): the old copy removed.
    pub already_there: u64,
    /// Keys that changed or went while being moved, looked at again.
    pub conflicts: u64,
    /// Keys that expired or were deleted before they could be moved.
    pub gone: u64,
    /// Keys looked at that stay where they are.
    pub stayed: u64,
    /// Keys the proxy had moved already, on a client's request.
    pub moved_by_proxy: u64,
}

impl Progress {
    fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Moved => self.moved += 1,
            Outcome::AlreadyThere => self.already_there += 1,
            Outcome::Gone => self.gone += 1,
            // Still changing after a few looks: counted in `conflicts`; the key stays where its writer
            // keeps it, and a later run looks again.
            Outcome::Conflict => {}
        }
    }
}

/// How one key's move ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Copied to its new owner and removed from the old node.
    Moved,
    /// The new owner had a value of its own: the old copy removed.
    AlreadyThere,
    /// Expired or deleted before it could be moved (or nothing to move).
    Gone,
    /// Changed while being moved: look again.
    Conflict,
}

/// What `POST /v1/reshard/move` says of a key it had nothing to do for (its owner did not change, or it
/// was moved already).
pub const STAYS: &str = "stays";

impl Outcome {
    const ALL: [Outcome; 4] = [Outcome::Moved, Outcome::AlreadyThere, Outcome::Gone, Outcome::Conflict];

    /// How `POST /v1/reshard/move` says it.
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Moved => "moved",
            Outcome::AlreadyThere => "already there",
            Outcome::Gone => "gone",
            Outcome::Conflict => "conflict",
        }
    }

    /// The outcome `word` says ([`Outcome::word`]; `None` for [`STAYS`]); an error for a word the route
    /// does not say.
    fn from_word(word: &str) -> Result<Option<Outcome>, String> {
        if word == STAYS {
            return Ok(None);
        }
        match Outcome::ALL.into_iter().find(|o| o.word() == word) {
            Some(outcome) => Ok(Some(outcome)),
            None => Err(format!("no outcome {word:?}")),
        }
    }
}

fn check(a: &HttpAnswer, what: &str, ok: &[u16]) -> Result<u16, String> {
    if ok.contains(&a.status) {
        Ok(a.status)
    } else {
        Err(format!("{what}: {} {}", a.status, String::from_utf8_lossy(&a.body).trim()))
    }
}

/// Seconds left to live, from `OTKV-Expires` (`Some(0)`: already expired).
pub(crate) fn ttl_left(a: &HttpAnswer) -> Option<u64> {
    let at = httpdate::parse_http_date(a.header("otkv-expires")?).ok()?;
    let left = at.duration_since(SystemTime::now()).unwrap_or_default();
    // Whole seconds, rounded up: a key never expires earlier than it would have.
    Some(left.as_secs() + u64::from(left.subsec_nanos() > 0))
}

/// Which node of a move a request goes to.
#[derive(Debug, Clone, Copy)]
pub enum Side {
    /// The node that holds the key.
    From,
    /// Its new owner.
    To,
}

/// One request of a move: to which side, method, path, extra header lines, body.
pub type Call<'a> = dyn FnMut(Side, &str, &str, &[String], &[u8]) -> Result<HttpAnswer, String> + 'a;

/// Moves the key at `path` (`/v1/kv/KEY`, as listed) from the node that holds it to its new owner, with
/// `call` doing each request: the one move both the mover and the proxy make.
pub fn move_key(call: &mut Call<'_>, path: &str) -> Result<Outcome, String> {
    let got = call(Side::From, "GET", path, &[], b"")?;
    if check(&got, &format!("GET {path}"), &[200, 404])? == 404 {
        return Ok(Outcome::Gone);
    }
    let etag = got.header("etag").ok_or_else(|| format!("{path} came without an ETag"))?.to_string();
    let ttl = match ttl_left(&got) {
        Some(0) => return Ok(Outcome::Gone),
        Some(s) => format!("?ttl={s}"),
        None => String::new(),
    };
    let put = call(Side::To, "PUT", &format!("{path}{ttl}"), &["If-None-Match: *".into()], &got.body)?;
    let created = check(&put, &format!("PUT {path}"), &[201, 412])? == 201;
    let del = call(Side::From, "DELETE", path, &[format!("If-Match: {etag}")], b"")?;
    if check(&del, &format!("DELETE {path}"), &[204, 404, 412])? == 204 {
        return Ok(if created { Outcome::Moved } else { Outcome::AlreadyThere });
    }
    // The old copy changed or went meanwhile: take our copy back (only if it is still ours).
    if created {
        let ours = put.header("etag").unwrap_or_default().to_string();
        let undo = call(Side::To, "DELETE", path, &[format!("If-Match: {ours}")], b"")?;
        check(&undo, &format!("DELETE {path}"), &[204, 404, 412])?;
    }
    Ok(if del.status == 404 { Outcome::Gone } else { Outcome::Conflict })
}

/// [`move_key`] until it is not a conflict (at most a few times: a key written over and over keeps its
/// newest value wherever it is, and the next look moves it).
pub fn move_key_settled(call: &mut Call<'_>, path: &str) -> Result<(Outcome, u64), String> {
    let mut conflicts = 0;
    loop {
        match move_key(call, path)? {
            Outcome::Conflict if conflicts < 3 => conflicts += 1,
            other => return Ok((other, conflicts)),
        }
    }
}

fn load(path: &std::path::Path, from: &[String], to: &[String]) -> Result<Progress, String> {
    let fresh = Progress {
        from: from.to_vec(),
        to: to.to_vec(),
        cursor: vec![None; from.len()],
        done: vec![false; from.len()],
        ..Progress::default()
    };
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(fresh) };
    let saved: Progress = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if saved.done.iter().all(|d| *d) {
        // A change whose every key was looked at (its end was not recorded): nothing of it to go on with.
        return Ok(fresh);
    }
    if saved.from != fresh.from || saved.to != fresh.to {
        return Err(format!(
            "{} is the progress of another change, not finished ({:?} -> {:?}): finish that one (run it again \
             with its sets), or remove the file or give another --state",
            path.display(),
            saved.from,
            saved.to
        ));
    }
    Ok(saved)
}

/// `keys` in requests' worth: at most [`TOUCH_CHUNK`] keys and [`TOUCH_BYTES`] of lines each.
fn chunks<'k>(keys: &'k [&'k str]) -> impl Iterator<Item = &'k [&'k str]> + 'k {
    let mut rest = keys;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (mut n, mut bytes) = (0, 0);
        while n < rest.len() && n < TOUCH_CHUNK && (n == 0 || bytes + rest[n].len() < TOUCH_BYTES) {
            bytes += rest[n].len() + 1;
            n += 1;
        }
        let (chunk, after) = rest.split_at(n);
        rest = after;
        Some(chunk)
    })
}

/// Has the proxy move `keys` (percent-encoded, as listed): one `POST /v1/reshard/move` with a key a
/// line, which the proxy answers after moving them (each claimed, so no move races a client's request)
/// with how each went. Returns each one's outcome; `None` for a key the proxy had settled already (moved
/// on a client's request, or not moving).
fn touch(proxy: &Target, keys: &[&str]) -> Result<Vec<Option<Outcome>>, String> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let answer = http_call(proxy, "POST", "/v1/reshard/move", &[], keys.join("\n").as_bytes())?;
    let what = format!("moving keys through {}", proxy.url());
    check(&answer, &what, &[200])?;
    let text = String::from_utf8_lossy(&answer.body);
    let said: Vec<&str> = text.lines().collect();
    if said.len() != keys.len() {
        return Err(format!("{what}: {} outcomes for {} keys", said.len(), keys.len()));
    }
    said.iter().map(|word| Outcome::from_word(word).map_err(|e| format!("{what}: {e}"))).collect()
}

/// The previous and current node sets of the proxy at `proxy` (its `/v1/stats`).
fn sets_of(proxy: &Target) -> Result<(Vec<String>, Vec<String>), String> {
    let stats = http_call(proxy, "GET", "/v1/stats", &[], b"")?;
    check(&stats, &format!("{}/v1/stats", proxy.url()), &[200])?;
    let doc: serde_json::Value = serde_json::from_slice(&stats.body)
        .map_err(|e| format!("{}: not a proxy's stats: {e}", proxy.url()))?;
    let urls = |v: &serde_json::Value| -> Vec<String> {
        v.as_array().into_iter().flatten().filter_map(|u| u.as_str().map(str::to_owned)).collect()
    };
    let (current, previous) = (urls(&doc["topology"]["nodes"]), urls(&doc["topology"]["previous"]));
    if current.is_empty() {
        return Err(format!("{}: no node sets in its /v1/stats (is it a harness proxy?)", proxy.url()));
    }
    if previous.is_empty() {
        return Err(format!(
            "{}: no move in progress (give its --nodes-file `previous URL` lines and send it SIGHUP)",
            proxy.url()
        ));
    }
    Ok((previous, current))
}

fn save(path: &std::path::Path, p: &Progress) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let json = serde_json::to_string_pretty(p).map_err(|e| e.to_string())?;
    std::fs::write(&tmp, json)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs `harness reshard`; returns the exit status (0 done, 130/143 stopped by a signal, resumable).
pub fn run(args: &ReshardArgs) -> Result<u8, String> {
    // Background work: the clients' requests go first on a shared machine.
    otkv_adapter_http::front::background_priority();
    crate::shutdown::install()?;
    let secure = args.security.load()?;
    let proxy = args
        .proxy
        .as_ref()
        .map(|url| nodes::remote_targets(std::slice::from_ref(url), &secure))
        .transpose()?;
    let (from_urls, to_urls) = match &proxy {
        Some(p) => sets_of(&p[0])?,
        None => (args.from.clone(), args.to.clone()),
    };
    let from = nodes::remote_targets(&from_urls, &secure)?;
    let to = nodes::remote_targets(&to_urls, &secure)?;
    let names = |ts: &[Target]| ts.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    let router = args.routing.build(&names(&to));
    let mut p = load(&args.state, &from_urls, &to_urls)?;
    let started = Instant::now();
    let (mut looked, mut tried) = (0u64, 0u64);
    // `--rate`: the moves so far are due no sooner than at this pace.
    let pace = |tried: u64| {
        if let Some(rate) = args.rate.filter(|r| *r > 0.0) {
            let due = Duration::from_secs_f64(tried as f64 / rate);
            crate::shutdown::sleep(due.saturating_sub(started.elapsed()));
        }
    };
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(200));
    for (i, src) in from.iter().enumerate() {
        while !p.done[i] {
            if crate::shutdown::interrupted().is_some() {
                save(&args.state, &p)?;
                bar.finish_and_clear();
                eprintln!("harness: reshard stopped; run it again to go on ({})", args.state.display());
                return Ok(crate::shutdown::exit_status().unwrap_or(1));
            }
            let cursor = p.cursor[i].as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default();
            let listing = http_call(src, "GET", &format!("/v1/kv?limit={}{cursor}", args.page), &[], b"")?;
            if listing.status == 400 && p.cursor[i].is_some() {
                // Restarted with another listing order: look at its keys again from the start.
                let why = String::from_utf8_lossy(&listing.body);
                eprintln!(
                    "harness: {} refused the listing's cursor ({}); listing it again",
                    src.who(),
                    why.trim()
                );
                p.cursor[i] = None;
                continue;
            }
            check(&listing, &format!("listing {}", src.who()), &[200])?;
            let doc: serde_json::Value = serde_json::from_slice(&listing.body)
                .map_err(|e| format!("{}: a bad listing: {e}", src.who()))?;
            let keys: Vec<String> = doc["keys"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect();
            // Through the proxy: its moves, [`TOUCH_CHUNK`] keys a request; every move is the proxy's,
            // with the key claimed there, so none races a client's request.
            let mut moving: Vec<&str> = Vec::new();
            for key in &keys {
                let raw = percent::decode(key, false)
                    .ok_or_else(|| format!("{} listed a malformed key {key:?}", src.who()))?;
                let owner = &to[router.route(&raw)];
                if owner.url() == src.url() {
                    p.stayed += 1;
                } else if proxy.is_some() {
                    moving.push(key);
                } else {
                    let mut call = |side: Side, method: &str, path: &str, headers: &[String], body: &[u8]| {
                        let node = match side {
                            Side::From => src,
                            Side::To => owner,
                        };
                        http_call(node, method, path, headers, body)
                            .map_err(|e| format!("{}: {e}", node.who()))
                    };
                    let (outcome, conflicts) = move_key_settled(&mut call, &format!("/v1/kv/{key}"))?;
                    p.conflicts += conflicts;
                    p.count(outcome);
                    tried += 1;
                    pace(tried);
                }
                looked += 1;
            }
            if let Some(proxy) = &proxy {
                for chunk in chunks(&moving) {
                    for outcome in touch(&proxy[0], chunk)? {
                        match outcome {
                            Some(Outcome::Conflict) => p.conflicts += 1,
                            Some(outcome) => p.count(outcome),
                            None => p.moved_by_proxy += 1,
                        }
                    }
                    tried += chunk.len() as u64;
                    pace(tried);
                }
            }
            bar.set_message(format!(
                "{}: {looked} keys looked at; moved {}, already there {}, conflicts {}, gone {}",
                src.who(),
                p.moved,
                p.already_there,
                p.conflicts,
                p.gone
            ));
            match doc["next"].as_str() {
                Some(next) => p.cursor[i] = Some(next.to_string()),
                None => p.done[i] = true,
            }
            save(&args.state, &p)?;
        }
    }
    bar.finish_and_clear();
    if let Some(proxy) = &proxy {
        let done = http_call(&proxy[0], "POST", "/v1/reshard/done", &[], b"")?;
        check(&done, &format!("telling {} the move is over", proxy[0].url()), &[200])?;
    }
    // The change is complete: its progress must not stand in the way of the next one.
    if let Err(e) = std::fs::remove_file(&args.state) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(format!("{}: {e}", args.state.display()));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    crate::say!(
        "reshard done: moved {}, already there {}, conflicts {}, gone {}, stayed {}, moved by the proxy on clients' requests {} in {secs:.1} s ({:.0} keys/s looked at)",
        p.moved,
        p.already_there,
        p.conflicts,
        p.gone,
        p.stayed,
        p.moved_by_proxy,
        looked as f64 / secs.max(1e-9)
    );
    Ok(0)
}
