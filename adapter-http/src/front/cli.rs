//! [`FrontArgs`]: the listening and hardening options every server here shares (the node and the
//! harness's routing proxy).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How a server listens, and the limits it holds every client to.
#[derive(Debug, Clone, clap::Args)]
pub struct FrontArgs {
    /// Address to listen on. Loopback by default: expose a server deliberately.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Worker threads running connections. Default 1: a node is normally one of several per machine (the
    /// harness starts up to three), and one worker leaves the other cores to them and to clients. Give a
    /// lone server on a big machine one per core.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Longest key, in bytes after percent-decoding (longer: 414).
    #[arg(long, default_value_t = 1024)]
    pub max_key_bytes: usize,
    /// Largest value, in bytes (larger: 413, decided from Content-Length before the body is read).
    #[arg(long, default_value_t = 1_048_576)]
    pub max_value_bytes: usize,
    /// Open connections beyond this are answered 503 and closed.
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,
    /// A request head must arrive within this of its first byte, and a body must keep arriving.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// Serve HTTPS: this certificate chain (PEM, the server's own certificate first) ...
    #[arg(long, value_name = "FILE", requires = "tls_key", help_heading = "Security")]
    pub tls_cert: Option<PathBuf>,
    /// ... and its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert", help_heading = "Security")]
    pub tls_key: Option<PathBuf>,
    /// Require a client certificate signed by this CA (PEM) on every connection (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert", help_heading = "Security")]
    pub tls_client_ca: Option<PathBuf>,
    /// Require `Authorization: Bearer TOKEN` with a token from this file: one per line, `read TOKEN`
    /// (GET and HEAD, listings, /v1/stats, /metrics) or `write TOKEN` (everything). /healthz stays open.
    /// SIGHUP re-reads it without dropping connections.
    #[arg(long, value_name = "FILE", help_heading = "Security")]
    pub auth_token_file: Option<PathBuf>,
    /// Serve an address other than loopback without tokens or client certificates. Without this, such a
    /// server refuses to start: anyone who can reach it could read and overwrite every key.
    #[arg(long, help_heading = "Security")]
    pub allow_unauthenticated: bool,
    /// Serve `GET /debug/panic`, which panics (for tests of panic isolation).
    #[arg(long, hide = true)]
    pub test_panic_route: bool,
}
