//! What a run cost: every server's CPU time and resident memory, read from the server itself before and
//! after the measured window, and the harness's own CPU time.
//!
//! Servers are read over the network, as a monitoring system would, so nodes on other machines are
//! measured the same as local ones: an OTKV node or proxy through `GET /metrics` (the standard
//! `process_cpu_seconds_total` and `process_resident_memory_bytes`, and `otkv_requests_total` for the key
//! operations it answered), a redis-server through `INFO` (`used_cpu_user + used_cpu_sys`,
//! `used_memory_rss`, `total_commands_processed`). The harness's own CPU comes from `getrusage`.
//!
//! From two readings and the operations the harness counted in between, [`crate::report`] works out CPU
//! per operation, and from that a projection: how fast the nodes would go with a core each.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use otkv_adapter_http::front::tls::ClientConnection;

use crate::target::{Protocol, Target};

/// How long a reading may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// One reading of a server's counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// User plus system CPU time since it started, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size, in bytes.
    pub rss_bytes: u64,
    /// Requests it has answered (key operations for OTKV; commands for Redis), if it says.
    pub requests: Option<u64>,
}

/// What a server is in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// It stores keys.
    Node,
    /// It forwards requests to the nodes (`harness proxy`).
    Proxy,
}

/// A server whose cost a run measures.
#[derive(Debug, Clone)]
pub struct Metered {
    /// Where to read it.
    pub target: Target,
    /// What it is.
    pub role: Role,
}

/// Every metered server's reading (or why there is none), and the harness's CPU time, at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// In the order of the metered servers.
    pub servers: Vec<Result<Reading, String>>,
    /// The harness's user plus system CPU seconds.
    pub client_cpu_seconds: f64,
}

impl Snapshot {
    /// Reads every server in `metered`, then the harness's own CPU time.
    pub fn take(metered: &[Metered]) -> Snapshot {
        let servers = metered.iter().map(|m| read(&m.target)).collect();
        Snapshot { servers, client_cpu_seconds: client_cpu_seconds() }
    }
}

/// The harness's own user plus system CPU time (all its threads), in seconds.
pub fn client_cpu_seconds() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        secs(u.user_time()) + secs(u.system_time())
    })
}

/// The cores this machine gives the harness.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Reads one server's counters.
pub fn read(target: &Target) -> Result<Reading, String> {
    let failed = |e: String| format!("cannot read the counters of {} ({}): {e}", target.name, target.url());
    match target.protocol {
        Protocol::Http | Protocol::Etcd => {
            let (status, body) = http_get(target, "/metrics").map_err(failed)?;
            if status != 200 {
                return Err(failed(format!("/metrics answered {status}")));
            }
            parse_prometheus(&String::from_utf8_lossy(&body)).ok_or_else(|| {
                failed("its /metrics has no process_cpu_seconds_total (is it an OTKV server or etcd?)".into())
            })
        }
        Protocol::Resp => {
            let info = redis_info(target).map_err(failed)?;
            parse_redis_info(&info).ok_or_else(|| failed("its INFO has no used_cpu_user".into()))
        }
    }
}

/// One `GET path` on a new connection (`Connection: close`): status and body.
pub fn http_get(target: &Target, path: &str) -> Result<(u16, Vec<u8>), String> {
    http_call(target, "GET", path, &[], b"").map(|a| (a.status, a.body))
}

/// An answer of [`http_call`].
#[derive(Debug)]
pub struct HttpAnswer {
    /// Its status.
    pub status: u16,
    /// Its header fields, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: Vec<u8>,
}

impl HttpAnswer {
    /// One whole answer: its head, then everything after it as the body.
    pub fn parse(answer: &[u8]) -> Result<HttpAnswer, String> {
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut fields);
        match response.parse(answer) {
            Ok(httparse::Status::Complete(head)) => Ok(HttpAnswer {
                status: response.code.unwrap_or(0),
                headers: response
                    .headers
                    .iter()
                    .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
                    .collect(),
                body: answer[head..].to_vec(),
            }),
            _ => Err("no HTTP answer".into()),
        }
    }

    /// The value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// One request on a new connection (`Connection: close`), with extra header lines (`Name: value`)
/// and a body; with the target's token and over its TLS. For rare calls (counters, a mover), not load.
pub fn http_call(
    target: &Target,
    method: &str,
    path: &str,
    headers: &[String],
    body: &[u8],
) -> Result<HttpAnswer, String> {
    http_call_within(target, method, path, headers, body, READ_TIMEOUT)
}

/// [`http_call`], with `timeout` for the connect and each read and write instead of the harness's.
pub fn http_call_within(
    target: &Target,
    method: &str,
    path: &str,
    headers: &[String],
    body: &[u8],
    timeout: Duration,
) -> Result<HttpAnswer, String> {
    let mut stream = connect_within(target, timeout)?;
    let authorization = target.secure.authorization_line();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n{authorization}", target.host);
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    let mut bytes = request.into_bytes();
    bytes
        .extend_from_slice(format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()).as_bytes());
    bytes.extend_from_slice(body);
    stream.write_all(&bytes).map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(|e| e.to_string())?;
    HttpAnswer::parse(&answer)
}

/// A blocking stream to `target`, over TLS when it is `https://` or `rediss://`.
pub(crate) trait Stream: Read + Write {}
impl<S: Read + Write> Stream for S {}

/// A blocking connection to `target` (TLS when it is `https://`), with the harness's read timeout.
pub(crate) fn connect(target: &Target) -> Result<Box<dyn Stream>, String> {
    connect_within(target, READ_TIMEOUT)
}

/// A blocking connection to `target` (TLS when it is `https://`), with `timeout` for the connect and
/// each read and write.
fn connect_within(target: &Target, timeout: Duration) -> Result<Box<dyn Stream>, String> {
    let stream = TcpStream::connect_timeout(&target.addr, timeout).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let Some(config) = &target.secure.tls else { return Ok(Box::new(stream)) };
    let name = crate::wire::server_name(&target.host)
        .ok_or_else(|| format!("{}: not a TLS server name", target.host))?;
    let mut tls = ClientConnection::new(Arc::clone(config), name).map_err(|e| e.to_string())?;
    let mut stream = stream;
    // The handshake now, so a certificate the harness does not trust is the error said.
    tls.complete_io(&mut stream).map_err(|e| format!("TLS: {e}"))?;
    Ok(Box::new(rustls::StreamOwned::new(tls, stream)))
}

/// `INFO` (the default sections, which include `cpu`, `memory` and `stats`), as text.
fn redis_info(target: &Target) -> Result<String, String> {
    let mut stream = connect(target)?;
    let mut command = Vec::new();
    if let Some(token) = &target.secure.token {
        command.extend_from_slice(format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{token}\r\n", token.len()).as_bytes());
    }
    command.extend_from_slice(b"*1\r\n$4\r\nINFO\r\n");
    stream.write_all(&command).map_err(|e| e.to_string())?;
    let mut authenticating = target.secure.token.is_some();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the INFO reply was complete".into());
        }
        answer.extend_from_slice(&chunk[..n]);
        let mut found = answer.windows(2).position(|w| w == b"\r\n");
        if authenticating {
            let Some(line_end) = found else { continue };
            if &answer[..line_end] != b"+OK" {
                return Err(format!("AUTH answered {:?}", String::from_utf8_lossy(&answer[..line_end])));
            }
            answer.drain(..line_end + 2);
            authenticating = false;
            found = answer.windows(2).position(|w| w == b"\r\n");
        }
        let Some(line_end) = found else { continue };
        let head = String::from_utf8_lossy(&answer[..line_end]).into_owned();
        let len: usize = match head.strip_prefix('$').and_then(|l| l.parse().ok()) {
            Some(len) => len,
            None => return Err(format!("INFO answered {head:?}")),
        };
        if answer.len() >= line_end + 2 + len {
            return Ok(String::from_utf8_lossy(&answer[line_end + 2..line_end + 2 + len]).into_owned());
        }
    }
}

/// The process metrics and the key operations answered, from a Prometheus text exposition.
pub fn parse_prometheus(text: &str) -> Option<Reading> {
    let (mut cpu, mut rss, mut requests) = (None, None, None::<u64>);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else { continue };
        if name == "process_cpu_seconds_total" {
            cpu = value.parse::<f64>().ok();
        } else if name == "process_resident_memory_bytes" {
            // Go's Prometheus client writes large gauges in exponent form (`2.4576e+07`).
            rss = value.parse::<f64>().ok().map(|v| v as u64);
        } else if is_key_operation(name) {
            // Counters too may be written in exponent form by Go's client.
            requests = Some(requests.unwrap_or(0) + value.parse::<f64>().map_or(0, |v| v as u64));
        }
    }
    Some(Reading { cpu_seconds: cpu?, rss_bytes: rss.unwrap_or(0), requests })
}

/// Whether the counter series `name` (with its labels) counts key operations: an OTKV node's gets,
/// heads, puts, posts and deletes, or etcd's key-value calls (its JSON gateway's requests arrive as these).
fn is_key_operation(name: &str) -> bool {
    if let Some(labels) = name.strip_prefix("otkv_requests_total{") {
        return ["get", "head", "put", "post", "delete"]
            .iter()
            .any(|op| labels.contains(&format!("op=\"{op}\"")));
    }
    if let Some(labels) = name.strip_prefix("grpc_server_handled_total{") {
        return labels.contains("grpc_service=\"etcdserverpb.KV\"")
            && ["Put", "Range", "DeleteRange"]
                .iter()
                .any(|m| labels.contains(&format!("grpc_method=\"{m}\"")));
    }
    false
}

/// CPU, RSS and commands processed from Redis's `INFO`.
pub fn parse_redis_info(text: &str) -> Option<Reading> {
    let field = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':'))).map(str::trim)
    };
    let user: f64 = field("used_cpu_user")?.parse().ok()?;
    let sys: f64 = field("used_cpu_sys")?.parse().ok()?;
    Some(Reading {
        cpu_seconds: user + sys,
        rss_bytes: field("used_memory_rss").and_then(|v| v.parse().ok()).unwrap_or(0),
        requests: field("total_commands_processed").and_then(|v| v.parse().ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_gives_cpu_rss_and_key_operations() {
        let text = "# HELP x\nprocess_cpu_seconds_total 1.25\nprocess_resident_memory_bytes 4096\n\
                    otkv_requests_total{op=\"get\",code=\"200\"} 10\notkv_requests_total{op=\"get\",code=\"404\"} 2\n\
                    otkv_requests_total{op=\"put\",code=\"201\"} 5\notkv_requests_total{op=\"metrics\",code=\"200\"} 7\n";
        let r = parse_prometheus(text).expect("parses");
        assert_eq!(r, Reading { cpu_seconds: 1.25, rss_bytes: 4096, requests: Some(17) });
        assert_eq!(parse_prometheus("otkv_keys 3\n"), None);
    }

    #[test]
    fn etcd_metrics_give_cpu_rss_and_key_calls() {
        let text = "process_cpu_seconds_total 0.5\nprocess_resident_memory_bytes 2.4576e+07\n\
                    grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 3\n\
                    grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 4\n\
                    grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Check\",grpc_service=\"grpc.health.v1.Health\",grpc_type=\"unary\"} 9\n";
        let r = parse_prometheus(text).expect("parses");
        assert_eq!(r, Reading { cpu_seconds: 0.5, rss_bytes: 24_576_000, requests: Some(7) });
    }

    #[test]
    fn redis_info_gives_cpu_rss_and_commands() {
        let text = "# CPU\r\nused_cpu_sys:0.5\r\nused_cpu_user:1.5\r\nused_cpu_sys_children:9\r\n\
                    used_memory_rss:1048576\r\nused_memory_rss_human:1M\r\ntotal_commands_processed:42\r\n";
        let r = parse_redis_info(text).expect("parses");
        assert_eq!(r, Reading { cpu_seconds: 2.0, rss_bytes: 1_048_576, requests: Some(42) });
        assert_eq!(parse_redis_info("used_cpu_user:1\r\n"), None);
    }
}
