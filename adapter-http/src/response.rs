//! Encoding responses straight into the connection's output buffer.
//!
//! Hand-written because it is the hot path: one response is a handful of `extend_from_slice` calls into a
//! buffer that is reused for the whole connection, and all responses of a pipelined batch leave in one write.
//! The `Date` header (required of an origin server with a clock, RFC 9110 §6.6.1) is formatted at most once
//! a second per connection.

use std::time::{SystemTime, UNIX_EPOCH};

/// Content types the server sends.
pub const OCTET_STREAM: &str = "application/octet-stream";
/// JSON bodies.
pub const JSON: &str = "application/json";
/// Short plain-text messages.
pub const TEXT: &str = "text/plain; charset=utf-8";
/// Prometheus text exposition format 0.0.4.
pub const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One response to encode.
#[derive(Debug)]
pub struct Reply<'a> {
    /// Status code.
    pub status: u16,
    /// `Content-Type`, when there is a body.
    pub content_type: Option<&'static str>,
    /// The body (its length is sent even for HEAD).
    pub body: &'a [u8],
    /// Value of an `Allow` header (405).
    pub allow: Option<&'static str>,
    /// The stored value's version and expiry: `ETag: "V"`, and `Expires` when it has one.
    pub entry: Option<otkv_engine::Meta>,
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

/// The headers every response starts with after its status line; the date fills the last 29 bytes.
const SERVER_DATE: &[u8; 22] = b"\r\nServer: otkv\r\nDate: ";

/// Per-connection encoder with a cached `Date` value.
#[derive(Debug)]
pub struct Encoder {
    /// [`SERVER_DATE`] and the date: one fixed-size copy per response.
    server_date: [u8; 22 + 29],
    date_secs: u64,
}

impl Default for Encoder {
    fn default() -> Self {
        let mut server_date = [b' '; 22 + 29];
        server_date[..22].copy_from_slice(SERVER_DATE);
        let mut e = Encoder { server_date, date_secs: u64::MAX };
        e.refresh_date();
        e
    }
}

impl Encoder {
    /// Re-formats the date if the second changed. Call once per batch of responses. Returns the time it
    /// read, so that the batch need not read the clock again to time itself.
    pub fn refresh_date(&mut self) -> SystemTime {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        if secs != self.date_secs {
            let text = httpdate::fmt_http_date(now);
            if text.len() == 29 {
                self.server_date[22..].copy_from_slice(text.as_bytes());
            }
            self.date_secs = secs;
        }
        now
    }

    /// Appends the encoded response to `out`.
    ///
    /// Room for the whole response is reserved first, so each append below is a copy without a reallocation;
    /// the status line is one literal per status code ([`status_line`]), not a number and a phrase.
    pub fn encode(&self, out: &mut Vec<u8>, reply: &Reply<'_>, framing: Framing) {
        let body: &[u8] = if framing.head_only { b"" } else { reply.body };
        out.reserve(MAX_HEAD + body.len());
        match status_line(reply.status) {
            Some(line) => out.extend_from_slice(line),
            None => {
                out.extend_from_slice(b"HTTP/1.1 ");
                out.extend_from_slice(itoa::Buffer::new().format(reply.status).as_bytes());
                out.extend_from_slice(b" Unknown");
            }
        }
        out.extend_from_slice(&self.server_date);
        if let Some(ct) = reply.content_type {
            out.extend_from_slice(b"\r\nContent-Type: ");
            out.extend_from_slice(ct.as_bytes());
        }
        if let Some(allow) = reply.allow {
            out.extend_from_slice(b"\r\nAllow: ");
            out.extend_from_slice(allow.as_bytes());
        }
        if let Some(meta) = reply.entry {
            out.extend_from_slice(b"\r\nETag: \"");
            out.extend_from_slice(itoa::Buffer::new().format(meta.version).as_bytes());
            out.push(b'"');
            if meta.expires_ms != 0 {
                let at = UNIX_EPOCH + std::time::Duration::from_millis(meta.expires_ms);
                out.extend_from_slice(b"\r\nExpires: ");
                out.extend_from_slice(httpdate::fmt_http_date(at).as_bytes());
            }
        }
        if framing.close {
            out.extend_from_slice(b"\r\nConnection: close");
        } else if framing.http10_keep_alive {
            out.extend_from_slice(b"\r\nConnection: keep-alive");
        }
        // 1xx and 204 carry no Content-Length (RFC 9110 §8.6), and a 304 has no body to measure.
        if reply.status != 204 && reply.status != 304 {
            out.extend_from_slice(b"\r\nContent-Length: ");
            out.extend_from_slice(itoa::Buffer::new().format(reply.body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(body);
    }
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
        Encoder::default().encode(&mut out, reply, framing);
        String::from_utf8(out).expect("ASCII")
    }

    const KEEP: Framing = Framing { close: false, http10_keep_alive: false, head_only: false };

    #[test]
    fn a_read_is_encoded_with_its_etag_and_length() {
        let entry = Some(otkv_engine::Meta { version: 42, expires_ms: 0 });
        let reply = Reply { status: 200, content_type: Some(OCTET_STREAM), body: b"abc", allow: None, entry };
        let text = encoded(&reply, KEEP);
        let date = text.split("Date: ").nth(1).and_then(|r| r.split("\r\n").next()).expect("a Date");
        assert_eq!(
            text,
            format!(
                "HTTP/1.1 200 OK\r\nServer: otkv\r\nDate: {date}\r\nContent-Type: application/octet-stream\r\n\
                 ETag: \"42\"\r\nContent-Length: 3\r\n\r\nabc"
            )
        );
        let head_only = Framing { head_only: true, ..KEEP };
        assert!(encoded(&reply, head_only).ends_with("Content-Length: 3\r\n\r\n"));
        let unknown = Reply { status: 299, content_type: None, body: b"", allow: None, entry: None };
        assert!(encoded(&unknown, KEEP).starts_with("HTTP/1.1 299 Unknown\r\n"));
        let no_content = Reply { status: 204, content_type: None, body: b"", allow: None, entry: None };
        assert!(!encoded(&no_content, KEEP).contains("Content-Length"));
    }

    #[test]
    fn the_longest_head_fits() {
        let entry = Some(otkv_engine::Meta { version: u64::MAX, expires_ms: 253_402_300_799_000 });
        let reply = Reply {
            status: 431,
            content_type: Some(PROMETHEUS),
            body: b"",
            allow: Some("GET, HEAD, POST, DELETE, PUT, OPTIONS"),
            entry,
        };
        let text = encoded(&reply, Framing { close: true, ..KEEP });
        assert!(text.contains("Expires: ") && text.contains("Connection: close"));
        // Room left for a Content-Length of 20 digits instead of 1.
        assert!(text.len() + 19 <= MAX_HEAD, "{} bytes", text.len());
    }
}
