//! The nodes a run talks to: ones the harness starts itself, or ones given by URL.
//!
//! Local nodes are real `otkv-server` processes: the harness runs its own executable as `harness node ...`,
//! which is the adapter's server code (`otkv_adapter_http::run`), so a fresh clone needs no second build
//! step. Each gets `--port 0` and reports its address on its first stdout line; each has its own data
//! directory under a temporary directory, removed afterwards unless `--keep-data`.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::load::Target;
use crate::router::node_names;

/// How long a node may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

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

/// Nodes started by the harness; stopped (SIGTERM, then kill) when dropped.
#[derive(Debug)]
pub struct LocalNodes {
    children: Vec<Child>,
    /// Where to send requests.
    pub targets: Vec<Target>,
}

/// Starts `n` nodes with data directories under `data_root`.
pub fn start_local(n: usize, opts: &NodeOptions, data_root: &Path) -> Result<LocalNodes, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the harness executable: {e}"))?;
    let mut nodes = LocalNodes { children: Vec::new(), targets: Vec::new() };
    for name in node_names(n) {
        let dir: PathBuf = data_root.join(&name);
        let mut child = Command::new(&exe)
            .arg("node")
            .args(["--port", "0", "--engine", &opts.engine, "--durability", &opts.durability])
            .args(["--workers", &opts.workers.to_string()])
            .arg("--data-dir")
            .arg(&dir)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        nodes.children.push(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(START_TIMEOUT).map_err(|_| format!("{name} did not start in time"))?;
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .ok_or_else(|| format!("{name} failed to start (said {:?})", line.trim()))?;
        nodes.targets.push(Target { name, addr, host: addr.to_string() });
    }
    Ok(nodes)
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
