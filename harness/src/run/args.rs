//! `harness run`'s command line, and [`RunArgs::validate`]: every check of the options, and where the
//! load goes (local nodes, given nodes, or a proxy), decided before anything starts.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use otkv_adapter_http::front::MAX_TTL_SECS;

use crate::load::LoadSpec;
use crate::nodes::{self, LocalNodeArgs};
use crate::router::RoutingArgs;
use crate::run_outcome::wire_name;
use crate::secure::ClientSecurityArgs;
use crate::target::{Protocol, Target};
use crate::workload::{KeyChooser, KeyDist, WorkloadKind};

/// Node counts: `1..3`, `1..=3`, `2`, or `1,3`.
#[derive(Debug, Clone)]
pub struct NodeCounts(pub Vec<usize>);

impl std::str::FromStr for NodeCounts {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}`: expected a count (2), a range (1..3) or a list (1,3)");
        let counts: Vec<usize> = if let Some((a, b)) = s.split_once("..") {
            let a: usize = a.parse().map_err(|_| bad())?;
            let b: usize = b.trim_start_matches('=').parse().map_err(|_| bad())?;
            (a..=b).collect()
        } else {
            s.split(',').map(|p| p.trim().parse().map_err(|_| bad())).collect::<Result<_, _>>()?
        };
        if counts.is_empty() || counts.contains(&0) {
            return Err(bad());
        }
        Ok(NodeCounts(counts))
    }
}

/// What `harness run` benchmarks (`--target`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// OTKV nodes, over HTTP.
    Otkv,
    /// redis-server, over RESP, with the same client, routing, workload and checks.
    Redis,
    /// An etcd cluster (`--nodes N`: N members), over its v3 JSON gateway, with the same client,
    /// workload and checks; every member serves every key (writes go through its Raft leader, reads are
    /// linearizable).
    Etcd,
}

/// `harness run`'s options.
#[derive(Debug, Args, serde::Serialize)]
pub struct RunArgs {
    /// What to benchmark: otkv, or redis (redis-server over RESP: the same client, routing, workload and
    /// value checks, so the reports read as one table); etcd (an N-member cluster for N nodes, over its
    /// JSON gateway); `otkv,redis,etcd` runs them into one comparison. Local redis-servers need
    /// `redis-server` on PATH, local etcd members `etcd`; remote ones are `--node redis://HOST:PORT` or
    /// `--node etcd://HOST:PORT`.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "otkv")]
    pub target: Vec<TargetKind>,
    /// Node counts to run, in order: `1..3` runs 1, 2 and 3 nodes. [default: 1..3; with --node: all given]
    #[arg(long, value_name = "RANGE")]
    #[serde(skip)]
    pub nodes: Option<NodeCounts>,
    /// Target an already-running node (repeatable), e.g. <http://10.0.0.5:7070>, instead of starting nodes
    /// (`https://` over TLS; `redis://`, `rediss://` with --target redis).
    #[arg(long = "node", value_name = "URL")]
    pub node_urls: Vec<String>,
    #[command(flatten)]
    #[serde(skip)]
    #[allow(missing_docs)]
    pub security: ClientSecurityArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub local: LocalNodeArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub routing: RoutingArgs,
    /// Send every request through this `harness proxy` (http://HOST:PORT) instead of routing on the
    /// client; one run, at the proxy's own node count.
    #[arg(long, value_name = "URL", conflicts_with_all = ["node_urls", "via_proxy"])]
    pub proxy: Option<String>,
    /// For each node count, run twice: routed by the client, then through a `harness proxy` started in
    /// front of the same nodes (one comparison table: what the hop costs).
    #[arg(long)]
    pub via_proxy: bool,
    /// What to send: seed (set each key, then read it back), ycsb-a (50/50 read/update), ycsb-b (95/5),
    /// ycsb-c (read only), put, get.
    #[arg(long, value_enum, default_value = "ycsb-b")]
    pub workload: WorkloadKind,
    /// Size of the key space.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Key popularity: uniform, or zipf (YCSB's, θ = 0.99).
    #[arg(long, value_enum, default_value = "uniform")]
    pub key_dist: KeyDist,
    /// Connections in all, spread over the nodes in proportion to the work routing sends them.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// How long to measure each node count (e.g. 10s, 1m). Ignored with --ops.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "as_secs")]
    pub duration: Duration,
    /// Stop each node count after this many operations instead of after --duration.
    #[arg(long)]
    pub ops: Option<u64>,
    /// Share of updates done as a read-modify-write: GET (its `ETag`), then PUT with If-Match; a 412
    /// (another writer got there first) counts as a conflict, not an error. 0..=1; OTKV only.
    #[arg(long, default_value_t = 0.0, value_name = "FRACTION")]
    pub cas_share: f64,
    /// Writes expire after this many seconds (PUT ?ttl=, Redis SET EX).
    #[arg(long, value_name = "SECONDS")]
    pub ttl: Option<u64>,
    /// Load to run before each measured window, reported apart and not measured: cold caches and
    /// connection set-up stay out of the figures (its connections carry on into the window). 0s: none.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "as_secs")]
    pub warmup: Duration,
    /// Requests in flight per connection (closed loop).
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// A new connection for every batch (closed after its answers): measures connection set-up, e.g.
    /// TLS handshakes per second; the server CPU per operation then includes the handshake.
    #[arg(long)]
    pub reconnect: bool,
    /// Open loop: send this many ops/s in total on a fixed schedule; latency counts from each request's
    /// intended send time (coordinated omission corrected, as wrk2).
    #[arg(long, value_name = "OPS_PER_SEC")]
    pub rate: Option<f64>,
    /// A request with no answer after this long counts as a timeout error.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "as_secs")]
    pub timeout: Duration,
    /// Client worker threads (like wrk -t).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// The run fails (exit status 1) when more than this share of requests failed: `0.1%` or `0.001`.
    /// Default 0: any error fails it.
    #[arg(long, value_name = "RATE", default_value = "0")]
    pub max_error_rate: ErrorRate,
    /// Start the load (its warm-up, then the window) at this time, so clients on several machines
    /// measure the same window (`harness merge` combines their results): RFC 3339
    /// (`2026-11-27T22:00:00Z`) or `+DURATION` from now (`+10s`). Applies to the first node count; the
    /// report says how far the window's actual start was from the planned one.
    #[arg(long, value_name = "TIME")]
    pub start_at: Option<String>,
    /// Where summary.json, the .hgrm files and the plots go.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Print summary.json on stdout (the text report then goes to stderr).
    #[arg(long)]
    pub json: bool,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Where a run's load goes, as [`RunArgs::validate`] decided it.
#[derive(Debug)]
pub struct Setup {
    /// What to benchmark, in order, without repeats.
    pub kinds: Vec<TargetKind>,
    /// Nodes given with `--node`, if any.
    pub remote: Option<Vec<Target>>,
    /// The proxy given with `--proxy`, and the nodes behind it.
    pub proxy: Option<(Target, Vec<Target>)>,
    /// Node counts to run, in order.
    pub counts: Vec<usize>,
    /// `--start-at`, as a time.
    pub start_at: Option<std::time::SystemTime>,
}

impl RunArgs {
    /// Checks the options against each other, and asks the given nodes or proxy what they are: an error
    /// says which option is wrong, before any node starts.
    pub fn validate(&self) -> Result<Setup, String> {
        self.check_options()?;
        let mut kinds = self.target.clone();
        kinds.dedup();
        let secure = self.security.load()?;
        let remote = if self.node_urls.is_empty() {
            None
        } else {
            Some(nodes::remote_targets(&self.node_urls, &secure)?)
        };
        if let Some(r) = &remote {
            let want = |k: TargetKind| match k {
                TargetKind::Redis => Protocol::Resp,
                TargetKind::Etcd => Protocol::Etcd,
                TargetKind::Otkv => Protocol::Http,
            };
            if kinds.len() > 1 {
                return Err("--node: give one --target (the nodes are one kind)".into());
            }
            if let Some(t) = r.iter().find(|t| t.protocol != want(kinds[0])) {
                let hint = if t.protocol == Protocol::Resp { ": add --target redis" } else { "" };
                return Err(format!(
                    "--node {} does not match --target {}{hint}",
                    t.url(),
                    wire_name(&kinds[0])
                ));
            }
        }
        if kinds.contains(&TargetKind::Redis) && (self.proxy.is_some() || self.via_proxy) {
            return Err(
                "--target redis: harness proxy speaks OTKV's HTTP API, not RESP; drop --proxy/--via-proxy"
                    .into(),
            );
        }
        if kinds.contains(&TargetKind::Etcd) && (self.proxy.is_some() || self.via_proxy) {
            return Err(
                "--target etcd: an etcd cluster is one address already; drop --proxy/--via-proxy".into()
            );
        }
        let proxy = match &self.proxy {
            Some(url) => {
                let mut target = nodes::remote_targets(std::slice::from_ref(url), &secure)?.remove(0);
                target.name = "proxy".into();
                let behind = nodes::proxy_nodes(&target, &secure)?;
                Some((target, behind))
            }
            None => None,
        };
        let counts = match (&self.nodes, &remote, &proxy) {
            (_, _, Some((_, behind))) => vec![behind.len()],
            (Some(c), Some(r), None) => {
                if let Some(&too_many) = c.0.iter().find(|&&n| n > r.len()) {
                    return Err(format!(
                        "--nodes asks for {too_many} nodes but only {} --node URLs were given",
                        r.len()
                    ));
                }
                c.0.clone()
            }
            (Some(c), None, None) => c.0.clone(),
            (None, Some(r), None) => vec![r.len()],
            (None, None, None) => vec![1, 2, 3],
        };
        let start_at = self.start_at.as_deref().map(parse_start_at).transpose()?;
        Ok(Setup { kinds, remote, proxy, counts, start_at })
    }

    /// The checks that need nothing but the options.
    fn check_options(&self) -> Result<(), String> {
        if self.rate.is_some() && self.pipeline > 1 {
            return Err(
                "--rate (open loop) sends one request at a time per connection: drop --pipeline".into()
            );
        }
        if !(0.0..=1.0).contains(&self.cas_share) {
            return Err("--cas-share is a fraction of the updates, 0 to 1".into());
        }
        if self.cas_share > 0.0 {
            if self.target.contains(&TargetKind::Redis) || self.target.contains(&TargetKind::Etcd) {
                return Err(
                    "--cas-share uses OTKV's ETag/If-Match: drop it with --target redis or etcd".into()
                );
            }
            if self.workload.read_fraction() >= 1.0 || self.workload == WorkloadKind::Seed {
                return Err(format!(
                    "--cas-share turns updates into read-modify-writes; the {} workload has none",
                    wire_name(&self.workload)
                ));
            }
        }
        if self.ttl.is_some() && self.target.contains(&TargetKind::Etcd) {
            return Err(
                "--ttl: etcd expires keys through leases, which this harness does not drive; drop --ttl"
                    .into(),
            );
        }
        if self.ttl.is_some_and(|t| t == 0 || t > MAX_TTL_SECS) {
            return Err("--ttl is whole seconds, 1 to ten years".into());
        }
        if self.value_size == 0 || self.keys == 0 || self.connections == 0 {
            return Err("--keys, --value-size and --connections must be positive".into());
        }
        if self.pipeline == 0 {
            return Err("--pipeline 0: each connection must send at least one request at a time".into());
        }
        if self.ops.is_none() && self.duration.is_zero() {
            return Err("--duration 0s: nothing would be measured (give a duration, or --ops N)".into());
        }
        if let Some(ops) = self.ops {
            if ops < self.connections as u64 {
                return Err(format!(
                    "--ops {ops} is fewer than the {} connections: some would send nothing; lower --connections",
                    self.connections
                ));
            }
        }
        if let Some(rate) = self.rate {
            if rate.is_nan() || rate < self.connections as f64 {
                return Err(format!(
                    "--rate {rate} is below one operation per second per connection ({} connections): \
                     lower --connections or raise --rate",
                    self.connections
                ));
            }
        }
        self.check_memory()
    }

    /// What the load needs in memory: each connection's buffers hold whole values, and local nodes
    /// hold every key on this machine.
    fn check_memory(&self) -> Result<(), String> {
        let Some(available) = available_memory() else { return Ok(()) };
        let gib = |b: f64| b / (1u64 << 30) as f64;
        let buffers = self.value_size as f64 * self.pipeline as f64 * self.connections as f64 * 2.0;
        if buffers > available as f64 / 2.0 {
            return Err(format!(
                "--value-size {} with {} connections × --pipeline {}: {:.1} GiB of buffers in the client alone; \
                 this machine has {:.1} GiB available",
                self.value_size,
                self.connections,
                self.pipeline,
                gib(buffers),
                gib(available as f64)
            ));
        }
        let local = self.node_urls.is_empty() && self.proxy.is_none();
        // A stored key costs its value, its key and about 64 bytes of bookkeeping (benches/results, `memory`).
        let stored = self.keys as f64 * (self.value_size + crate::workload::KEY_LEN + 64) as f64;
        if local && self.workload.needs_preload() && stored > available as f64 * 0.8 {
            return Err(format!(
                "--keys {} of --value-size {}: the preload needs about {:.1} GiB in the local nodes; this \
                 machine has {:.1} GiB available",
                self.keys,
                self.value_size,
                gib(stored),
                gib(available as f64)
            ));
        }
        Ok(())
    }

    /// The load these options describe.
    pub fn load_spec(&self) -> LoadSpec {
        LoadSpec {
            workload: self.workload,
            keys: self.keys,
            value_size: self.value_size,
            chooser: KeyChooser::new(self.key_dist, self.keys),
            connections: self.connections,
            duration: if self.ops.is_some() { None } else { Some(self.duration) },
            ops: self.ops,
            pipeline: self.pipeline,
            rate: self.rate,
            timeout: self.timeout,
            warmup: Some(self.warmup),
            cas_share: self.cas_share,
            ttl_secs: self.ttl,
            reconnect: self.reconnect,
            progress: true,
        }
    }
}

/// `MemAvailable` of this machine, bytes.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
}

/// A fraction of requests that may fail without failing the run: `0.1%` or `0.001`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ErrorRate(pub f64);

impl std::str::FromStr for ErrorRate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (number, scale) = s.strip_suffix('%').map_or((s, 1.0), |n| (n, 0.01));
        let v: f64 = number
            .trim()
            .parse()
            .map_err(|_| format!("{s}: give a fraction (0.001) or a percentage (0.1%)"))?;
        let v = v * scale;
        if (0.0..=1.0).contains(&v) {
            Ok(ErrorRate(v))
        } else {
            Err(format!("{s}: between 0 and 100%"))
        }
    }
}

/// `--start-at`: RFC 3339, or `+DURATION` from now.
pub fn parse_start_at(text: &str) -> Result<std::time::SystemTime, String> {
    let bad =
        |e: String| format!("--start-at {text}: {e} (give RFC 3339, e.g. 2026-11-27T22:00:00Z, or +10s)");
    if let Some(after) = text.strip_prefix('+') {
        let d = humantime::parse_duration(after).map_err(|e| bad(e.to_string()))?;
        return Ok(std::time::SystemTime::now() + d);
    }
    humantime::parse_rfc3339_weak(text).map_err(|e| bad(e.to_string()))
}
