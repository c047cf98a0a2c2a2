//! [`Front`]: what every connection of a server shares, whatever its service: limits, timeouts, counters,
//! the shutdown flag.

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Duration;

use super::cli::FrontArgs;
use super::metrics::Metrics;
use super::routes::Limits;

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
}

impl Front {
    /// The front door `args` describe.
    pub fn new(args: &FrontArgs) -> Front {
        Front {
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
        }
    }
}
