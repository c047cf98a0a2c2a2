//! A scanner for the request heads clients almost always send, word by word.
//!
//! Why it exists: a GET through httparse cost about 550 instructions, and its share of a pipelined
//! request was a quarter (`benches/server/instructions.sh`). httparse is general: any method token,
//! UTF-8 targets (checked by `str::from_utf8`), bare-LF line ends, tabs in values. This scanner accepts
//! only the narrow, common form and gives up on anything else, and then httparse parses the head:
//!
//! - the method is `GET`, `PUT`, `HEAD`, `POST` or `DELETE`, followed by one space;
//! - the target is printable ASCII (`!`..=`~`), starts with `/`, and is followed by one space;
//! - the version is `HTTP/1.1` or `HTTP/1.0`, and every line ends with CRLF;
//! - a header name is a token, followed directly by `:`; its value, after any spaces, is `' '..='~'`
//!   (no tab, no byte above 0x7E); at most `MAX_HEADERS` of them;
//! - the head is complete in the buffer.
//!
//! Inside that form its answer is exactly httparse's: the `scanned_heads_parse_as_httparse_does`
//! property test in `request.rs` checks both on generated heads, valid and broken. The target and the
//! values are checked eight bytes at a time ([`crate::swar`]): a byte-by-byte hand parser was measured
//! before this one, and lost to httparse's SIMD.

use super::line::{Line, Method, MAX_HEADERS};
use crate::front::word_scan::{first_outside, word};

/// Scans the head at the start of `buf`, handing each header to `header` in order; `None` when the head
/// is not in the common form (or not complete): the caller then parses it with httparse, and must
/// forget what `header` saw.
#[inline]
pub(super) fn head<'b>(buf: &'b [u8], mut header: impl FnMut(&'b [u8], &'b [u8])) -> Option<Line<'b>> {
    let (method, at) = match buf.get(..4)? {
        b"GET " => (Method::Get, 4),
        b"PUT " => (Method::Put, 4),
        b"HEAD" if buf.get(4) == Some(&b' ') => (Method::Head, 5),
        b"POST" if buf.get(4) == Some(&b' ') => (Method::Post, 5),
        b"DELE" if buf.get(4..7) == Some(b"TE ") => (Method::Delete, 7),
        _ => return None,
    };
    let target_end = first_outside(buf, at, b'!', b'~')?;
    if buf[target_end] != b' ' || buf.get(at) != Some(&b'/') {
        return None;
    }
    let target = &buf[at..target_end];
    // SAFETY: every byte of `target` is in `!`..=`~` (`first_outside` found none outside before
    // `target_end`): ASCII, so UTF-8. `str::from_utf8` would check it again byte by byte, which cost
    // about 100 instructions a request, as much as the rest of this scan.
    #[allow(unsafe_code)]
    let target = unsafe { std::str::from_utf8_unchecked(target) };
    let at = target_end + 1;
    let http10 = match (word(buf, at)?, buf.get(at + 8..at + 10)?) {
        (HTTP_1_1, b"\r\n") => false,
        (HTTP_1_0, b"\r\n") => true,
        _ => return None,
    };
    let mut at = at + 10;
    let mut headers = 0;
    loop {
        if buf.get(at)? == &b'\r' {
            return (buf.get(at + 1)? == &b'\n').then_some(Line { method, target, http10, head_len: at + 2 });
        }
        let name_start = at;
        match known_name(buf, at) {
            Some(len) => at += len,
            None => {
                while TOKEN[usize::from(*buf.get(at)?)] {
                    at += 1;
                }
            }
        }
        if at == name_start || buf[at] != b':' {
            return None;
        }
        let name = &buf[name_start..at];
        at += 1;
        while buf.get(at)? == &b' ' {
            at += 1;
        }
        let value_start = at;
        let end = first_outside(buf, at, b' ', b'~')?;
        if buf.get(end..end + 2)? != b"\r\n" {
            return None;
        }
        headers += 1;
        if headers > MAX_HEADERS {
            return None;
        }
        header(name, buf[value_start..end].trim_ascii_end());
        at = end + 2;
    }
}

/// The length of the name at `at` if it is one of the names nearly every request carries (`Host`,
/// `Content-Length`), found by comparing words instead of checking each byte against [`TOKEN`]. Case is
/// folded only where the name has a letter (`| 0x20` maps exactly `A`..`Z` and `a`..`z` there), so the
/// comparison is exact: a match is a token and is that name.
#[inline]
fn known_name(buf: &[u8], at: usize) -> Option<usize> {
    // "content-length:" as two overlapping words (bytes 0..8 and 7..15), and their letter masks.
    const CL_0: u64 = u64::from_le_bytes(*b"content-");
    const CL_7: u64 = u64::from_le_bytes(*b"-length:");
    const CL_0_FOLD: u64 = u64::from_le_bytes([0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0]);
    const CL_7_FOLD: u64 = u64::from_le_bytes([0, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0]);
    const HOST: u64 = u64::from_le_bytes(*b"host:\0\0\0");
    const HOST_FOLD: u64 = u64::from_le_bytes([0x20, 0x20, 0x20, 0x20, 0, 0, 0, 0]);
    const HOST_BYTES: u64 = u64::from_le_bytes([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0]);
    let first = word(buf, at)?;
    if first & HOST_BYTES | HOST_FOLD == HOST {
        return Some(4);
    }
    if first | CL_0_FOLD == CL_0 && word(buf, at + 7)? | CL_7_FOLD == CL_7 {
        return Some(14);
    }
    None
}

const HTTP_1_1: u64 = u64::from_le_bytes(*b"HTTP/1.1");
const HTTP_1_0: u64 = u64::from_le_bytes(*b"HTTP/1.0");

/// RFC 9110 `tchar`: the bytes a header name may hold (httparse's table).
const TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(c, b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*')
            || matches!(c, b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~');
        b += 1;
    }
    table
};
