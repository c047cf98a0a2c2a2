//! Parsing one request head and deciding how its body is framed.
//!
//! The common head form is tokenised by `scan.rs`, everything else by `httparse`; this module applies the
//! rules a tokeniser leaves to its caller, the same way to both, which are the ones that keep a
//! connection's byte stream trustworthy (RFC 9112 §6):
//! - `Content-Length` must be plain digits; several must agree; with `Transfer-Encoding` it is an error.
//! - `Transfer-Encoding` is refused (411 for chunked, 501 otherwise): a body we cannot frame is never stored.
//! - The head is capped in bytes and in header count (431), before it is buffered any further.

use super::error::HttpError;
use super::word_scan;

mod line;
mod scan;

pub use line::{Method, MAX_HEADERS};

/// The request head cap (431 beyond it).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
use line::Line;

/// What the connection layer needs to know about a parsed request head.
#[derive(Debug)]
pub struct Head<'b> {
    /// The method.
    pub method: Method,
    /// The request target as sent (origin form: path and query).
    pub target: &'b str,
    /// Length of the head in bytes, up to and including the blank line.
    #[allow(clippy::struct_field_names, reason = "the head's length, beside the body's")]
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
    /// The `Authorization` value, as sent (at most one: a second is refused).
    pub authorization: Option<&'b [u8]>,
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
///
/// The common form is scanned by `scan::head`; anything else (and anything incomplete) goes through
/// httparse. Both feed the same `Fields`, so the rules below apply the same way to either.
pub fn parse(buf: &[u8], max_head: usize) -> Result<Option<Head<'_>>, HttpError> {
    parse_head(buf, max_head, true)
}

/// [`parse`], or (`scan` false, for the tests) the same with httparse alone.
#[inline(always)]
fn parse_head(buf: &[u8], max_head: usize, scan: bool) -> Result<Option<Head<'_>>, HttpError> {
    let mut fields = Fields::default();
    let scanned = if scan { scan::head(buf, |name, value| fields.add(name, value)) } else { None };
    let line = if let Some(line) = scanned {
        line
    } else {
        fields = Fields::default();
        match parse_with_httparse(buf, max_head, &mut fields)? {
            Some(line) => line,
            None => return Ok(None),
        }
    };
    if line.head_len > max_head {
        return Err(HttpError::HeaderTooLarge { max: max_head });
    }
    if !line.target.starts_with('/') {
        return Err(HttpError::Malformed("request target must be an absolute path".into()));
    }
    fields.finish(line)
}

/// The general parse, by httparse, handing its headers to `fields`.
fn parse_with_httparse<'b>(
    buf: &'b [u8],
    max_head: usize,
    fields: &mut Fields<'b>,
) -> Result<Option<Line<'b>>, HttpError> {
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
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        Some("PUT") => Method::Put,
        Some("POST") => Method::Post,
        Some("DELETE") => Method::Delete,
        _ => Method::Other,
    };
    for h in req.headers.iter() {
        fields.add(h.name.as_bytes(), h.value);
    }
    Ok(Some(Line { method, target: req.path.unwrap_or(""), http10: req.version == Some(0), head_len }))
}

/// What the headers say, gathered one header at a time; the first header that breaks a rule is kept
/// as the error (the rest are not looked at).
#[derive(Default)]
struct Fields<'b> {
    content_length: Option<u64>,
    transfer_encoding: Option<&'b [u8]>,
    conn_close: bool,
    conn_keep_alive: bool,
    expect_continue: bool,
    has_host: bool,
    preconditions: Preconditions<'b>,
    authorization: Option<&'b [u8]>,
    /// The first broken rule. Only the `&'static` kinds occur here, so `Fields` stays plain data, with
    /// nothing to drop.
    error: Option<FieldError>,
}

/// A header that breaks a framing rule.
#[derive(Debug, Clone, Copy)]
enum FieldError {
    /// [`HttpError::BadFraming`].
    Framing(&'static str),
    /// [`HttpError::ExpectationFailed`].
    Expectation,
}

impl From<FieldError> for HttpError {
    fn from(e: FieldError) -> Self {
        match e {
            FieldError::Framing(why) => HttpError::BadFraming(why),
            FieldError::Expectation => HttpError::ExpectationFailed,
        }
    }
}

impl<'b> Fields<'b> {
    /// Takes one header into account. Names are told apart by length first: one comparison each.
    #[inline(always)]
    fn add(&mut self, name: &[u8], value: &'b [u8]) {
        if self.error.is_some() {
            return;
        }
        let is = |known: &[u8]| token_is(name, known);
        match name.len() {
            4 if is(b"host") => self.has_host = true,
            6 if is(b"expect") => {
                if value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                    self.expect_continue = true;
                } else {
                    self.error = Some(FieldError::Expectation);
                }
            }
            8 if is(b"if-match") => self.preconditions.if_match = Some(value),
            10 if is(b"connection") => {
                for token in value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    self.conn_close |= token.eq_ignore_ascii_case(b"close");
                    self.conn_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            13 if is(b"if-none-match") => self.preconditions.if_none_match = Some(value),
            // A second one: which counts would be a guess, and a proxy that replaces one would pass the
            // other on.
            13 if is(b"authorization") && self.authorization.replace(value).is_some() => {
                self.error = Some(FieldError::Framing("more than one Authorization header"));
            }
            14 if is(b"content-length") => match parse_content_length(value) {
                Some(n) if self.content_length.is_some_and(|prev| prev != n) => {
                    self.error = Some(FieldError::Framing("conflicting Content-Length headers"));
                }
                Some(n) => self.content_length = Some(n),
                None => self.error = Some(FieldError::Framing("invalid Content-Length")),
            },
            17 if is(b"transfer-encoding") => self.transfer_encoding = Some(value),
            _ => {}
        }
    }

    /// The head, once every header is in: the framing rules that need all of them.
    fn finish(self, line: Line<'b>) -> Result<Option<Head<'b>>, HttpError> {
        if let Some(err) = self.error {
            return Err(err.into());
        }
        let http10 = line.http10;
        if let Some(te) = self.transfer_encoding {
            if self.content_length.is_some() {
                return Err(HttpError::BadFraming("both Content-Length and Transfer-Encoding"));
            }
            let last = te.rsplit(|&b| b == b',').next().unwrap_or_default().trim_ascii();
            return Err(if last.eq_ignore_ascii_case(b"chunked") {
                HttpError::ChunkedNotSupported
            } else {
                HttpError::TransferCodingNotImplemented
            });
        }
        if !http10 && !self.has_host {
            return Err(HttpError::Malformed("missing Host header".into()));
        }
        let keep_alive = if http10 { self.conn_keep_alive && !self.conn_close } else { !self.conn_close };
        Ok(Some(Head {
            method: line.method,
            target: line.target,
            head_len: line.head_len,
            body_len: self.content_length.unwrap_or(0),
            keep_alive,
            http10,
            // HTTP/1.0 clients do not wait for `100 Continue`.
            expect_continue: self.expect_continue && !http10,
            preconditions: self.preconditions,
            authorization: self.authorization,
        }))
    }
}

/// Whether the header name `name` (a token: both parsers check) is `lower` (lowercase letters and `-`),
/// ignoring case. Setting bit 5 lowercases a letter and keeps `-`; no other token byte becomes a
/// lowercase letter or `-` that way (only `^` moves, to `~`), so the comparison is exact. A word at a
/// time (eight bytes, or four for a short name); the last word overlaps the one before it.
#[inline]
fn token_is(name: &[u8], lower: &[u8]) -> bool {
    const FOLD: u64 = u64::from_le_bytes([0x20; 8]);
    let len = name.len();
    if len != lower.len() {
        return false;
    }
    if len < 4 {
        return name.iter().zip(lower).all(|(&n, &l)| n | 0x20 == l);
    }
    if len < 8 {
        // Two four-byte words, overlapping.
        let half = |s: &[u8], at: usize| {
            let mut bytes = [0; 4];
            bytes.copy_from_slice(&s[at..at + 4]);
            u32::from_le_bytes(bytes)
        };
        let fold = FOLD as u32;
        return half(name, 0) | fold == half(lower, 0) && half(name, len - 4) | fold == half(lower, len - 4);
    }
    let same = |at: usize| word_scan::word(name, at).map(|w| w | FOLD) == word_scan::word(lower, at);
    (0..len - 8).step_by(8).all(same) && same(len - 8)
}

/// `Content-Length` is 1*DIGIT (RFC 9110 §8.6): no sign, no spaces inside, no list, no overflow.
/// The one parser of this header in the workspace: requests here, answers in the harness's client and
/// proxy.
pub fn parse_content_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    // One pass: checks each byte and accumulates (19 digits cannot overflow a u64).
    let mut n = 0u64;
    for &d in digits {
        let digit = d.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        n = n * 10 + u64::from(digit);
    }
    Some(n)
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

    /// A parsed head, comparable: method, target, HTTP/1.0, length, headers.
    type View = (String, String, bool, usize, Vec<(Vec<u8>, Vec<u8>)>);

    /// What httparse makes of `buf`, in the scanner's terms: `None` unless complete and valid.
    fn httparse_view(buf: &[u8]) -> Option<View> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(len)) = req.parse(buf) else { return None };
        let fields = req.headers.iter().map(|h| (h.name.as_bytes().to_vec(), h.value.to_vec())).collect();
        Some((req.method?.to_string(), req.path?.to_string(), req.version? == 0, len, fields))
    }

    fn scan_view(buf: &[u8]) -> Option<View> {
        let mut fields = Vec::new();
        let s = scan::head(buf, |name, value| fields.push((name.to_vec(), value.to_vec())))?;
        let method = format!("{:?}", s.method).to_uppercase();
        Some((method, s.target.to_string(), s.http10, s.head_len, fields))
    }

    #[test]
    fn the_common_heads_are_scanned() {
        for raw in [
            "GET /v1/kv/key0000000012345 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
            "PUT /v1/kv/a?ttl=5 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nIf-Match: \"7\"\r\n\r\nabc",
            "DELETE /a HTTP/1.0\r\nConnection:keep-alive  \r\n\r\n",
            "HEAD / HTTP/1.1\r\nHost:\r\nX-Empty:   \r\n\r\n",
        ] {
            assert!(scan_view(raw.as_bytes()).is_some(), "{raw:?}");
            assert_eq!(scan_view(raw.as_bytes()), httparse_view(raw.as_bytes()), "{raw:?}");
        }
        // Left to httparse: other methods, bare LF, tabs, non-ASCII, incomplete heads.
        for raw in [
            "OPTIONS / HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\nHost: x\n\n",
            "GET / HTTP/1.1\r\nHost:\tx\r\n\r\n",
            "GET /caf\u{e9} HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\n",
        ] {
            assert!(scan_view(raw.as_bytes()).is_none(), "{raw:?}");
        }
        let many = |n: usize| format!("GET / HTTP/1.1\r\n{}\r\n", "Host: x\r\n".repeat(n));
        assert!(scan_view(many(MAX_HEADERS).as_bytes()).is_some());
        assert!(scan_view(many(MAX_HEADERS + 1).as_bytes()).is_none());
        assert!(matches!(
            parse(many(MAX_HEADERS + 1).as_bytes(), 16 * 1024),
            Err(HttpError::TooManyHeaders { .. })
        ));
    }

    #[test]
    fn header_names_compare_without_case() {
        for (name, known) in [
            ("Host", "host"),
            ("HOST", "host"),
            ("Content-Length", "content-length"),
            ("content-LENGTH", "content-length"),
            ("If-None-Match", "if-none-match"),
            ("Transfer-Encoding", "transfer-encoding"),
            ("If-Match", "if-match"),
        ] {
            assert!(token_is(name.as_bytes(), known.as_bytes()), "{name}");
        }
        for (name, known) in [
            ("Hosts", "host"),
            ("H0st", "host"),
            ("Content_Length", "content-length"),
            ("Content-Lengti", "content-length"),
            ("Xontent-Length", "content-length"),
            ("Transfer-Encodinf", "transfer-encoding"),
            ("If^Match", "if-match"),
        ] {
            assert!(!token_is(name.as_bytes(), known.as_bytes()), "{name}");
        }
    }

    mod generated {
        use proptest::prelude::*;

        use super::*;

        /// Pieces of request heads: mostly well formed, with the near misses the scanner must leave alone.
        fn piece(options: &'static [&'static str]) -> impl Strategy<Value = String> {
            proptest::sample::select(options).prop_map(str::to_string)
        }

        fn text(chars: &'static str, len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
            let chars: Vec<char> = chars.chars().collect();
            proptest::collection::vec(proptest::sample::select(chars), len)
                .prop_map(|c| c.into_iter().collect())
        }

        fn header() -> impl Strategy<Value = String> {
            let name = prop_oneof![
                4 => piece(&["Host", "host", "Content-Length", "Connection", "Expect", "If-Match", "X-A"]),
                1 => text("aZ09-_!:;@ \t\r\u{e9}\"", 0..6),
            ];
            let colon = piece(&[": ", ":", ":   ", " :", ":\t", "", ": \r"]);
            let value = text("az09 ,\"*-/:=\t\u{7f}\u{80}\u{e9}\r\n\0", 0..12);
            let eol = prop_oneof![6 => piece(&["\r\n"]), 1 => piece(&["\n", "\r", "\r\r\n", ""])];
            (name, colon, value, eol).prop_map(|(n, c, v, e)| format!("{n}{c}{v}{e}"))
        }

        fn request() -> impl Strategy<Value = (Vec<u8>, usize)> {
            let method = prop_oneof![
                6 => piece(&["GET", "PUT", "HEAD", "POST", "DELETE"]),
                1 => piece(&["OPTIONS", "get", "GETS", "DELET", "", "\r\nGET", "PO\u{e9}T"]),
            ];
            let space = prop_oneof![8 => piece(&[" "]), 1 => piece(&["  ", "\t", ""])];
            let target = prop_oneof![
                8 => text("az09/%?=&-._~", 0..30).prop_map(|t| format!("/{t}")),
                1 => text("az09/%? \t\u{7f}\u{80}\u{e9}\0*:", 0..12),
            ];
            let version = prop_oneof![
                8 => piece(&["HTTP/1.1", "HTTP/1.0"]),
                1 => piece(&["HTTP/2.0", "http/1.1", "HTTP/1.1 ", "HTTP/1."]),
            ];
            let eol = prop_oneof![8 => piece(&["\r\n"]), 1 => piece(&["\n", "\r", ""])];
            let headers = proptest::collection::vec(header(), 0..6);
            let end = prop_oneof![8 => piece(&["\r\n"]), 1 => piece(&["\n", "\r", " \r\n", ""])];
            (method, space.clone(), target, space, version, eol, headers, end, "[a-z]{0,9}", 0usize..200)
                .prop_map(|(m, s1, t, s2, v, e, h, end, body, cut)| {
                    let raw = format!("{m}{s1}{t}{s2}{v}{e}{}{end}{body}", h.concat()).into_bytes();
                    // Often whole, sometimes cut short anywhere.
                    let len = if cut < 150 { raw.len() } else { cut % (raw.len() + 1) };
                    (raw, len)
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(20_000))]

            /// Whatever the scanner accepts, httparse parses to the same method, target, version, length
            /// and headers; and the whole parse, scanner or not, says what httparse alone would.
            #[test]
            fn scanned_heads_parse_as_httparse_does((raw, len) in request()) {
                let buf = &raw[..len];
                if let Some(scanned) = scan_view(buf) {
                    prop_assert_eq!(Some(scanned), httparse_view(buf));
                }
                let alone = parse_head(buf, 16 * 1024, false);
                prop_assert_eq!(format!("{:?}", parse(buf, 16 * 1024)), format!("{alone:?}"));
            }
        }
    }
}
