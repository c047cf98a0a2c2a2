//! `harness reshard`: moves every key whose owner changes when a cluster's node set changes, from the
//! node that holds it to the node that owns it under the new set, so no acknowledged key is stranded.
//!
//! Routing is a pure function of a key and the node names (`node-0`, `node-1`, ... in `--node` order), so
//! the owners before and after are known without asking anyone. The mover pages through each old node's
//! keys with the listing cursor (`?after=`) and moves each key whose new owner is another node, with the
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
//! and run again with the same node sets goes on where it was; moving a key twice is harmless. It moves
//! data with the cluster at rest: a key written through the new routing while its old copy waits to be
//! moved keeps the newer value (step 2), but reads through the new routing miss keys not moved yet.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use otkv_adapter_http::front::pct;

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
    /// Where progress is kept; a mover run again with the same sets resumes from it.
    #[arg(long, default_value = "reshard-state.json")]
    pub state: PathBuf,
    /// At most this many keys looked at per second.
    #[arg(long, value_name = "KEYS_PER_SEC")]
    pub rate: Option<f64>,
    /// Keys per listing page. On the memory engine a page visits every key of the node, whatever its size,
    /// so large pages cost the nodes less in all.
    #[arg(long, default_value_t = 10_000)]
    pub page: usize,
}

/// What the mover did, and where it is.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// The old set's URLs.
    pub from: Vec<String>,
    /// The new set's URLs.
    pub to: Vec<String>,
    /// Per old node: the last key looked at, or `None` before the first.
    pub after: Vec<Option<String>>,
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

fn check(a: &HttpAnswer, what: &str, ok: &[u16]) -> Result<u16, String> {
    if ok.contains(&a.status) {
        Ok(a.status)
    } else {
        Err(format!("{what}: {} {}", a.status, String::from_utf8_lossy(&a.body).trim()))
    }
}

/// Seconds left to live, from `OTKV-Expires` (`Some(0)`: already expired).
fn ttl_left(a: &HttpAnswer) -> Option<u64> {
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
        after: vec![None; from.len()],
        done: vec![false; from.len()],
        ..Progress::default()
    };
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(fresh) };
    let saved: Progress = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if saved.from != fresh.from || saved.to != fresh.to {
        return Err(format!(
            "{} is the progress of another change ({:?} -> {:?}); remove it or give another --state",
            path.display(),
            saved.from,
            saved.to
        ));
    }
    Ok(saved)
}

/// Has the proxy move `keys`: a `HEAD` for each, pipelined on one connection, which the proxy answers
/// after moving each key to its new owner. Returns each one's outcome.
fn touch(proxy: &Target, keys: &[&str]) -> Result<Vec<Outcome>, String> {
    use std::io::{Read, Write};
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let auth = proxy.secure.authorization_line();
    let mut requests = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let close = if i + 1 == keys.len() { "Connection: close\r\n" } else { "" };
        requests.extend_from_slice(
            format!("HEAD /v1/kv/{key} HTTP/1.1\r\nHost: {}\r\n{auth}{close}\r\n", proxy.host).as_bytes(),
        );
    }
    let mut stream = crate::cost::connect(proxy)?;
    stream.write_all(&requests).map_err(|e| format!("{}: {e}", proxy.url()))?;
    let mut answers = Vec::new();
    stream.read_to_end(&mut answers).map_err(|e| format!("{}: {e}", proxy.url()))?;
    // HEAD answers have no body: each is a head, up to its blank line.
    let text = String::from_utf8_lossy(&answers);
    let statuses: Vec<&str> =
        text.split("\r\n\r\n").filter(|h| !h.is_empty()).filter_map(|h| h.split(' ').nth(1)).collect();
    if statuses.len() != keys.len() {
        return Err(format!("{} answered {} of {} requests", proxy.url(), statuses.len(), keys.len()));
    }
    statuses
        .iter()
        .zip(keys)
        .map(|(status, key)| match *status {
            "200" => Ok(Outcome::Moved),
            "404" => Ok(Outcome::Gone),
            other => Err(format!("HEAD /v1/kv/{key} through {}: {other}", proxy.url())),
        })
        .collect()
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
    crate::stop::install()?;
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
    let mut looked = 0u64;
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(200));
    for (i, src) in from.iter().enumerate() {
        while !p.done[i] {
            if crate::stop::interrupted().is_some() {
                save(&args.state, &p)?;
                bar.finish_and_clear();
                eprintln!("harness: reshard stopped; run it again to go on ({})", args.state.display());
                return Ok(crate::stop::exit_status().unwrap_or(1));
            }
            let after = p.after[i].as_ref().map(|a| format!("&after={a}")).unwrap_or_default();
            let listing = http_call(src, "GET", &format!("/v1/kv?limit={}{after}", args.page), &[], b"")?;
            check(&listing, &format!("listing {}", src.who()), &[200])?;
            let doc: serde_json::Value = serde_json::from_slice(&listing.body)
                .map_err(|e| format!("{}: a bad listing: {e}", src.who()))?;
            let keys: Vec<String> = doc["keys"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect();
            // Through the proxy: its moves, one HEAD per key, pipelined for the page; every move is the
            // proxy's, under its per-key lock, so none races a client's request.
            let mut moving: Vec<&str> = Vec::new();
            for key in &keys {
                let raw = pct::decode(key, false)
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
                }
                looked += 1;
                if let Some(rate) = args.rate.filter(|r| *r > 0.0) {
                    let due = Duration::from_secs_f64(looked as f64 / rate);
                    crate::stop::sleep(due.saturating_sub(started.elapsed()));
                }
            }
            if let Some(proxy) = &proxy {
                for outcome in touch(&proxy[0], &moving)? {
                    p.count(outcome);
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
                Some(next) => p.after[i] = Some(next.to_string()),
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
    let secs = started.elapsed().as_secs_f64();
    crate::say!(
        "reshard done: moved {}, already there {}, conflicts {}, gone {}, stayed {} in {secs:.1} s ({:.0} keys/s looked at)",
        p.moved,
        p.already_there,
        p.conflicts,
        p.gone,
        p.stayed,
        looked as f64 / secs.max(1e-9)
    );
    Ok(0)
}
