//! Percent-decoding of paths and queries, and percent-encoding of keys for listings.
//!
//! Hand-written rather than taken from `percent-encoding` because that crate decodes leniently (a bad `%zz`
//! passes through as text), and a key store must not guess which key a client meant: a bad escape is a 400.
//! Decoding borrows when there is nothing to decode, which is the common case on the hot path.

use std::borrow::Cow;

/// Decodes `%XX` escapes. With `plus_is_space` (query strings), `+` decodes to a space.
/// Returns `None` when a `%` is not followed by two hex digits.
pub fn decode(input: &str, plus_is_space: bool) -> Option<Cow<'_, [u8]>> {
    let bytes = input.as_bytes();
    if !bytes.iter().any(|&b| b == b'%' || (plus_is_space && b == b'+')) {
        return Some(Cow::Borrowed(bytes));
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = hex(*bytes.get(i + 1)?)?;
                let lo = hex(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(Cow::Owned(out))
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Encodes a key as one path segment: RFC 3986 `pchar`s stay as they are, every other byte becomes `%XX`.
/// `decode(encode_segment(k)) == k` for every key, so a listed key can be pasted into `/v1/kv/{key}`.
pub fn encode_segment(key: &[u8]) -> String {
    let mut out = Vec::with_capacity(key.len());
    encode_segment_into(key, &mut out);
    // Only ASCII was written.
    String::from_utf8(out).unwrap_or_default()
}

/// [`encode_segment`], appended to `out`: only ASCII letters, digits, `-._~!$&'()*,;=:@` and `%XX`.
pub fn encode_segment_into(key: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in key {
        let plain = b.is_ascii_alphanumeric() || b"-._~!$&'()*,;=:@".contains(&b);
        if plain {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_rejects_bad_ones() {
        assert_eq!(decode("a%2Fb", false).as_deref(), Some(&b"a/b"[..]));
        assert_eq!(decode("a+b", false).as_deref(), Some(&b"a+b"[..]));
        assert_eq!(decode("a+b", true).as_deref(), Some(&b"a b"[..]));
        assert_eq!(decode("%00%ff", false).as_deref(), Some(&[0u8, 0xff][..]));
        assert_eq!(decode("%zz", false), None);
        assert_eq!(decode("%4", false), None);
    }

    #[test]
    fn encode_then_decode_is_identity() {
        let key: Vec<u8> = (0..=255u8).collect();
        let encoded = encode_segment(&key);
        assert!(!encoded.contains('/') && !encoded.contains('?') && !encoded.contains('+'));
        assert_eq!(decode(&encoded, false).as_deref(), Some(&key[..]));
    }
}
