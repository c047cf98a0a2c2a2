//! [`Front`]: what every connection of a server shares, whatever its service: limits, timeouts, counters,
//! the shutdown flag, the TLS configuration and the tokens.

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

use super::access::{TokenFileError, Tokens};
use super::cli::FrontArgs;
use super::metrics::Metrics;
use super::routes::Limits;
use super::tls::{self, TlsError};

/// How long a client may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From the first byte of a request head to its end; and between reads of a body.
    pub header: Duration,
    /// Between requests on a keep-alive connection.
    pub idle: Duration,
}

/// State every connection of a server shares, whatever its service.
#[derive(Debug)]
pub struct Front {
    /// Counters.
    pub metrics: Metrics,
    /// Size limits.
    pub limits: Limits,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Set by SIGINT/SIGTERM.
    pub shutting_down: AtomicBool,
    /// Connections holding a request not yet answered.
    pub busy: AtomicUsize,
    /// Open connections.
    pub(super) open: AtomicUsize,
    pub(super) max_connections: usize,
    /// Serve HTTPS with this.
    pub(super) tls: Option<Arc<rustls::ServerConfig>>,
    /// Check bearer tokens against these.
    pub tokens: Option<Tokens>,
}

/// Why a server will not start with the options it was given.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The token file cannot be used.
    #[error(transparent)]
    Tokens(#[from] TokenFileError),
    /// Protected mode: a non-loopback address with nothing to tell clients apart.
    #[error(
        "refusing to serve {bind} without authentication: anyone who can reach it could read and overwrite \
         every key. Require tokens (--auth-token-file FILE), or client certificates (--tls-client-ca FILE \
         with --tls-cert and --tls-key), or, on a network you trust, pass --allow-unauthenticated"
    )]
    Unprotected {
        /// The address.
        bind: std::net::IpAddr,
    },
}

impl Front {
    /// The front door `args` describe: reads the certificates and tokens they name, and refuses (protected
    /// mode) to serve a non-loopback address without either tokens or client certificates unless
    /// `--allow-unauthenticated`.
    pub fn new(args: &FrontArgs) -> Result<Front, SecurityError> {
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(tls::server_config(cert, key, args.tls_client_ca.as_deref())?),
            _ => None,
        };
        let tokens = args.auth_token_file.as_deref().map(Tokens::from_file).transpose()?;
        let authenticated = tokens.is_some() || (tls.is_some() && args.tls_client_ca.is_some());
        if !args.bind.is_loopback() && !authenticated && !args.allow_unauthenticated {
            return Err(SecurityError::Unprotected { bind: args.bind });
        }
        Ok(Front {
            metrics: Metrics::default(),
            limits: Limits {
                max_key_bytes: args.max_key_bytes,
                max_value_bytes: args.max_value_bytes,
                panic_route: args.test_panic_route,
            },
            timeouts: Timeouts { header: args.header_timeout, idle: args.idle_timeout },
            shutting_down: AtomicBool::new(false),
            busy: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            max_connections: args.max_connections,
            tls,
            tokens,
        })
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}
