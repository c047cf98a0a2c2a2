//! Encoding responses straight into the connection's output buffer.
//!
//! Hand-written because it is the hot path: one response is a handful of `extend_from_slice` calls into a
//! buffer that is reused for the whole connection, and all responses of a pipelined batch leave in one write.
//! The `Date` header (required of an origin server with a clock, RFC 9110 §6.6.1) is formatted at most once
//! a second per connection, and the head of the last response is kept whole for the next one like it
//! ([`Encoder`]).

use std::time::{Duration, UNIX_EPOCH};

/// A `Content-Type` the server sends, kept as its whole header line: one copy per response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentType(&'static str);

/// Stored values.
pub const OCTET_STREAM: ContentType = ContentType("\r\nContent-Type: application/octet-stream");
/// JSON bodies.
pub const JSON: ContentType = ContentType("\r\nContent-Type: application/json");
/// Short plain-text messages.
pub const TEXT: ContentType = ContentType("\r\nContent-Type: text/plain; charset=utf-8");
/// Prometheus text exposition format 0.0.4.
pub const PROMETHEUS: ContentType = ContentType("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8");

/// What a response says about a stored value: its version (`ETag: "V"`) and its expiry (`Expires`).
/// The service's own metadata, in the front door's terms: the front door knows no store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryMeta {
    /// The value's version: the entity-tag.
    pub version: u64,
    /// When it expires, in milliseconds since the Unix epoch; 0 for never.
    pub expires_ms: u64,
}

/// One response to encode.
#[derive(Debug)]
pub struct Reply<'a> {
    /// Status code.
    pub status: u16,
    /// `Content-Type`, when there is a body.
    pub content_type: Option<ContentType>,
    /// The body (its length is sent even for HEAD).
    pub body: &'a [u8],
    /// One more header, name and value: `Allow` (405), `WWW-Authenticate` (401).
    pub header: Option<(&'static str, &'static str)>,
    /// The stored value's version and expiry: `ETag: "V"`, and `OTKV-Expires` when it has one.
    pub entry: Option<EntryMeta>,
    /// `Location` (a `201 Created`: the path the value was created at).
    pub location: Option<&'a str>,
}

/// How the connection frames this response.
#[derive(Debug, Clone, Copy)]
pub struct Framing {
    /// Send `Connection: close` (the connection closes after this response).
    pub close: bool,
    /// The request was HTTP/1.0 with keep-alive: say `Connection: keep-alive`.
    pub http10_keep_alive: bool,
    /// HEAD request: send the headers, not the body.
    pub head_only: bool,
}

/// Nanoseconds since the Unix epoch by the realtime clock (0 if it cannot be read). One `clock_gettime`
/// and integer arithmetic: `SystemTime::now` plus `duration_since` cost about 80 instructions more per
/// batch, mostly in normalising the `Duration`s.
#[inline]
pub fn wall_clock_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME) {
        // A clock before 1970 reads as 0; `tv_nsec` is below 10^9.
        Ok(t) => (t.tv_sec().max(0) as u64).wrapping_mul(1_000_000_000).wrapping_add(t.tv_nsec() as u64),
        Err(_) => 0,
    }
}

/// The headers every response starts with after its status line; the date fills the last 29 bytes.
const SERVER_DATE: &[u8; 22] = b"\r\nServer: otkv\r\nDate: ";

/// Per-connection encoder: the cached `Date`, and the head of the last response.
///
/// Responses on one connection mostly repeat the same status line, content type, `Connection` header
/// and often the same length (a run of GETs of equal-sized values, a run of PUTs). Everything up to the
/// `ETag` value is kept as `prefix` and reused as one copy while those stay the same and the
/// second does not change; only the `ETag` and the body are written per response.
#[derive(Debug)]
pub struct Encoder {
    /// [`SERVER_DATE`] and the date.
    server_date: [u8; 22 + 29],
    date_secs: u64,
    /// The head of the response `prefix_of` describes, up to the `ETag` value (or the blank line).
    prefix: Vec<u8>,
    prefix_of: Option<PrefixOf>,
}

/// What decides a response's head up to its `ETag` value.
#[derive(Debug, Clone, Copy)]
struct PrefixOf {
    status: u16,
    content_type: Option<ContentType>,
    close: bool,
    http10_keep_alive: bool,
    /// The body's length (sent even for HEAD).
    length: usize,
    /// It carries an `ETag`.
    tagged: bool,
}

impl PrefixOf {
    /// The same head. Content types compare by address: the constants above are distinct, and two equal
    /// ones at different addresses would only rebuild the prefix.
    fn same(&self, other: &PrefixOf) -> bool {
        let same_type = match (self.content_type, other.content_type) {
            (Some(a), Some(b)) => std::ptr::eq(a.0, b.0),
            (None, None) => true,
            _ => false,
        };
        self.status == other.status
            && self.length == other.length
            && same_type
            && self.tagged == other.tagged
            && self.close == other.close
            && self.http10_keep_alive == other.http10_keep_alive
    }

    /// Whether the head carries a `Content-Length`: 1xx and 204 must not (RFC 9110 §8.6), and a 304
    /// has no body to measure.
    fn has_length(&self) -> bool {
        self.status != 204 && self.status != 304
    }
}

impl Default for Encoder {
    fn default() -> Self {
        let mut server_date = [b' '; 22 + 29];
        server_date[..22].copy_from_slice(SERVER_DATE);
        let mut e = Encoder { server_date, date_secs: u64::MAX, prefix: Vec::new(), prefix_of: None };
        e.refresh_date();
        e
    }
}

impl Encoder {
    /// Re-formats the date if the second changed. Call once per batch of responses. Returns the time it
    /// read ([`wall_clock_ns`]), so that the batch need not read the clock again to time itself.
    pub fn refresh_date(&mut self) -> u64 {
        let now = wall_clock_ns();
        let secs = now / 1_000_000_000;
        if secs != self.date_secs {
            let text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
            if text.len() == 29 {
                self.server_date[22..].copy_from_slice(text.as_bytes());
            }
            self.date_secs = secs;
            self.prefix_of = None;
        }
        now
    }

    /// Appends the encoded response to `out`.
    ///
    /// Room for the whole response is reserved first, so each append is a copy without a reallocation.
    /// The head is the cached prefix (status line, `Server`, `Date`, `Content-Type`, `Connection`,
    /// `Content-Length`, `ETag: "`), then the version, whose closing quote and the blank line are one
    /// piece (or `Expires` first).
    pub fn encode(&mut self, out: &mut Vec<u8>, reply: &Reply<'_>, framing: Framing) {
        let body: &[u8] = if framing.head_only { b"" } else { reply.body };
        let of = PrefixOf {
            status: reply.status,
            content_type: reply.content_type,
            close: framing.close,
            http10_keep_alive: framing.http10_keep_alive,
            length: reply.body.len(),
            tagged: reply.entry.is_some(),
        };
        out.reserve(MAX_HEAD + body.len());
        let extra = match (reply.header, reply.location) {
            (Some((name, value)), _) => Some((name, value.as_bytes())),
            (None, Some(path)) => Some(("Location", path.as_bytes())),
            (None, None) => None,
        };
        if extra.is_some() {
            // 201, 401 and 405 only: the line differs from response to response, or is rare.
            write_prefix(out, &self.server_date, &of, extra);
        } else {
            if !self.prefix_of.is_some_and(|cached| cached.same(&of)) {
                self.prefix.clear();
                write_prefix(&mut self.prefix, &self.server_date, &of, None);
                self.prefix_of = Some(of);
            }
            out.extend_from_slice(&self.prefix);
        }
        match reply.entry {
            Some(meta) => {
                push_decimal(out, meta.version);
                if meta.expires_ms != 0 {
                    let at = UNIX_EPOCH + Duration::from_millis(meta.expires_ms);
                    // Not `Expires`: in HTTP that is a freshness lifetime, letting every cache on the way
                    // serve this value unasked until then, after it was overwritten or deleted.
                    out.extend_from_slice(b"\"\r\nOTKV-Expires: ");
                    out.extend_from_slice(httpdate::fmt_http_date(at).as_bytes());
                    out.extend_from_slice(b"\r\n\r\n");
                } else {
                    out.extend_from_slice(b"\"\r\n\r\n");
                }
            }
            None => out.extend_from_slice(b"\r\n\r\n"),
        }
        out.extend_from_slice(body);
    }
}

/// Writes the head `of` describes, with the connection's `Server` and `Date` block, up to the `ETag`
/// value (or, without one, up to the blank line).
///
/// Every response says whether caches may keep it (RFC 9111). A stored value (anything with an `ETag`)
/// is `no-cache`: a cache may keep it but must ask the node before each reuse (`If-None-Match`, a 304
/// when unchanged), so an overwrite or a delete is never hidden by a cached copy. Everything else
/// (listings, stats, metrics, health, errors, deletes) is `no-store`: it changes from one request to
/// the next and is not worth a revalidation.
fn write_prefix(out: &mut Vec<u8>, server_date: &[u8], of: &PrefixOf, header: Option<(&str, &[u8])>) {
    if let Some(line) = status_line(of.status) {
        out.extend_from_slice(line);
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        push_decimal(out, u64::from(of.status));
        out.extend_from_slice(b" Unknown");
    }
    out.extend_from_slice(server_date);
    if let Some(ct) = of.content_type {
        out.extend_from_slice(ct.0.as_bytes());
    }
    if let Some((name, value)) = header {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
    }
    out.extend_from_slice(if of.tagged {
        b"\r\nCache-Control: no-cache"
    } else {
        b"\r\nCache-Control: no-store"
    });
    if of.close {
        out.extend_from_slice(b"\r\nConnection: close");
    } else if of.http10_keep_alive {
        out.extend_from_slice(b"\r\nConnection: keep-alive");
    }
    if of.has_length() {
        out.extend_from_slice(b"\r\nContent-Length: ");
        push_decimal(out, of.length as u64);
    }
    if of.tagged {
        out.extend_from_slice(b"\r\nETag: \"");
    }
}

/// Appends `n` in decimal.
#[inline]
fn push_decimal(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// More than the longest head the server sends (about 330 bytes: the longest status line, Prometheus'
/// content type, `Allow`, `ETag`, `Expires`, `Connection` and a 20-digit `Content-Length`;
/// `the_longest_head_fits` checks it).
const MAX_HEAD: usize = 512;

/// The status codes the server sends and their reason phrases, listed once in [`statuses!`] below.
macro_rules! statuses {
    ($($code:literal => $reason:literal,)*) => {
        /// `HTTP/1.1 CODE REASON` for a code the server sends (`None` for any other).
        fn status_line(status: u16) -> Option<&'static [u8]> {
            match status {
                $($code => Some(concat!("HTTP/1.1 ", $code, " ", $reason).as_bytes()),)*
                _ => None,
            }
        }
    };
}

statuses! {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        507 => "Insufficient Storage",
}

/// The interim response to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(reply: &Reply<'_>, framing: Framing) -> String {
        let mut out = Vec::new();
        let mut encoder = Encoder::default();
        encoder.encode(&mut out, reply, framing);
        // The second time from the cached prefix: the same bytes.
        let first = out.len();
        encoder.encode(&mut out, reply, framing);
        assert_eq!(out[..first], out[first..]);
        out.truncate(first);
        String::from_utf8(out).expect("ASCII")
    }

    const KEEP: Framing = Framing { close: false, http10_keep_alive: false, head_only: false };

    #[test]
    fn a_read_is_encoded_with_its_etag_and_length() {
        let entry = Some(EntryMeta { version: 42, expires_ms: 0 });
        let reply = Reply {
            status: 200,
            content_type: Some(OCTET_STREAM),
            body: b"abc",
            header: None,
            entry,
            location: None,
        };
        let text = encoded(&reply, KEEP);
        let date = text.split("Date: ").nth(1).and_then(|r| r.split("\r\n").next()).expect("a Date");
        assert_eq!(
            text,
            format!(
                "HTTP/1.1 200 OK\r\nServer: otkv\r\nDate: {date}\r\nContent-Type: application/octet-stream\r\n\
                 Cache-Control: no-cache\r\nContent-Length: 3\r\nETag: \"42\"\r\n\r\nabc"
            )
        );
        let head_only = Framing { head_only: true, ..KEEP };
        assert!(encoded(&reply, head_only).ends_with("Content-Length: 3\r\nETag: \"42\"\r\n\r\n"));
        let unknown =
            Reply { status: 299, content_type: None, body: b"", header: None, entry: None, location: None };
        assert!(encoded(&unknown, KEEP).starts_with("HTTP/1.1 299 Unknown\r\n"));
        let no_content =
            Reply { status: 204, content_type: None, body: b"", header: None, entry: None, location: None };
        assert!(!encoded(&no_content, KEEP).contains("Content-Length"));
    }

    #[test]
    fn a_cached_head_is_rebuilt_when_the_response_differs() {
        let entry = |version| Some(EntryMeta { version, expires_ms: 0 });
        let replies = [
            Reply {
                status: 200,
                content_type: Some(OCTET_STREAM),
                body: b"abc",
                header: None,
                entry: entry(1),
                location: None,
            },
            Reply {
                status: 200,
                content_type: Some(OCTET_STREAM),
                body: b"abcd",
                header: None,
                entry: entry(2),
                location: None,
            },
            Reply {
                status: 200,
                content_type: Some(JSON),
                body: b"abcd",
                header: None,
                entry: entry(3),
                location: None,
            },
            Reply {
                status: 201,
                content_type: Some(JSON),
                body: b"abcd",
                header: None,
                entry: entry(4),
                location: None,
            },
            Reply {
                status: 201,
                content_type: Some(JSON),
                body: b"abcd",
                header: None,
                entry: None,
                location: None,
            },
            Reply {
                status: 204,
                content_type: None,
                body: b"",
                header: None,
                entry: entry(5),
                location: None,
            },
            Reply {
                status: 405,
                content_type: Some(TEXT),
                body: b"no",
                header: Some(("Allow", "GET")),
                entry: None,
                location: None,
            },
            Reply {
                status: 201,
                content_type: Some(TEXT),
                body: b"",
                header: None,
                entry: entry(7),
                location: Some("/v1/kv/a"),
            },
            Reply {
                status: 204,
                content_type: None,
                body: b"",
                header: None,
                entry: entry(6),
                location: None,
            },
        ];
        let framings = [KEEP, Framing { close: true, ..KEEP }, Framing { http10_keep_alive: true, ..KEEP }];
        let mut shared = Encoder::default();
        for framing in framings {
            for reply in &replies {
                let (mut one, mut fresh) = (Vec::new(), Vec::new());
                shared.encode(&mut one, reply, framing);
                Encoder::default().encode(&mut fresh, reply, framing);
                assert_eq!(String::from_utf8_lossy(&one), String::from_utf8_lossy(&fresh));
            }
        }
    }

    #[test]
    fn the_longest_head_fits() {
        let entry = Some(EntryMeta { version: u64::MAX, expires_ms: 253_402_300_799_000 });
        let reply = Reply {
            status: 431,
            content_type: Some(PROMETHEUS),
            body: b"",
            header: Some(("Allow", "GET, HEAD, POST, DELETE, PUT, OPTIONS")),
            entry,
            location: None,
        };
        let text = encoded(&reply, Framing { close: true, ..KEEP });
        assert!(text.contains("OTKV-Expires: ") && text.contains("Connection: close"));
        // Room left for a Content-Length of 20 digits instead of 1.
        assert!(text.len() + 19 <= MAX_HEAD, "{} bytes", text.len());
    }
}
