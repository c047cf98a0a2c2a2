//! The nodes a run talks to: ones the harness starts itself, or ones given by URL.
//!
//! Local nodes are real `otkv-server` processes: the harness runs its own executable as `harness node ...`,
//! which is the adapter's server code (`otkv_adapter_http::run`), so a fresh clone needs no second build
//! step. Each gets `--port 0` and reports its address on its first stdout line; each has its own data
//! directory under a temporary directory, removed afterwards unless `--keep-data`.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::router::{node_names, RoutingArgs};
use crate::secure::Secure;
use crate::target::{Protocol, Target};

/// How long a node may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// How the harness starts local nodes, as `harness run` and `harness proxy` both take it.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct LocalNodeArgs {
    /// Engine of the nodes the harness starts: memory (the engine's own table), flurry or sled.
    #[arg(long, default_value = "memory")]
    pub engine: String,
    /// Durability of the nodes the harness starts: none, periodic or sync.
    #[arg(long, default_value = "none")]
    pub durability: String,
    /// Worker threads of each node the harness starts.
    #[arg(long, default_value_t = 1)]
    pub node_workers: usize,
    /// Start each node as a replica group of this many members (Raft; 3 or 5 keep serving with one or
    /// two members down). Keys are routed to groups as they are to nodes; 1: plain nodes.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=9))]
    pub replicas: u64,
    /// Keep the nodes' data directories (their path is printed).
    #[arg(long)]
    pub keep_data: bool,
}

impl LocalNodeArgs {
    /// The settings of each node to start.
    pub fn options(&self) -> NodeOptions {
        NodeOptions {
            engine: self.engine.clone(),
            durability: self.durability.clone(),
            workers: self.node_workers,
            replicas: self.replicas as usize,
        }
    }
}

/// Settings for the nodes the harness starts.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// `--engine`.
    pub engine: String,
    /// `--durability`.
    pub durability: String,
    /// `--workers` of each node.
    pub workers: usize,
    /// Members of each replica group (1: plain nodes).
    pub replicas: usize,
}

/// Nodes (or a proxy) started by the harness; stopped (SIGTERM, then kill) when dropped.
#[derive(Debug)]
pub struct LocalNodes {
    children: Vec<Child>,
    /// Where to send requests.
    pub targets: Vec<Target>,
}

/// Starts `n` nodes with data directories under `data_root`.
pub fn start_local(n: usize, opts: &NodeOptions, data_root: &Path) -> Result<LocalNodes, String> {
    if opts.replicas > 1 {
        return start_local_groups(n, opts, data_root);
    }
    let mut nodes = LocalNodes { children: Vec::new(), targets: Vec::new() };
    for name in node_names(n) {
        let dir: PathBuf = data_root.join(&name);
        let workers = opts.workers.to_string();
        let mut args: Vec<OsString> = [
            "node",
            "--port",
            "0",
            "--engine",
            &opts.engine,
            "--durability",
            &opts.durability,
            "--workers",
            &workers,
        ]
        .into_iter()
        .map(OsString::from)
        .collect();
        args.extend([OsString::from("--data-dir"), dir.into_os_string()]);
        let (child, addr) = spawn_server(&name, &args)?;
        nodes.children.push(child);
        nodes.targets.push(Target::clear(name, addr, Protocol::Http));
    }
    Ok(nodes)
}

/// How long a new group may take to take in a member.
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Starts `n` replica groups of `opts.replicas` members each: member 1 starts a group of one, the others
/// start empty (`--join`) and are added one by one (`POST /v1/replica/members` to member 1, which
/// leads). Returns once every member has the group's data; each group's target tries member 1 first.
fn start_local_groups(n: usize, opts: &NodeOptions, data_root: &Path) -> Result<LocalNodes, String> {
    let mut nodes = LocalNodes { children: Vec::new(), targets: Vec::new() };
    for name in node_names(n) {
        let mut addrs = Vec::new();
        for member in 1..=opts.replicas {
            let dir: PathBuf = data_root.join(&name).join(format!("member-{member}"));
            let mut args: Vec<OsString> =
                ["node", "--port", "0", "--engine", &opts.engine, "--durability", &opts.durability]
                    .into_iter()
                    .map(OsString::from)
                    .collect();
            args.extend([
                "--workers".into(),
                opts.workers.to_string().into(),
                "--member".into(),
                member.to_string().into(),
            ]);
            if member > 1 {
                args.push("--join".into());
            }
            args.extend([OsString::from("--data-dir"), dir.into_os_string()]);
            let (child, addr) = spawn_server(&format!("{name} member {member}"), &args)?;
            nodes.children.push(child);
            addrs.push(addr);
        }
        let mut target = Target::clear(name.clone(), addrs[0], Protocol::Http);
        target.group.clone_from(&addrs);
        for (i, addr) in addrs.iter().enumerate().skip(1) {
            let path = format!("/v1/replica/members?add={}&url=http://{addr}", i + 1);
            let deadline = Instant::now() + JOIN_TIMEOUT;
            loop {
                let answer = crate::cost::http_call(&target, "POST", &path, &[], b"");
                match answer {
                    Ok(a) if a.status == 200 => break,
                    // No leader yet, or the previous member still catching up: ask again.
                    Ok(a) if matches!(a.status, 503 | 504) && Instant::now() < deadline => {}
                    Ok(a) => {
                        return Err(format!(
                            "{name}: adding member {} answered {}: {}",
                            i + 1,
                            a.status,
                            String::from_utf8_lossy(&a.body).trim()
                        ))
                    }
                    Err(e) if Instant::now() < deadline => tracing::debug!(error = %e, "adding a member"),
                    Err(e) => return Err(format!("{name}: adding member {}: {e}", i + 1)),
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        wait_in_sync(&target)?;
        nodes.targets.push(target);
    }
    Ok(nodes)
}

/// Waits until every member of `group` has applied what its leader has committed.
fn wait_in_sync(group: &Target) -> Result<(), String> {
    let deadline = Instant::now() + JOIN_TIMEOUT;
    let applied = |addr: SocketAddr| -> Option<(u64, u64)> {
        let (_, body) = crate::cost::http_get(&group.at_member(addr), "/v1/stats").ok()?;
        let doc: serde_json::Value = serde_json::from_slice(&body).ok()?;
        let r = &doc["replica"];
        Some((r["applied_index"].as_u64()?, r["commit_index"].as_u64()?))
    };
    loop {
        let seen: Vec<Option<(u64, u64)>> = group.group.iter().map(|&a| applied(a)).collect();
        let commit = seen.iter().flatten().map(|(_, c)| *c).max().unwrap_or(0);
        if commit > 0 && seen.iter().all(|s| s.is_some_and(|(a, _)| a >= commit)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{}: members not in sync after {JOIN_TIMEOUT:?}: {seen:?}", group.name));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `n` redis-servers (`redis-server` from PATH) on free loopback ports, data directories under
/// `data_root`. Durability maps to Redis's nearest setting: `none` keeps nothing (`appendonly no`,
/// `save ""`), `periodic` is `appendfsync everysec`, `sync` is `appendfsync always`.
pub fn start_local_redis(n: usize, opts: &NodeOptions, data_root: &Path) -> Result<LocalNodes, String> {
    let fsync = match opts.durability.as_str() {
        "none" => None,
        "periodic" => Some("everysec"),
        "sync" => Some("always"),
        other => return Err(format!("--durability {other}: expected none, periodic or sync")),
    };
    let mut nodes = LocalNodes { children: Vec::new(), targets: Vec::new() };
    for name in node_names(n) {
        let dir: PathBuf = data_root.join(&name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        // Redis cannot pick a free port itself (`--port 0` means no TCP at all): take one from the kernel
        // and hand it over; if another process takes it in between, Redis says so and we try another.
        let mut attempts = 0;
        let (child, addr) = loop {
            attempts += 1;
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("cannot find a free port: {e}"))?
                .port();
            let mut args: Vec<OsString> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
                "",
                "--protected-mode",
                "no",
                "--appendonly",
                if fsync.is_some() { "yes" } else { "no" },
            ]
            .into_iter()
            .map(OsString::from)
            .collect();
            if let Some(f) = fsync {
                args.extend(["--appendfsync", f].map(OsString::from));
            }
            args.extend([OsString::from("--dir"), dir.clone().into_os_string()]);
            match spawn_redis(&name, &args) {
                Ok(child) => break (child, SocketAddr::from(([127, 0, 0, 1], port))),
                Err(e) if e.contains("in use") && attempts < 5 => continue,
                Err(e) => return Err(e),
            }
        };
        nodes.children.push(child);
        nodes.targets.push(Target::clear(name, addr, Protocol::Resp));
    }
    Ok(nodes)
}

/// Starts an etcd cluster of `n` members on free loopback ports, its data under `data_root`, and waits
/// until it has a leader (every member's `/health` says so). etcd always syncs its write-ahead log
/// before it answers a write, so only `--durability sync` describes it; the harness refuses the others
/// rather than report them as what they are not.
pub fn start_local_etcd(n: usize, opts: &NodeOptions, data_root: &Path) -> Result<LocalNodes, String> {
    if opts.durability != "sync" {
        return Err(format!(
            "--target etcd: etcd syncs every write before answering; run it with --durability sync (not {})",
            opts.durability
        ));
    }
    if opts.replicas > 1 {
        // An etcd cluster is one replica group: with --replicas, one group of that many members.
        if n != 1 {
            return Err(
                "--target etcd with --replicas: an etcd cluster is one group; run it with --nodes 1".into()
            );
        }
        let mut nodes =
            start_local_etcd(opts.replicas, &NodeOptions { replicas: 1, ..opts.clone() }, data_root)?;
        let members: Vec<SocketAddr> = nodes.targets.iter().map(|t| t.addr).collect();
        let leader = etcd_leader(&nodes.targets).unwrap_or(0);
        let mut group = nodes.targets.swap_remove(leader);
        group.name = "node-0".into();
        group.group =
            std::iter::once(group.addr).chain(members.into_iter().filter(|&a| a != group.addr)).collect();
        nodes.targets = vec![group];
        return Ok(nodes);
    }
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("cannot find a free port: {e}"))
    };
    let names = node_names(n);
    let mut ports = Vec::new();
    for _ in 0..n {
        ports.push((free_port()?, free_port()?));
    }
    let cluster: Vec<String> =
        names.iter().zip(&ports).map(|(name, (_, peer))| format!("{name}=http://127.0.0.1:{peer}")).collect();
    let mut nodes = LocalNodes { children: Vec::new(), targets: Vec::new() };
    for (name, (client, peer)) in names.iter().zip(&ports) {
        let dir = data_root.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut command = Command::new("etcd");
        command
            .args(["--name", name, "--logger", "zap", "--log-level", "error"])
            .arg("--data-dir")
            .arg(&dir)
            .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!("--initial-cluster={}", cluster.join(",")))
            .args(["--initial-cluster-state", "new", "--initial-cluster-token", "otkv-harness"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        crate::shutdown::die_with_parent(&mut command);
        let child = match command.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err("--target etcd: etcd is not on PATH; install Debian's etcd-server package \
                     (apt-get install etcd-server) or give running members with --node etcd://HOST:PORT"
                    .into())
            }
            Err(e) => return Err(format!("cannot start etcd for {name}: {e}")),
        };
        crate::shutdown::track_child(child.id());
        nodes.children.push(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], *client));
        nodes.targets.push(Target::clear(name.clone(), addr, Protocol::Etcd));
    }
    let started = std::time::Instant::now();
    for target in &nodes.targets {
        loop {
            let healthy = crate::cost::http_get(target, "/health").is_ok_and(|(status, body)| {
                status == 200 && String::from_utf8_lossy(&body).contains("\"true\"")
            });
            if healthy {
                break;
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(format!("{} (etcd) did not become healthy in time", target.who()));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    Ok(nodes)
}

/// The index of the etcd member that leads, as its `/v3/maintenance/status` says.
fn etcd_leader(members: &[Target]) -> Option<usize> {
    members.iter().position(|m| {
        let status = crate::cost::http_call(m, "POST", "/v3/maintenance/status", &[], b"{}").ok();
        let doc: Option<serde_json::Value> = status.and_then(|a| serde_json::from_slice(&a.body).ok());
        doc.is_some_and(|d| d["leader"].is_string() && d["leader"] == d["header"]["member_id"])
    })
}

/// Runs `redis-server` with `args`, waiting for its `Ready to accept connections` log line.
fn spawn_redis(name: &str, args: &[OsString]) -> Result<Child, String> {
    let mut command = Command::new("redis-server");
    command.args(args).stdout(Stdio::piped());
    crate::shutdown::die_with_parent(&mut command);
    let mut child = match command.spawn() {
        Ok(c) => {
            crate::shutdown::track_child(c.id());
            c
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err("--target redis: redis-server is not on PATH; install Debian's redis-server package \
                 (apt-get install redis-server) or give running servers with --node redis://HOST:PORT"
                .into())
        }
        Err(e) => return Err(format!("cannot start redis-server for {name}: {e}")),
    };
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        return Err(format!("{name}: no stdout"));
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Send the log up to the ready line (or the end), then keep draining it so Redis never blocks.
        let mut seen = String::new();
        let mut sent = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if !sent {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains("Ready to accept connections") {
                    let _ = tx.send(Ok(()));
                    sent = true;
                }
            }
        }
        if !sent {
            let _ = tx.send(Err(seen));
        }
    });
    let ready =
        rx.recv_timeout(START_TIMEOUT).map_err(|_| format!("{name} (redis-server) did not start in time"));
    match ready
        .and_then(|r| r.map_err(|log| format!("{name} (redis-server) failed to start: {}", log.trim())))
    {
        Ok(()) => Ok(child),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// Starts `harness proxy` in front of `nodes` (named as they are), routing with `routing`; its one
/// target is the proxy, named `proxy`.
pub fn start_proxy(nodes: &[Target], routing: &RoutingArgs) -> Result<LocalNodes, String> {
    let (router, vnodes) = (crate::run_outcome::wire_name(&routing.router), routing.vnodes.to_string());
    let mut args: Vec<OsString> = ["proxy", "--port", "0", "--router", &router, "--vnodes", &vnodes]
        .into_iter()
        .map(OsString::from)
        .collect();
    for node in nodes {
        args.extend([OsString::from("--node"), OsString::from(format!("http://{}", node.host))]);
    }
    let (child, addr) = spawn_server("proxy", &args)?;
    Ok(LocalNodes {
        children: vec![child],
        targets: vec![Target::clear("proxy".into(), addr, Protocol::Http)],
    })
}

/// Runs this executable with `args`, waiting for its `listening on http://ADDR` line (killed if it
/// does not print one in time).
fn spawn_server(name: &str, args: &[OsString]) -> Result<(Child, SocketAddr), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the harness executable: {e}"))?;
    let mut command = Command::new(&exe);
    command
        .args(args)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    crate::shutdown::die_with_parent(&mut command);
    let mut child = command.spawn().map_err(|e| format!("cannot start {name}: {e}"))?;
    crate::shutdown::track_child(child.id());
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        return Err(format!("{name}: no stdout"));
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let addr = rx.recv_timeout(START_TIMEOUT).map_err(|_| format!("{name} did not start in time")).and_then(
        |line| {
            line.trim()
                .strip_prefix("listening on http://")
                .and_then(|a| a.parse::<SocketAddr>().ok())
                .ok_or_else(|| format!("{name} failed to start (said {:?})", line.trim()))
        },
    );
    match addr {
        Ok(addr) => Ok((child, addr)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

impl LocalNodes {
    /// For each node: `None` while it runs, or how it exited.
    pub fn exit_statuses(&mut self) -> Vec<Option<String>> {
        self.children.iter_mut().map(|c| c.try_wait().ok().flatten().map(|s| s.to_string())).collect()
    }

    /// Stops every node: SIGTERM (they flush and exit), then kill after a timeout.
    pub fn stop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        for child in &self.children {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for child in &mut self.children {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
            crate::shutdown::forget_child(child.id());
        }
        self.children.clear();
    }
}

impl Drop for LocalNodes {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Targets for `--node URL` arguments (`http://HOST:PORT` for OTKV, `redis://HOST:PORT` for Redis,
/// `https://` and `rediss://` over TLS), named `node-0`, `node-1`, ... in the order given; `secure` is
/// how to reach them (its TLS is used for the TLS schemes only).
pub fn remote_targets(urls: &[String], secure: &Secure) -> Result<Vec<Target>, String> {
    urls.iter()
        .zip(node_names(urls.len()))
        .map(|(url, name)| {
            // `URL,URL,...`: the members of a replica group, one routing name.
            let mut members = url.split(',').map(str::trim).filter(|u| !u.is_empty());
            let first = members.next().ok_or_else(|| "--node: an empty URL".to_string())?;
            let mut target = remote_target(first, name.clone(), secure)?;
            let rest: Vec<Target> =
                members.map(|u| remote_target(u, name.clone(), secure)).collect::<Result<_, _>>()?;
            if !rest.is_empty() {
                if target.protocol != Protocol::Http || rest.iter().any(|t| t.protocol != target.protocol) {
                    return Err(format!(
                        "--node {url}: a replica group's members are OTKV nodes, all http:// or all https://"
                    ));
                }
                target.group = std::iter::once(target.addr).chain(rest.iter().map(|t| t.addr)).collect();
            }
            Ok(target)
        })
        .collect()
}

/// One server's URL.
fn remote_target(url: &str, name: String, secure: &Secure) -> Result<Target, String> {
    let trimmed = url.trim_end_matches('/');
    let schemes = [
        ("http://", Protocol::Http, false),
        ("https://", Protocol::Http, true),
        ("redis://", Protocol::Resp, false),
        ("rediss://", Protocol::Resp, true),
        ("etcd://", Protocol::Etcd, false),
        ("etcds://", Protocol::Etcd, true),
    ];
    let Some((protocol, tls, host)) =
        schemes.iter().find_map(|&(scheme, p, tls)| trimmed.strip_prefix(scheme).map(|h| (p, tls, h)))
    else {
        return Err(format!(
            "--node {url}: expected http://HOST:PORT or https://HOST:PORT (an OTKV node; several, \
             comma-separated, for the members of a replica group), or redis://HOST:PORT or \
             rediss://HOST:PORT (a redis-server), or etcd://HOST:PORT (an etcd member's client URL)"
        ));
    };
    let addr = host
        .to_socket_addrs()
        .map_err(|e| format!("--node {url}: {e}"))?
        .next()
        .ok_or_else(|| format!("--node {url}: no address"))?;
    let secure = if tls { secure.clone() } else { secure.clear() };
    Ok(Target { name, addr, host: host.to_string(), protocol, secure, group: Vec::new() })
}

/// The nodes behind the `harness proxy` at `proxy`, as it names and reaches them (from its `/v1/stats`),
/// reached with `secure` (its TLS for `https://` nodes).
pub fn proxy_nodes(proxy: &Target, secure: &Secure) -> Result<Vec<Target>, String> {
    let failed = |e: String| format!("--proxy {}: {e}", proxy.url());
    let (status, body) = crate::cost::http_get(proxy, "/v1/stats").map_err(failed)?;
    let stats: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| failed(format!("/v1/stats answered {status}, not a proxy's stats: {e}")))?;
    let nodes = stats["nodes"]
        .as_array()
        .filter(|_| stats["totals"]["nodes"].is_u64())
        .ok_or_else(|| failed("its /v1/stats has no nodes: is it a harness proxy?".into()))?;
    nodes
        .iter()
        .map(|n| {
            let (name, host) = (n["name"].as_str(), n["addr"].as_str());
            let (Some(name), Some(host)) = (name, host) else {
                return Err(failed("a node in its /v1/stats has no name or addr".into()));
            };
            let url = n["url"].as_str().map_or_else(|| format!("http://{host}"), str::to_string);
            let mut target = remote_targets(&[url], secure).map_err(failed)?.remove(0);
            target.name = name.into();
            Ok(target)
        })
        .collect()
}
