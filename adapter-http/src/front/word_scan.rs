//! Word-at-a-time byte scans: eight bytes per step as one `u64`, for the few scans on the request path
//! (the request line, header values, a key). A byte-by-byte loop costs several instructions a byte; these
//! cost about two. The tricks are the classic ones of "Bit Twiddling Hacks" (`haszero`, `hasless`,
//! `hasmore`), each flagging a byte by setting its high bit.

const ONES: u64 = u64::from_le_bytes([1; 8]);
const HIGH: u64 = ONES << 7;

/// The eight bytes at `at`, as one little-endian word (the first byte is the lowest).
#[inline]
pub(crate) fn word(buf: &[u8], at: usize) -> Option<u64> {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(buf.get(at..at + 8)?);
    Some(u64::from_le_bytes(bytes))
}

/// The flag of the first flagged byte, as an index into the word.
#[inline]
fn first_flag(flags: u64) -> usize {
    flags.trailing_zeros() as usize / 8
}

/// The index of the first byte of `buf[from..]` outside `lo..=hi` (`lo` ≥ 1, `hi` ≤ 0x7E), if any.
///
/// Eight bytes per step, as one little-endian word `w`, flagging a byte by its high bit:
/// - `w - lo·ONES` sets it in a byte under 0x80 exactly when the byte is below `lo`;
/// - `w + (0x7F - hi)·ONES` sets it in a byte under 0x80 exactly when the byte is above `hi`;
/// - `w` itself sets it in every byte ≥ 0x80, which is always outside.
///
/// A borrow or carry leaves a byte only from a flagged byte, and only into the next one, so the lowest
/// flag, the first byte outside, is exact.
#[inline]
pub fn first_outside(buf: &[u8], from: usize, lo: u8, hi: u8) -> Option<usize> {
    let below = ONES * u64::from(lo);
    let above = ONES * u64::from(0x7F - hi);
    let mut at = from;
    while let Some(w) = word(buf, at) {
        let flags = (w.wrapping_sub(below) | w.wrapping_add(above) | w) & HIGH;
        if flags != 0 {
            return Some(at + first_flag(flags));
        }
        at += 8;
    }
    buf.get(at..)?.iter().position(|&b| b < lo || b > hi).map(|i| at + i)
}

/// The index of the first byte of `buf` that is `a`, `b` or `c`, if any.
///
/// `x ^ c·ONES` has a zero byte where `x` has a `c`; `(v - ONES) & !v` sets the high bit of a zero byte
/// (and, through the borrow, possibly of later bytes: the lowest flag is exact, as in [`first_outside`]).
#[inline]
pub fn first_of(buf: &[u8], a: u8, b: u8, c: u8) -> Option<usize> {
    let zero = |v: u64| v.wrapping_sub(ONES) & !v;
    let (a8, b8, c8) = (ONES * u64::from(a), ONES * u64::from(b), ONES * u64::from(c));
    let mut at = 0;
    while let Some(w) = word(buf, at) {
        let flags = (zero(w ^ a8) | zero(w ^ b8) | zero(w ^ c8)) & HIGH;
        if flags != 0 {
            return Some(at + first_flag(flags));
        }
        at += 8;
    }
    buf[at..].iter().position(|&x| x == a || x == b || x == c).map(|i| at + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_of_finds_the_first_of_three_bytes() {
        assert_eq!(first_of(b"key0000000012345", b'/', b'%', b'?'), None);
        assert_eq!(first_of(b"key0000000012345?ttl=5", b'/', b'%', b'?'), Some(16));
        for at in 0..20 {
            for (x, later) in [(b'/', b'%'), (b'%', b'?'), (b'?', b'/')] {
                let mut bytes = vec![b'a'; 20];
                bytes[at] = x;
                bytes[19] = later;
                // A byte just above a match (the borrow's victim) must not be reported first.
                if at > 0 {
                    bytes[at - 1] = x + 1;
                }
                assert_eq!(first_of(&bytes, b'/', b'%', b'?'), Some(at));
            }
        }
    }

    #[test]
    fn first_outside_finds_the_first_byte_out_of_range() {
        let text = b"/v1/kv/key0000000012345 HTTP/1.1";
        assert_eq!(first_outside(text, 0, b'!', b'~'), Some(23));
        assert_eq!(first_outside(text, 24, b'!', b'~'), None);
        for at in 0..20 {
            let mut bytes = vec![b'a'; 20];
            bytes[at] = 0x80;
            if at + 1 < 20 {
                bytes[at + 1] = 0x01;
            }
            assert_eq!(first_outside(&bytes, 0, b'!', b'~'), Some(at));
            bytes[at] = 0x7F;
            assert_eq!(first_outside(&bytes, 0, b' ', b'~'), Some(at));
            bytes[at] = b'\t';
            assert_eq!(first_outside(&bytes, 0, b' ', b'~'), Some(at));
        }
    }
}
