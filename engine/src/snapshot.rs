//! Snapshots of the memory map: the whole store in one checksummed file.
//!
//! `snapshots/snapshot-{replay_from:020}.otkv` (little-endian):
//!
//! ```text
//! header:  magic "OTKVSNP1" (8) | version u32 = 2 | flags u32 = 0 | replay_from u64
//! entry:   key_len u32 | key | stored_len u32 | version u64 | expires_ms u64 | value
//! trailer: entries u64 | crc32 u32 (of every byte before it) | magic "OTKVEND1" (8)
//! ```
//!
//! An entry's stored part is the engine's own (`entry.rs`): the value's version and absolute expiry, then
//! the value. Version 1 snapshots (before versions and expiry) are still read: `key_len | key | value_len |
//! value`; their values never expire and get the version `replay_from - 1`, which is at least the
//! sequence number of every write they hold and so can never equal an older version of the key.
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
use crate::{EngineError, Result};

const MAGIC: &[u8; 8] = b"OTKVSNP1";
const END: &[u8; 8] = b"OTKVEND1";
const VERSION: u32 = 2;
const HEADER_LEN: usize = 24;
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

/// Writes `entries` (each a key and its stored form: metadata, then value) as the snapshot for
/// `replay_from` in `dir`, durably; returns the file and entry count.
pub(crate) fn write<'a>(
    dir: &Path,
    replay_from: u64,
    entries: impl Iterator<Item = (&'a [u8], &'a [u8])>,
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
    let mut count = 0u64;
    for (key, value) in entries {
        out.write_all(&(key.len() as u32).to_le_bytes()).map_err(io)?;
        out.write_all(key).map_err(io)?;
        out.write_all(&(value.len() as u32).to_le_bytes()).map_err(io)?;
        out.write_all(value).map_err(io)?;
        count += 1;
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

/// A loaded snapshot: where to replay the log from, and the entries (borrowing `data`).
#[derive(Debug)]
pub(crate) struct Loaded<'a> {
    pub replay_from: u64,
    pub entries: Vec<(&'a [u8], Meta, &'a [u8])>,
}

/// Checks and parses a snapshot file's bytes. Any damage is an error naming the file.
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
    let body_end = data.len() - TRAILER_LEN;
    let count = le64(body_end);
    let mut entries = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(1 << 24));
    let mut pos = HEADER_LEN;
    let take = |pos: &mut usize| -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(data.get(*pos..*pos + 4)?.try_into().ok()?) as usize;
        let end = (*pos + 4).checked_add(len)?;
        if end > body_end {
            return None;
        }
        let bytes = &data[*pos + 4..end];
        *pos = end;
        Some(bytes)
    };
    for _ in 0..count {
        let key = take(&mut pos).ok_or_else(|| corrupt("entry runs past the end"))?;
        let stored = take(&mut pos).ok_or_else(|| corrupt("entry runs past the end"))?;
        if version == 1 {
            entries.push((key, Meta { version: replay_from.saturating_sub(1), expires_ms: 0 }, stored));
        } else {
            let (meta, value) =
                entry::split(stored).ok_or_else(|| corrupt("entry too short for its metadata"))?;
            entries.push((key, meta, value));
        }
    }
    if pos != body_end {
        return Err(corrupt("entry count does not match the contents"));
    }
    Ok(Loaded { replay_from, entries })
}

/// Makes a rename or a file creation in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}
