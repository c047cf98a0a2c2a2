//! Listing a store's keys a page at a time, each page costing about what it returns.
//!
//! A hash map has no byte order, and sorting every key for every page costs the whole store per page
//! (500,000 keys: 48 ms of a core for a page of 1,000). So the memory engines list in an order the map
//! already has: by the key's 64-bit hash, then by the key (`Map::order_hash`). The table's shards are
//! the top bits of that hash, so the keys after any point in the order are the rest of one shard, then
//! the following shards whole: a page walks the shards from its cursor's, sorting only the few hundred
//! keys of each, and stops once it has `limit` keys (`page`). A cursor is a point in the order (a hash
//! and a key, or the start of a shard), so the node keeps nothing per listing, and listings at the same
//! time cost each other nothing. This is Redis's `SCAN` idea (a stateless cursor over the table's own
//! order) with the order fixed once and for all: shards never change membership when they grow.
//!
//! **What a listing promises.** The order is fixed for as long as the node runs (its hash seeds are),
//! and consecutive pages cover consecutive, disjoint stretches of it. So a key that lives throughout a
//! listing appears exactly once, whatever is written, grown or deleted meanwhile; a key created or
//! deleted during the listing appears at most once. A restart may change the order (new seeds, unless
//! a snapshot kept them); a cursor names the order it belongs to, and one from another order is refused
//! ([`EngineError::BadCursor`]) rather than silently skipping keys.
//!
//! **What a page costs.** `O(limit + s)` entries visited, where `s` is a shard's size (about `n / 4096`),
//! never the whole store. With a `prefix`, a page stops after visiting about [`VISITS_PER_KEY`] entries
//! per key asked for (at least one shard): it may come back short, or empty, with a cursor to go on
//! from; only a page without a cursor ends the listing. flurry cannot walk part of its map, so on
//! `--engine flurry` every page walks the whole map (still keeping only `limit` keys at a time). sled
//! lists its ordered tree in byte order from the cursor's key (`sled_tree.rs`).

use std::collections::BinaryHeap;
use std::fmt;

use crate::entry::{self};
use crate::error::{EngineError, Result};
use crate::map::Map;

/// A page of a listing that asks for `limit` keys with a prefix stops after visiting about this many
/// entries per key asked for (Redis's `SCAN` visits up to ten buckets per `COUNT`).
pub const VISITS_PER_KEY: usize = 10;

/// Where a listing goes on from. Its text form ([`fmt::Display`], [`Cursor::parse`]) is opaque to
/// clients, URL- and JSON-safe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor(Point);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Point {
    /// After this key, in the store's order.
    AfterKey(Vec<u8>),
    /// A memory engine's point in its order `order`: at `hash` (inclusive) when `key` is `None`, else just
    /// after `(hash, key)`.
    Hashed { order: u32, hash: u64, key: Option<Vec<u8>> },
}

/// One page of a listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// The keys, in the store's listing order.
    pub keys: Vec<Vec<u8>>,
    /// Where the next page starts; `None` when the listing is over.
    pub next: Option<Cursor>,
    /// Entries the page visited (what it cost the store).
    pub visited: usize,
}

impl Cursor {
    /// The keys after `key` in the store's order (what a listing's `?after=KEY` asks for): on sled, those
    /// that sort after it byte by byte; on the memory engines, those after it in their hash order.
    pub fn after_key(key: &[u8]) -> Cursor {
        Cursor(Point::AfterKey(key.to_vec()))
    }

    /// The cursor written as `token` ([`fmt::Display`]), or `None` if it is not one.
    pub fn parse(token: &str) -> Option<Cursor> {
        let (kind, rest) = (token.get(..1)?, token.get(1..)?);
        match kind {
            "k" => Some(Cursor(Point::AfterKey(unhex(rest)?))),
            "h" => {
                let (head, key) = match rest.split_once('-') {
                    Some((head, key)) => (head, Some(unhex(key)?)),
                    None => (rest, None),
                };
                if head.len() != 24 || !head.is_char_boundary(8) {
                    return None;
                }
                let order = u32::from_str_radix(&head[..8], 16).ok()?;
                let hash = u64::from_str_radix(&head[8..], 16).ok()?;
                Some(Cursor(Point::Hashed { order, hash, key }))
            }
            _ => None,
        }
    }

    /// A cursor of a key-ordered store (sled): the key it goes on after.
    pub(crate) fn key(&self) -> Result<&[u8]> {
        match &self.0 {
            Point::AfterKey(key) => Ok(key),
            Point::Hashed { .. } => Err(EngineError::BadCursor(
                "the cursor is from a memory engine's listing, not this one's".into(),
            )),
        }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Point::AfterKey(key) => write!(f, "k{}", Hex(key)),
            Point::Hashed { order, hash, key } => {
                write!(f, "h{order:08x}{hash:016x}")?;
                match key {
                    Some(key) => write!(f, "-{}", Hex(key)),
                    None => Ok(()),
                }
            }
        }
    }
}

struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

/// A probe key whose hash tells one order from another: two maps hashed with different seeds give it
/// different hashes (but for one chance in 2^32).
const ORDER_PROBE: &[u8] = b"\xffotkv listing order";

fn order_of<M: Map>(map: &M) -> u32 {
    (map.order_hash(ORDER_PROBE) >> 32) as u32
}

/// The page of up to `limit` live keys starting with `prefix` from `cursor` (the start when `None`), in
/// the map's order: by hash, then key. See the module docs for what it promises and costs.
pub(crate) fn page<M: Map>(map: &M, prefix: &[u8], cursor: Option<&Cursor>, limit: usize) -> Result<Page> {
    let order = order_of(map);
    // The point the page starts after: `(hash, key)`, or at `hash` when there is no key.
    let (mut hash, mut after) = match cursor.map(|c| &c.0) {
        None => (0, None),
        Some(Point::AfterKey(key)) => (map.order_hash(key), Some(key.clone())),
        Some(Point::Hashed { order: o, hash, key }) if *o == order => (*hash, key.clone()),
        Some(Point::Hashed { .. }) => {
            return Err(EngineError::BadCursor(
                "the cursor is from before this node restarted, and its keys are in another order now: \
                 start the listing again"
                    .into(),
            ))
        }
    };
    let mut page = Page::default();
    if limit == 0 {
        page.next = Some(Cursor(Point::Hashed { order, hash, key: after }));
        return Ok(page);
    }
    let bits = map.group_bits();
    let group_of = |h: u64| h.checked_shr(64 - bits).unwrap_or(0) as usize;
    let groups = 1usize << bits;
    let budget = if prefix.is_empty() { usize::MAX } else { limit.saturating_mul(VISITS_PER_KEY) };
    let now = entry::now_ms();
    let mut group = group_of(hash);
    loop {
        // The group's smallest `need` keys after the point, each copied only while it is among them.
        let need = limit - page.keys.len();
        let mut smallest: BinaryHeap<(u64, Vec<u8>)> = BinaryHeap::with_capacity(need.min(1024) + 1);
        let mut more = false;
        map.for_each_in_group(group, |key, meta, _| {
            page.visited += 1;
            if !key.starts_with(prefix) || meta.expired_at(now) {
                return;
            }
            let h = map.order_hash(key);
            let past = h > hash || (h == hash && after.as_deref().is_none_or(|a| key > a));
            if !past {
                return;
            }
            if smallest.len() == need {
                more = true;
                match smallest.peek() {
                    Some((lh, lk)) if (h, key) < (*lh, lk.as_slice()) => {
                        smallest.pop();
                    }
                    _ => return,
                }
            }
            smallest.push((h, key.to_vec()));
        });
        let mut found = smallest.into_sorted_vec();
        // A map walked during a resize might show a key twice (flurry): the order has each once.
        found.dedup();
        if more {
            // Full inside this group: the next page goes on after its last key.
            let (h, k) = found.last().cloned().unwrap_or_default();
            page.keys.extend(found.into_iter().map(|(_, k)| k));
            page.next = Some(Cursor(Point::Hashed { order, hash: h, key: Some(k) }));
            return Ok(page);
        }
        page.keys.extend(found.into_iter().map(|(_, k)| k));
        if group + 1 == groups {
            return Ok(page);
        }
        group += 1;
        (hash, after) = ((group as u64) << (64 - bits), None);
        if page.keys.len() == limit || page.visited >= budget {
            page.next = Some(Cursor(Point::Hashed { order, hash, key: None }));
            return Ok(page);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_back_as_written() {
        let cursors = [
            Cursor::after_key(b""),
            Cursor::after_key(b"a/b\xff"),
            Cursor(Point::Hashed { order: 7, hash: u64::MAX, key: None }),
            Cursor(Point::Hashed { order: 0xdead_beef, hash: 1, key: Some(b"k\x00".to_vec()) }),
            Cursor(Point::Hashed { order: 0, hash: 0, key: Some(Vec::new()) }),
        ];
        for c in cursors {
            let text = c.to_string();
            assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'), "{text}");
            assert_eq!(Cursor::parse(&text), Some(c), "{text}");
        }
    }

    #[test]
    fn what_is_not_a_cursor_is_refused() {
        for bad in
            ["", "x", "k0", "kzz", "h", "h123", "h0000000g0000000000000000", "h00000000000000000000000€"]
        {
            assert_eq!(Cursor::parse(bad), None, "{bad:?}");
        }
    }
}
