//! Snapshots of the memory map: the whole store in one checksummed file.
//!
//! `snapshots/snapshot-{replay_from:020}.otkv` (little-endian):
//!
//! ```text
//! header:  magic "OTKVSNP1" (8) | version u32 = 3 | flags u32 = 0 | replay_from u64 | hash seeds 4 × u64
//! entry:   key_len varint | key | value_len varint | version u64 | expires_ms varint | value
//! trailer: entries u64 | crc32 u32 (of every byte before it) | magic "OTKVEND1" (8)
//! ```
//!
//! Varints are LEB128. An entry carries the value's version and absolute expiry (0: never) with the value.
//! Version 3 is version 2 made smaller: for 16-byte keys and 100-byte values, 127 bytes an entry instead of
//! 140 (1.09 × the keys and values instead of 1.21 ×). Older versions are still read:
//! - version 2: `key_len u32 | key | stored_len u32 | version u64 | expires_ms u64 | value`;
//! - version 1 (before versions and expiry): `key_len u32 | key | value_len u32 | value`; its values never
//!   expire and get the version `replay_from - 1`, which is at least the sequence number of every write it
//!   holds and so can never equal an older version of the key.
//!
//! The hash seeds are the map's (either memory engine's map is hashed with them): a store loaded from this
//! snapshot hashes with the same seeds, so its entries arrive in the order of its own buckets or shards
//! (the file was written by walking them) and loading fills the table front to back instead of missing the
//! cache on every insert. They only make loading faster; a version 1 or 2 snapshot (no seeds) loads in
//! random order. Both memory engines write and read the same files: a data directory written by
//! `--engine memory` opens with `--engine flurry`, and back.
//!
//! Loading is parallel: one sequential pass checks the checksum and every entry's bounds and notes where
//! each run of [`CHUNK`] entries starts; the runs are then decoded and inserted on all cores.
//!
//! The count is in the trailer because the map changes while it is copied: it is known only at the end,
//! and the checksum can then be computed in one streaming pass.
//!
//! ```text
//! ```
//!
//! A snapshot is written to `*.tmp`, synced, renamed into place, and the directory synced: a file with the
//! final name is always complete. It is *fuzzy*: taken from the live map while writes continue, it holds
//! every write before `replay_from` and possibly some after. Recovery replays the log from `replay_from`,
//! which is correct because replaying a put or delete over a state that already has it changes nothing
//! that the later records in the log do not also set.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::entry::{self, Meta};
use crate::error::io_err;
use crate::error::{EngineError, Result};

const MAGIC: &[u8; 8] = b"OTKVSNP1";
const END: &[u8; 8] = b"OTKVEND1";
const VERSION: u32 = 3;
/// Entries per run of a parallel load.
pub(crate) const CHUNK: usize = 4096;
/// The header of versions 1 and 2; version 3 adds the seeds.
const HEADER_LEN: usize = 24;
const HEADER_LEN_V3: usize = HEADER_LEN + 32;

/// The memory map's hash seeds.
pub(crate) use crate::map::Seeds;
const TRAILER_LEN: usize = 20;

/// The file name of a snapshot from which the log is replayed at `replay_from`.
pub(crate) fn snapshot_name(replay_from: u64) -> String {
    format!("snapshot-{replay_from:020}.otkv")
}

/// `replay_from` of a snapshot file, from its name.
pub(crate) fn snapshot_seq(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix("snapshot-")?.strip_suffix(".otkv")?.parse().ok()
}

/// Writes the entries `each` feeds it (key, metadata, value) of a map hashed with `seeds` as the snapshot
/// for `replay_from` in `dir`, durably; returns the file and entry count.
pub(crate) fn write(
    dir: &Path,
    replay_from: u64,
    seeds: Seeds,
    each: impl FnOnce(&mut dyn FnMut(&[u8], Meta, &[u8])),
) -> Result<(PathBuf, u64)> {
    let final_path = dir.join(snapshot_name(replay_from));
    let tmp_path = dir.join(format!("{}.tmp", snapshot_name(replay_from)));
    let io = io_err(&tmp_path);
    let file = std::fs::File::create(&tmp_path).map_err(io)?;
    let mut out =
        HashingWriter { inner: BufWriter::with_capacity(1 << 20, file), crc: crc32fast::Hasher::new() };
    out.write_all(MAGIC).map_err(io)?;
    out.write_all(&VERSION.to_le_bytes()).map_err(io)?;
    out.write_all(&0u32.to_le_bytes()).map_err(io)?;
    out.write_all(&replay_from.to_le_bytes()).map_err(io)?;
    for seed in seeds {
        out.write_all(&seed.to_le_bytes()).map_err(io)?;
    }
    let mut count = 0u64;
    let mut head = Vec::with_capacity(64);
    // The first write error, if any: the walk cannot be stopped from inside, so later entries are skipped.
    let mut failed: Option<std::io::Error> = None;
    each(&mut |key, meta, value| {
        if failed.is_some() {
            return;
        }
        head.clear();
        put_varint(&mut head, key.len() as u64);
        head.extend_from_slice(key);
        put_varint(&mut head, value.len() as u64);
        head.extend_from_slice(&meta.version.to_le_bytes());
        put_varint(&mut head, meta.expires_ms);
        match out.write_all(&head).and_then(|()| out.write_all(value)) {
            Ok(()) => count += 1,
            Err(e) => failed = Some(e),
        }
    });
    if let Some(e) = failed {
        return Err(io(e));
    }
    out.write_all(&count.to_le_bytes()).map_err(io)?;
    let crc = out.crc.clone().finalize();
    let mut inner = out.inner;
    inner.write_all(&crc.to_le_bytes()).map_err(io)?;
    inner.write_all(END).map_err(io)?;
    let file = inner.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp_path, &final_path).map_err(io_err(&final_path))?;
    sync_dir(dir)?;
    Ok((final_path, count))
}

struct HashingWriter<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A decoded entry: key, metadata, value.
pub(crate) type Entry<'a> = (&'a [u8], Meta, &'a [u8]);

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A checked snapshot: where to replay the log from, its entry count, and where each run of [`CHUNK`]
/// entries starts, to be decoded by [`Loaded::entries`] (in parallel, run by run).
#[derive(Debug)]
pub(crate) struct Loaded<'a> {
    pub replay_from: u64,
    /// The hash seeds of the map it was taken from (version 3).
    pub seeds: Option<Seeds>,
    pub count: u64,
    /// Byte ranges of `data`, each [`CHUNK`] entries (the last one fewer).
    pub chunks: Vec<std::ops::Range<usize>>,
    data: &'a [u8],
    version: u32,
}

impl<'a> Loaded<'a> {
    /// The entries in `range` (one of [`Loaded::chunks`]): key, metadata, value.
    pub(crate) fn entries(&self, range: std::ops::Range<usize>) -> impl Iterator<Item = Entry<'a>> + '_ {
        let mut pos = range.start;
        std::iter::from_fn(move || {
            // Bounds were checked by `parse`: a failure here cannot happen, and would end the run.
            let (entry, next) = decode(self.data, pos, range.end, self.version, self.replay_from)?;
            pos = next;
            Some(entry)
        })
    }
}

/// Checks and indexes a snapshot file's bytes. Any damage is an error naming the file.
pub(crate) fn parse<'a>(path: &Path, data: &'a [u8]) -> Result<Loaded<'a>> {
    let corrupt =
        |detail: &str| EngineError::Corrupt { path: path.to_path_buf(), detail: detail.to_string() };
    if data.len() < HEADER_LEN + TRAILER_LEN || &data[..8] != MAGIC {
        return Err(corrupt("not a complete OTKV snapshot"));
    }
    if &data[data.len() - 8..] != END {
        return Err(corrupt("missing end marker (incomplete snapshot)"));
    }
    let le64 = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().unwrap_or([0; 8]));
    let crc_at = data.len() - 12;
    let stored_crc = u32::from_le_bytes(data[crc_at..crc_at + 4].try_into().unwrap_or([0; 4]));
    if crc32fast::hash(&data[..crc_at]) != stored_crc {
        return Err(corrupt("checksum mismatch"));
    }
    let version = u32::from_le_bytes(data[8..12].try_into().unwrap_or([0; 4]));
    if !(1..=VERSION).contains(&version) {
        return Err(corrupt("unsupported snapshot version"));
    }
    let replay_from = le64(16);
    let header_len = if version >= 3 { HEADER_LEN_V3 } else { HEADER_LEN };
    if data.len() < header_len + TRAILER_LEN {
        return Err(corrupt("not a complete OTKV snapshot"));
    }
    let seeds = (version >= 3).then(|| [le64(24), le64(32), le64(40), le64(48)]);
    let body_end = data.len() - TRAILER_LEN;
    let count = le64(body_end);
    let mut chunks = Vec::new();
    let mut pos = header_len;
    let mut chunk_start = pos;
    for i in 0..count {
        let (_, next) = decode(data, pos, body_end, version, replay_from)
            .ok_or_else(|| corrupt("entry runs past the end or is too short for its metadata"))?;
        pos = next;
        if (i + 1) % CHUNK as u64 == 0 || i + 1 == count {
            chunks.push(chunk_start..pos);
            chunk_start = pos;
        }
    }
    if pos != body_end {
        return Err(corrupt("entry count does not match the contents"));
    }
    Ok(Loaded { replay_from, seeds, count, chunks, data, version })
}

/// The entry at `pos` (ending by `end`) and where the next one starts; `None` if it does not fit.
fn decode(
    data: &[u8],
    mut pos: usize,
    end: usize,
    version: u32,
    replay_from: u64,
) -> Option<(Entry<'_>, usize)> {
    let data = data.get(..end)?;
    let u32_len = |pos: &mut usize| -> Option<usize> {
        let n = u32::from_le_bytes(data.get(*pos..*pos + 4)?.try_into().ok()?) as usize;
        *pos += 4;
        Some(n)
    };
    let slice = |pos: &mut usize, len: usize| -> Option<&[u8]> {
        let bytes = data.get(*pos..pos.checked_add(len)?)?;
        *pos += len;
        Some(bytes)
    };
    match version {
        1 | 2 => {
            let key_len = u32_len(&mut pos)?;
            let key = slice(&mut pos, key_len)?;
            let stored_len = u32_len(&mut pos)?;
            let stored = slice(&mut pos, stored_len)?;
            let (meta, value) = if version == 1 {
                (Meta { version: replay_from.saturating_sub(1), expires_ms: 0 }, stored)
            } else {
                entry::split(stored)?
            };
            Some(((key, meta, value), pos))
        }
        _ => {
            let key_len = varint(data, &mut pos)?;
            let key = slice(&mut pos, usize::try_from(key_len).ok()?)?;
            let value_len = usize::try_from(varint(data, &mut pos)?).ok()?;
            let version = u64::from_le_bytes(slice(&mut pos, 8)?.try_into().ok()?);
            let expires_ms = varint(data, &mut pos)?;
            let value = slice(&mut pos, value_len)?;
            Some(((key, Meta { version, expires_ms }, value), pos))
        }
    }
}

fn varint(data: &[u8], pos: &mut usize) -> Option<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *data.get(*pos)?;
        *pos += 1;
        n |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

/// Makes a rename or a file creation in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_3_round_trips_entries_seeds_and_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let seeds = [1, u64::MAX, 3, 4];
        // More than two runs of entries, with expiries of every varint length.
        let entries: Vec<(Vec<u8>, Box<[u8]>)> = (0..(2 * CHUNK as u64 + 7))
            .map(|i| {
                let meta =
                    Meta { version: i * 1_000_003, expires_ms: if i % 3 == 0 { 0 } else { i << (i % 57) } };
                (format!("key{i}").into_bytes(), entry::encode(meta, &vec![b'v'; (i % 300) as usize]))
            })
            .collect();
        let (path, count) = write(dir.path(), 42, seeds, |add| {
            for (k, stored) in &entries {
                let (meta, v) = entry::split(stored).expect("an entry");
                add(k, meta, v);
            }
        })
        .expect("write");
        assert_eq!(count, entries.len() as u64);
        let data = std::fs::read(&path).expect("read");
        let loaded = parse(&path, &data).expect("parse");
        assert_eq!((loaded.replay_from, loaded.seeds, loaded.count), (42, Some(seeds), count));
        assert_eq!(loaded.chunks.len(), 3);
        let read: Vec<_> = loaded.chunks.iter().flat_map(|r| loaded.entries(r.clone())).collect();
        assert_eq!(read.len(), entries.len());
        for ((k, meta, v), (key, stored)) in read.iter().zip(&entries) {
            assert_eq!((*k, Some((*meta, *v))), (key.as_slice(), entry::split(stored)));
        }
        // A byte changed anywhere is caught.
        let mut bad = data.clone();
        bad[HEADER_LEN_V3 + 5] ^= 1;
        assert!(parse(&path, &bad).is_err());
    }
}
