//! The front door every server here shares: bind, accept connections, shut down cleanly.
//!
//! [`serve`] runs any [`Service`] (the node's engine, the harness's routing proxy) behind the same
//! accept loop and connection layer:
//! - Connections beyond `--max-connections` get `503` and are closed at once.
//! - When `accept` fails for lack of file descriptors (or kernel memory) the loop sleeps and retries,
//!   instead of spinning on a listener that stays readable; it serves again once descriptors free up.
//! - SIGINT/SIGTERM: stop accepting, let requests in flight finish (bounded by the header timeout), and
//!   return, so the caller can flush. Idle keep-alive connections are simply closed by the exit.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::net::{TcpListener, TcpStream};

use super::conn::serve_connection;
use super::notify;
use super::service::Service;
use super::state::Front;

/// Why a server could not listen or start serving.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Binding the listening socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Another I/O failure at start.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

const STACK_WORDS: usize = 0x4000; // 128 KiB on 64-bit: room for the 64-header parse array and serde_json.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nServer: otkv\r\nConnection: close\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 21\r\n\r\ntoo many connections\n";

/// Coroutines (with their stacks) may keeps ready for new connections. may's default, 1,000, made each
/// started with 8 MB of stacks already touched (8 KB each): as much as 60,000 keys take in the table. A
/// connection beyond the pool costs one stack mapping when it opens; the pool refills as connections end.
const COROUTINE_POOL: usize = 64;

/// Sets up may's runtime for a server: `workers` unpinned worker threads (pinned workers were 30% slower
/// here, with clients on the same cores), 128 KiB coroutine stacks, a small pool of ready coroutines. Call
/// before any coroutine starts.
pub fn configure_runtime(workers: Option<usize>) -> usize {
    let workers = workers.unwrap_or(1).max(1);
    may::config().set_workers(workers).set_stack_size(STACK_WORDS).set_pool_capacity(COROUTINE_POOL);
    may::config().set_worker_pin(false);
    workers
}

/// Binds `bind:port`, returning the listener and the address it got (port 0 picks a free one).
pub fn bind(bind: IpAddr, port: u16) -> Result<(TcpListener, SocketAddr), ListenError> {
    let addr = SocketAddr::new(bind, port);
    let listener = TcpListener::bind(addr).map_err(|source| ListenError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(|source| ListenError::Io { what: "local address", source })?;
    Ok((listener, local))
}

/// Serves `service` on `listener` until SIGINT or SIGTERM, then lets requests in flight finish and
/// returns. Prints `listening on http://ADDR` (or `https://`) on stdout once it accepts (after `ready`, which starts any
/// coroutine the service needs).
pub fn serve<S: Service>(
    service: Arc<S>,
    listener: TcpListener,
    local: SocketAddr,
    ready: impl FnOnce(),
) -> Result<(), ListenError> {
    watch_signals(Arc::clone(&service), local)?;
    ready();
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "listening on {}://{local}", service.front().scheme());
    let _ = stdout.flush();
    drop(stdout);
    notify::ready(&format!("serving on {}://{local}", service.front().scheme()));
    if let Some(interval) = notify::watchdog_interval() {
        // Pinged from a coroutine, so a runtime that stops scheduling coroutines stops the pings too and
        // systemd restarts the server.
        let watched = Arc::clone(&service);
        spawn_coroutine(move || {
            while !watched.front().shutting_down.load(Relaxed) {
                notify::notify("WATCHDOG=1");
                may::coroutine::sleep(interval / 2);
            }
        });
    }

    let accept_service = Arc::clone(&service);
    let accept = spawn_coroutine(move || accept_loop(listener, &accept_service));
    if accept.join().is_err() {
        tracing::error!("accept loop panicked");
    }

    // Let requests in flight finish, bounded so a stalled client cannot hold the shutdown.
    let front = service.front();
    let deadline = Instant::now() + front.timeouts.header.min(Duration::from_secs(30));
    while front.busy.load(Relaxed) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn accept_loop<S: Service>(listener: TcpListener, service: &Arc<S>) {
    let front = service.front();
    let mut last_warning: Option<Instant> = None;
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) => {
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                ) {
                    if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                        tracing::warn!(error = %e, "cannot accept connections: out of resources; backing off");
                        last_warning = Some(Instant::now());
                    }
                    may::coroutine::sleep(Duration::from_millis(50));
                } else {
                    tracing::debug!(error = %e, "accept failed");
                }
                continue;
            }
        };
        if front.shutting_down.load(Relaxed) {
            return;
        }
        if front.open.load(Relaxed) >= front.max_connections {
            front.metrics.connection_refused();
            if front.tls.is_none() {
                refuse(stream);
            }
            // Over TLS the refusal is the close itself: answering would cost a handshake per refused
            // connection, which is what the cap protects.
            continue;
        }
        front.open.fetch_add(1, Relaxed);
        front.metrics.connection_delta(1);
        let service = Arc::clone(service);
        spawn_coroutine(move || {
            let _open = OpenConnection(service.front());
            if catch_unwind(AssertUnwindSafe(|| serve_connection(stream, &*service))).is_err() {
                tracing::error!("connection task panicked; closed that connection");
            }
        });
    }
}

fn refuse(mut stream: TcpStream) {
    // A fresh socket's send buffer is empty, so this short write completes without waiting.
    let _ = stream.write_all(REFUSED);
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// Decrements the open-connection count when the connection's task ends, however it ends.
struct OpenConnection<'a>(&'a Front);
impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
        self.0.metrics.connection_delta(-1);
    }
}

/// On SIGINT/SIGTERM: mark shutdown, then wake the accept loop with a connection to ourselves. On SIGHUP:
/// re-read the configuration file (what can change live) and the token file (connections stay open; each drops its cached token check at its next request).
fn watch_signals<S: Service>(service: Arc<S>, local: SocketAddr) -> Result<(), ListenError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGXFSZ};
    // A write past the file-size limit (RLIMIT_FSIZE) would kill the process with SIGXFSZ; handled, the
    // write fails with EFBIG instead, and the engine treats it like any failed write: writes stop with
    // 503 and a reason, reads go on (the same path as a failed fsync).
    signal_hook::flag::register(SIGXFSZ, Arc::new(AtomicBool::new(false)))
        .map_err(|source| ListenError::Io { what: "installing signal handlers", source })?;
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|source| ListenError::Io { what: "installing signal handlers", source })?;
    let wake = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), local.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), local.port()),
        _ => local,
    };
    std::thread::Builder::new()
        .name("otkv-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGHUP {
                    notify::reloading();
                    crate::config::reload();
                    reload_tokens(service.front());
                    service.reload();
                    notify::ready("serving (reloaded)");
                    continue;
                }
                tracing::info!(signal, "shutting down");
                notify::stopping();
                service.front().shutting_down.store(true, Relaxed);
                let _ = std::net::TcpStream::connect_timeout(&wake, Duration::from_secs(1));
                break;
            }
        })
        .map_err(|source| ListenError::Io { what: "starting the signal thread", source })?;
    Ok(())
}

fn reload_tokens(front: &Front) {
    let Some(tokens) = &front.tokens else {
        tracing::info!("SIGHUP: no --auth-token-file to re-read");
        return;
    };
    match tokens.reload() {
        Ok(count) => tracing::info!(count, file = %tokens.path().display(), "SIGHUP: tokens re-read"),
        Err(e) => tracing::error!(error = %e, "SIGHUP: tokens not re-read; the previous ones stay in force"),
    }
}

/// Spawns a coroutine on may's runtime.
#[allow(unsafe_code)]
pub fn spawn_coroutine<F>(f: F) -> may::coroutine::JoinHandle<()>
where
    F: FnOnce() + Send + 'static,
{
    // SAFETY: may marks spawn unsafe for two hazards. (1) Thread-local storage: a coroutine may move between
    // worker threads at a yield, so a TLS reference held across a yield could point at another thread's
    // slot. Our coroutines hold none across a yield: the only thread-bound state is flurry's epoch guard,
    // which lives inside `Engine::batch`, whose closure does no I/O and cannot yield; a `Service` must hold
    // none across its I/O either (its documented contract). (2) Stack overflow: the stack is set to
    // STACK_WORDS (128 KiB) in `configure_runtime`, well above the deepest handler path.
    unsafe { may::coroutine::spawn(f) }
}
