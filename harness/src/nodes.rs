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

use crate::load::Target;
use crate::router::{node_names, RoutingArgs};

/// How long a node may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// How the harness starts local nodes, as `harness run` and `harness proxy` both take it.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct LocalNodeArgs {
    /// Engine of the nodes the harness starts: memory or sled.
    #[arg(long, default_value = "memory")]
    pub engine: String,
    /// Durability of the nodes the harness starts: none, periodic or sync.
    #[arg(long, default_value = "none")]
    pub durability: String,
    /// Worker threads of each node the harness starts.
    #[arg(long, default_value_t = 1)]
    pub node_workers: usize,
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
        nodes.targets.push(Target { name, addr, host: addr.to_string() });
    }
    Ok(nodes)
}

/// Starts `harness proxy` in front of `nodes` (named as they are), routing with `routing`; its one
/// target is the proxy, named `proxy`.
pub fn start_proxy(nodes: &[Target], routing: &RoutingArgs) -> Result<LocalNodes, String> {
    let (router, vnodes) = (crate::report::wire_name(&routing.router), routing.vnodes.to_string());
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
        targets: vec![Target { name: "proxy".into(), addr, host: addr.to_string() }],
    })
}

/// Runs this executable with `args`, waiting for its `listening on http://ADDR` line (killed if it
/// does not print one in time).
fn spawn_server(name: &str, args: &[OsString]) -> Result<(Child, SocketAddr), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the harness executable: {e}"))?;
    let mut child = Command::new(&exe)
        .args(args)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))?;
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
        }
        self.children.clear();
    }
}

impl Drop for LocalNodes {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Targets for `--node URL` arguments, named `node-0`, `node-1`, ... in the order given.
pub fn remote_targets(urls: &[String]) -> Result<Vec<Target>, String> {
    urls.iter()
        .zip(node_names(urls.len()))
        .map(|(url, name)| {
            let host = url
                .trim_end_matches('/')
                .strip_prefix("http://")
                .ok_or_else(|| format!("--node {url}: expected http://HOST:PORT (https is not supported)"))?;
            let addr = host
                .to_socket_addrs()
                .map_err(|e| format!("--node {url}: {e}"))?
                .next()
                .ok_or_else(|| format!("--node {url}: no address"))?;
            Ok(Target { name, addr, host: host.to_string() })
        })
        .collect()
}

/// How many nodes the `harness proxy` at `proxy` fronts (from its `/v1/stats`).
pub fn proxy_node_count(proxy: &Target) -> Result<usize, String> {
    use std::io::{Read, Write};
    let failed = |e: String| format!("--proxy http://{}: {e}", proxy.host);
    let mut stream = std::net::TcpStream::connect_timeout(&proxy.addr, Duration::from_secs(5))
        .map_err(|e| failed(e.to_string()))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!("GET /v1/stats HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", proxy.host);
    stream.write_all(request.as_bytes()).map_err(|e| failed(e.to_string()))?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(|e| failed(e.to_string()))?;
    let body = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| &answer[i + 4..])
        .ok_or_else(|| failed("no HTTP answer".into()))?;
    let stats: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| failed(format!("not a proxy: {e}")))?;
    stats["totals"]["nodes"]
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| failed("its /v1/stats has no totals.nodes: is it a harness proxy?".into()))
}
