//! Request counters and latency histogram, exposed as Prometheus text (`/metrics`) and JSON (`/v1/stats`).
//!
//! Everything is a relaxed atomic in fixed arrays: recording a request is two increments and a bucket
//! search, with no lock and no allocation, so metrics stay on in benchmarks.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::process::ProcessStats;
use super::prometheus::{Exposition, Kind};

/// What a request did, as the `op` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `GET /v1/kv/{key}`
    Get,
    /// `HEAD /v1/kv/{key}`
    Head,
    /// `PUT /v1/kv/{key}`
    Put,
    /// `DELETE /v1/kv/{key}`
    Delete,
    /// `GET /v1/kv?prefix=`
    Scan,
    /// `GET /{key}` (compatible API)
    CompatGet,
    /// `POST /{key}` (compatible API)
    CompatPost,
    /// `DELETE /{key}` (compatible API)
    CompatDelete,
    /// `/healthz`, `/metrics`, `/v1/stats`
    Admin,
    /// Anything that failed before it was routed.
    Other,
}

const OPS: [(Op, &str); 10] = [
    (Op::Get, "get"),
    (Op::Head, "head"),
    (Op::Put, "put"),
    (Op::Delete, "delete"),
    (Op::Scan, "scan"),
    (Op::CompatGet, "compat_get"),
    (Op::CompatPost, "compat_post"),
    (Op::CompatDelete, "compat_delete"),
    (Op::Admin, "admin"),
    (Op::Other, "other"),
];

const CODES: [u16; 24] = [
    200, 201, 204, 304, 400, 401, 403, 404, 405, 406, 408, 411, 412, 413, 414, 417, 431, 500, 501, 502, 503,
    504, 507, 0,
];

/// Upper bounds of the latency buckets, in nanoseconds (`+Inf` is implicit): the hot path searches
/// integers; the exposition writes them in seconds.
const BUCKET_NS: [u64; 16] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];

/// `ns` in seconds (exactly the decimal bound: both operands are exact, and the quotient is rounded once).
fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn code_index(status: u16) -> usize {
    CODES.iter().position(|&c| c == status).unwrap_or(CODES.len() - 1)
}

/// The server's counters.
#[derive(Debug)]
pub struct Metrics {
    requests: [[AtomicU64; CODES.len()]; OPS.len()],
    buckets: [AtomicU64; BUCKET_NS.len() + 1],
    duration_sum_ns: AtomicU64,
    connections: AtomicI64,
    connections_refused: AtomicU64,
    started: Instant,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            duration_sum_ns: AtomicU64::new(0),
            connections: AtomicI64::new(0),
            connections_refused: AtomicU64::new(0),
            started: Instant::now(),
        }
    }
}

impl Metrics {
    /// Counts one answered request and how long the server spent on it.
    pub fn record(&self, op: Op, status: u16, nanos: u64) {
        self.count(op, status);
        self.record_durations(1, nanos);
    }

    /// Counts one answered request whose time is recorded later, with its batch's
    /// ([`Metrics::record_durations`]).
    #[inline]
    pub fn count(&self, op: Op, status: u16) {
        self.requests[op as usize][code_index(status)].fetch_add(1, Relaxed);
    }

    /// Records `n` requests that took `total_nanos` together, each at their average: a pipelined batch
    /// reads the clock once, not once per request.
    pub fn record_durations(&self, n: u64, total_nanos: u64) {
        let each = total_nanos / n.max(1);
        let bucket = BUCKET_NS.iter().position(|&b| each <= b).unwrap_or(BUCKET_NS.len());
        self.buckets[bucket].fetch_add(n, Relaxed);
        self.duration_sum_ns.fetch_add(total_nanos, Relaxed);
    }

    /// A connection opened (`+1`) or closed (`-1`).
    pub fn connection_delta(&self, delta: i64) {
        self.connections.fetch_add(delta, Relaxed);
    }

    /// A connection was refused at `--max-connections`.
    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Relaxed);
    }

    /// Open connections.
    pub fn connections(&self) -> i64 {
        self.connections.load(Relaxed)
    }

    /// Requests answered so far, by `op` label.
    pub fn requests_by_op(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        OPS.iter().map(|&(op, name)| (name, self.requests[op as usize].iter().map(|c| c.load(Relaxed)).sum()))
    }

    /// How long since the server started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The front door's counters in Prometheus text, then the process's. `in_flight`: connections holding
    /// a request not yet answered.
    pub fn prometheus(&self, in_flight: usize) -> Exposition {
        let mut e = Exposition::with_capacity(4096);
        let name = "otkv_requests_total";
        e.family(name, Kind::Counter, "Requests answered, by operation and status code.");
        for &(op, op_name) in &OPS {
            for (i, &code) in CODES.iter().enumerate() {
                let n = self.requests[op as usize][i].load(Relaxed);
                if n > 0 {
                    let code: &dyn std::fmt::Display = if code == 0 { &"other" } else { &code };
                    e.sample(name, &[("op", &op_name), ("code", code)], n);
                }
            }
        }
        let name = "otkv_request_duration_seconds";
        e.family(name, Kind::Histogram, "Server time per request (a pipelined batch: its average).");
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Relaxed);
            let le = BUCKET_NS.get(i).map_or_else(|| "+Inf".to_string(), |&ns| seconds(ns).to_string());
            e.sample("otkv_request_duration_seconds_bucket", &[("le", &le)], cumulative);
        }
        e.sample("otkv_request_duration_seconds_sum", &[], self.duration_sum_ns.load(Relaxed) as f64 * 1e-9);
        e.sample("otkv_request_duration_seconds_count", &[], cumulative);
        e.single("otkv_connections", Kind::Gauge, "Open client connections.", self.connections());
        let help = "Connections holding a request not yet answered.";
        e.single("otkv_requests_in_flight", Kind::Gauge, help, in_flight);
        let help = "Connections refused at --max-connections.";
        e.single(
            "otkv_connections_refused_total",
            Kind::Counter,
            help,
            self.connections_refused.load(Relaxed),
        );
        if let Some(process) = ProcessStats::read() {
            process.write_prometheus(&mut e);
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_bounds_are_written_in_seconds() {
        let labels: Vec<String> = BUCKET_NS.iter().map(|&ns| seconds(ns).to_string()).collect();
        assert_eq!(labels[..3], ["0.00001", "0.000025", "0.00005"]);
        assert_eq!(labels[12..], ["0.1", "0.25", "0.5", "1"]);
    }
}
