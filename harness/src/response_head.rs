//! The strict reader of an HTTP answer: what the harness's client and the proxy accept from a node.
//!
//! A node is not trusted more than a client. The proxy's front door holds requests to a set of rules
//! (`otkv_adapter_http::request`); answers from upstream are held to the same ones, and to the narrower
//! shape of what an OTKV node sends: a status line, at most [`MAX_ANSWER_HEADERS`] headers in at most
//! [`MAX_HEAD_BYTES`], a body framed only by one `Content-Length` (parsed by the front door's own
//! parser), no larger than the reader allows, and interim answers only when asked for. Anything else —
//! chunked or close-delimited bodies, a 1xx nobody asked for, a length that overflows or repeats — is an
//! [`Invalid`] answer, never a guess: the connection it came on can no longer be trusted and is closed.
//!
//! [`parse_head`] is pure (bytes in, a verdict out), so the rules are tested without sockets; the
//! reading loop is `HttpConn::read_meta` (`client.rs`).

use otkv_adapter_http::front::parse_content_length;

pub use otkv_adapter_http::front::MAX_HEAD_BYTES;

/// The most header fields an answer may carry (a node sends fewer than ten).
pub const MAX_ANSWER_HEADERS: usize = 32;

/// What the reader allows the next answer to be, from the request it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerRules {
    /// It answers a HEAD request: no body, whatever `Content-Length` says.
    pub head_only: bool,
    /// The request carried `Expect: 100-continue`, so one `100 Continue` may come first.
    pub continue_ok: bool,
    /// The largest body allowed.
    pub max_body: usize,
}

impl AnswerRules {
    /// An answer to a GET or PUT with a body of at most `max_body` bytes.
    pub fn body_up_to(max_body: usize) -> AnswerRules {
        AnswerRules { head_only: false, continue_ok: false, max_body }
    }
}

/// Why an answer is not one a node could have sent. Its `Display` completes "sent an invalid answer: …".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// Not an HTTP/1.x status line and headers.
    #[error("not an HTTP/1.1 response head")]
    Malformed,
    /// No end of head within the cap.
    #[error("a response head over {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    /// More header fields than any node sends.
    #[error("more than {MAX_ANSWER_HEADERS} header fields")]
    TooManyHeaders,
    /// A `Content-Length` that is not plain digits, or overflows.
    #[error("an invalid Content-Length")]
    BadLength,
    /// Two `Content-Length` fields.
    #[error("more than one Content-Length")]
    DuplicateLength,
    /// A `Transfer-Encoding` (chunked or any other): nodes frame every body by its length.
    #[error("a Transfer-Encoding body (nodes send Content-Length)")]
    TransferEncoding,
    /// A body with no length: it would end only when the connection closes.
    #[error("a body without Content-Length (delimited by close)")]
    NoLength,
    /// A body larger than the answer may be.
    #[error("a body of {len} bytes, over the limit of {max}")]
    BodyTooLarge {
        /// What `Content-Length` said.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// An interim (1xx) answer that was not asked for.
    #[error("an unrequested interim answer {0}")]
    Interim(u16),
    /// Bytes nobody asked for: after the answers to the requests sent, or before any request.
    #[error("an answer nobody asked for")]
    Unsolicited,
}

/// A final answer's head, as [`parse_head`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerHead {
    /// Status code (200..=599).
    pub status: u16,
    /// Bytes of the head, up to and including its blank line.
    pub head_len: usize,
    /// Bytes of body that follow.
    pub body_len: usize,
    /// `Connection: close`: the node closes after it.
    pub close: bool,
    /// The version in its `ETag`, if it has one.
    pub etag: Option<u64>,
}

/// What the bytes at the start of `buf` are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// An interim `100 Continue` of this many bytes, allowed by the request: skip it.
    Continue(usize),
    /// A final answer's head.
    Final(AnswerHead),
}

/// Parses the answer head at the start of `buf`, under the rules above.
pub fn parse_head(buf: &[u8], expect: &AnswerRules) -> Result<Parsed, Invalid> {
    if buf.is_empty() {
        return Ok(Parsed::Partial);
    }
    // Uninitialised slots: httparse fills only those it uses (an initialised array costs a 1 KiB copy).
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_ANSWER_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed =
        httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, &mut headers);
    let head_len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => return Err(Invalid::HeadTooLarge),
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(Invalid::TooManyHeaders),
        Err(_) => return Err(Invalid::Malformed),
    };
    if head_len > MAX_HEAD_BYTES {
        return Err(Invalid::HeadTooLarge);
    }
    let status = resp.code.unwrap_or(0);
    let mut length = None;
    let mut close = false;
    let mut etag = None;
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            if length.is_some() {
                return Err(Invalid::DuplicateLength);
            }
            length = Some(parse_content_length(h.value).ok_or(Invalid::BadLength)?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(Invalid::TransferEncoding);
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= h.value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        } else if name.eq_ignore_ascii_case(b"etag") {
            etag = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().strip_prefix('"')?.strip_suffix('"')?.parse().ok());
        }
    }
    match status {
        100 if expect.continue_ok && length.is_none() => return Ok(Parsed::Continue(head_len)),
        100..=199 => return Err(Invalid::Interim(status)),
        200..=599 => {}
        _ => return Err(Invalid::Malformed),
    }
    // RFC 9112 §6.3: no body for HEAD, 204 and 304, whatever Content-Length says.
    let body_len = if expect.head_only || status == 204 || status == 304 {
        0
    } else {
        let len = length.ok_or(Invalid::NoLength)?;
        match usize::try_from(len) {
            Ok(n) if n <= expect.max_body => n,
            _ => return Err(Invalid::BodyTooLarge { len, max: expect.max_body }),
        }
    };
    Ok(Parsed::Final(AnswerHead { status, head_len, body_len, close, etag }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: AnswerRules = AnswerRules { head_only: false, continue_ok: false, max_body: 1000 };

    fn parse(raw: &str) -> Result<Parsed, Invalid> {
        parse_head(raw.as_bytes(), &GET)
    }

    fn head(raw: &str) -> AnswerHead {
        match parse(raw) {
            Ok(Parsed::Final(h)) => h,
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    #[test]
    fn what_a_node_sends_is_read() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nETag: \"7\"\r\n\r\nabc");
        assert_eq!((h.status, h.head_len, h.body_len, h.close, h.etag), (200, 49, 3, false, Some(7)));
        let h = head("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        assert_eq!((h.body_len, h.close), (0, true));
        let head_req = AnswerRules { head_only: true, ..GET };
        let Ok(Parsed::Final(h)) = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 99999\r\n\r\n", &head_req)
        else {
            panic!("a HEAD answer's length is not a body");
        };
        assert_eq!(h.body_len, 0);
        assert_eq!(parse("HTTP/1.1 200 OK\r\nContent-Len"), Ok(Parsed::Partial));
    }

    #[test]
    fn what_no_node_sends_is_invalid() {
        let cases = [
            ("HTTP/1.1 200 OK\r\n\r\nbody until close", Invalid::NoLength),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                Invalid::TransferEncoding,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
                Invalid::BodyTooLarge { len: 99_999_999_999, max: 1000 },
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 9999999999999999999\r\n\r\n",
                Invalid::BodyTooLarge { len: 9_999_999_999_999_999_999, max: 1000 },
            ),
            ("HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n", Invalid::BadLength),
            ("HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\n", Invalid::BadLength),
            ("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", Invalid::BadLength),
            ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", Invalid::DuplicateLength),
            ("HTTP/1.1 100 Continue\r\n\r\n", Invalid::Interim(100)),
            ("HTTP/1.1 103 Early Hints\r\n\r\n", Invalid::Interim(103)),
            ("HTTP/1.1 600 What\r\nContent-Length: 0\r\n\r\n", Invalid::Malformed),
            ("SSH-2.0-OpenSSH_9.2\r\n", Invalid::Malformed),
        ];
        for (raw, want) in cases {
            assert_eq!(parse(raw), Err(want), "{raw:?}");
        }
        let long = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(parse(&long), Err(Invalid::HeadTooLarge));
        let many = (0..=MAX_ANSWER_HEADERS).map(|i| format!("X-{i}: 1\r\n")).collect::<Vec<_>>().concat();
        assert_eq!(parse(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")), Err(Invalid::TooManyHeaders));
    }

    #[test]
    fn a_continue_is_allowed_only_when_asked_for() {
        let asked = AnswerRules { continue_ok: true, ..GET };
        assert_eq!(
            parse_head(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201", &asked),
            Ok(Parsed::Continue(25))
        );
        assert_eq!(parse_head(b"HTTP/1.1 101 Switching\r\n\r\n", &asked), Err(Invalid::Interim(101)));
    }
}
