//! Parsing one request head and deciding how its body is framed.
//!
//! `httparse` does the tokenising; this module applies the rules httparse leaves to its caller, which are the
//! ones that keep a connection's byte stream trustworthy (RFC 9112 §6):
//! - `Content-Length` must be plain digits; several must agree; with `Transfer-Encoding` it is an error.
//! - `Transfer-Encoding` is refused (411 for chunked, 501 otherwise): a body we cannot frame is never stored.
//! - The head is capped in bytes and in header count (431), before it is buffered any further.

use crate::error::HttpError;

/// The most header fields a request may carry.
pub const MAX_HEADERS: usize = 64;

/// The request methods the routes know; anything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// PUT
    Put,
    /// POST
    Post,
    /// DELETE
    Delete,
    /// Any other method.
    Other,
}

/// What the connection layer needs to know about a parsed request head.
#[derive(Debug)]
pub struct Head<'b> {
    /// The method.
    pub method: Method,
    /// The request target as sent (origin form: path and query).
    pub target: &'b str,
    /// Length of the head in bytes, up to and including the blank line.
    pub head_len: usize,
    /// Length of the body that follows the head.
    pub body_len: u64,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    /// HTTP/1.0 (the response then says `Connection: keep-alive` when it keeps the connection).
    pub http10: bool,
    /// The client sent `Expect: 100-continue`.
    pub expect_continue: bool,
    /// `If-Match` / `If-None-Match`, as sent (checked by the handler that uses them).
    pub preconditions: Preconditions<'b>,
}

/// The conditional-request headers of a request (RFC 9110 §13), unparsed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Preconditions<'b> {
    /// `If-Match`.
    pub if_match: Option<&'b [u8]>,
    /// `If-None-Match`.
    pub if_none_match: Option<&'b [u8]>,
}

/// Parses the head at the start of `buf`: `Ok(None)` when it is not complete yet.
pub fn parse(buf: &[u8], max_head: usize) -> Result<Option<Head<'_>>, HttpError> {
    // Uninitialised slots: httparse writes only the headers it finds (initialising all 64 slots of
    // 32 bytes cost about a tenth of a pipelined request's instructions).
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > max_head {
                Err(HttpError::HeaderTooLarge { max: max_head })
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders { max: MAX_HEADERS }),
        Err(e) => return Err(HttpError::Malformed(e.to_string())),
    };
    if head_len > max_head {
        return Err(HttpError::HeaderTooLarge { max: max_head });
    }
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        Some("PUT") => Method::Put,
        Some("POST") => Method::Post,
        Some("DELETE") => Method::Delete,
        _ => Method::Other,
    };
    let target = req.path.unwrap_or("");
    if !target.starts_with('/') {
        return Err(HttpError::Malformed("request target must be an absolute path".into()));
    }
    let http10 = req.version == Some(0);

    let mut content_length: Option<u64> = None;
    let mut transfer_encoding: Option<&[u8]> = None;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut expect_continue = false;
    let mut has_host = false;
    let mut preconditions = Preconditions::default();
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(h.value)?;
            if content_length.is_some_and(|prev| prev != n) {
                return Err(HttpError::BadFraming("conflicting Content-Length headers"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = Some(h.value);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                conn_close |= token.eq_ignore_ascii_case(b"close");
                conn_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("expect") {
            if !h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                return Err(HttpError::ExpectationFailed);
            }
            expect_continue = !http10;
        } else if name.eq_ignore_ascii_case("host") {
            has_host = true;
        } else if name.eq_ignore_ascii_case("if-match") {
            preconditions.if_match = Some(h.value);
        } else if name.eq_ignore_ascii_case("if-none-match") {
            preconditions.if_none_match = Some(h.value);
        }
    }
    if let Some(te) = transfer_encoding {
        if content_length.is_some() {
            return Err(HttpError::BadFraming("both Content-Length and Transfer-Encoding"));
        }
        let last = te.rsplit(|&b| b == b',').next().unwrap_or_default().trim_ascii();
        return Err(if last.eq_ignore_ascii_case(b"chunked") {
            HttpError::ChunkedNotSupported
        } else {
            HttpError::TransferCodingNotImplemented
        });
    }
    if !http10 && !has_host {
        return Err(HttpError::Malformed("missing Host header".into()));
    }
    let keep_alive = if http10 { conn_keep_alive && !conn_close } else { !conn_close };
    Ok(Some(Head {
        method,
        target,
        head_len,
        body_len: content_length.unwrap_or(0),
        keep_alive,
        http10,
        expect_continue,
        preconditions,
    }))
}

/// `Content-Length` is 1*DIGIT (RFC 9110 §8.6): no sign, no spaces inside, no list, no overflow.
fn parse_content_length(value: &[u8]) -> Result<u64, HttpError> {
    const BAD: HttpError = HttpError::BadFraming("invalid Content-Length");
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(BAD);
    }
    Ok(digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Option<Head<'_>>, HttpError> {
        parse(raw.as_bytes(), 16 * 1024)
    }

    #[test]
    fn complete_and_partial_heads() {
        let h = head("PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
            .expect("ok")
            .expect("complete");
        assert_eq!((h.method, h.target, h.body_len, h.keep_alive), (Method::Put, "/v1/kv/a", 3, true));
        assert!(head("GET / HTTP/1.1\r\nHost: x\r\n").expect("ok").is_none());
    }

    #[test]
    fn framing_rules() {
        let status = |raw: &str| head(raw).err().map(|e| e.status());
        assert_eq!(status("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"), Some(400));
        assert_eq!(status("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"), Some(400));
        assert_eq!(
            status("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Some(400)
        );
        assert_eq!(
            status("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n"),
            Some(400)
        );
        assert_eq!(
            status("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Some(400)
        );
        assert_eq!(status("PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"), Some(411));
        assert_eq!(status("PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"), Some(501));
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), Some(400));
        let same = head("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(same.expect("ok").expect("complete").body_len, 2);
    }

    #[test]
    fn connection_semantics() {
        let ka = |raw: &str| head(raw).expect("ok").expect("complete").keep_alive;
        assert!(ka("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.0\r\n\r\n"));
        assert!(ka("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }
}
