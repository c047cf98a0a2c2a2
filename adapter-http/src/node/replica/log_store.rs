//! The Raft log and its latest snapshot: in memory for Raft ([`Storage`]), and in two files so a member
//! restarts where it stopped.
//!
//! - `raft/snapshot`: the latest snapshot (its index, term, members and the engine's data), protobuf,
//!   replaced whole (written aside, synced, renamed).
//! - `raft/log`: records appended since, each `u32 length | u32 CRC-32 | kind | payload`: an entry or the
//!   hard state (term, vote, commit). Replaying them in order gives the log back: an entry at an index
//!   already held replaces it and everything after it, as Raft's own append does. A record cut short or
//!   failing its CRC ends the log (a crash in the middle of a write): it was never acknowledged, since
//!   the log is synced before this member answers anyone (with durability `sync`).
//!
//! A snapshot drops the entries up to its index, from memory and from the file (rewritten aside, then
//! renamed). Without a data directory nothing is written: a volatile group.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

const ENTRY: u8 = 1;
const HARD_STATE: u8 = 2;

/// The log, the hard state and the snapshot, with their files.
pub struct LogStore {
    hard: HardState,
    /// The configuration Raft starts from: the snapshot's (changes after it are in the log, applied again).
    conf: ConfState,
    snap: Snapshot,
    /// Entries after the snapshot's index, in order, without gaps.
    entries: Vec<Entry>,
    files: Option<LogFiles>,
    /// Set when Raft asked for a snapshot for a member the latest one does not name (one just added):
    /// the Raft thread then takes a new one, and Raft asks again.
    wants_fresh: std::cell::Cell<bool>,
}

struct LogFiles {
    dir: PathBuf,
    log: BufWriter<File>,
    /// Whether anything was recorded since the last flush.
    dirty: bool,
    /// Whether anything was flushed since the last sync.
    unsynced: bool,
}

impl LogStore {
    /// Opens the log in `dir` (`None`: in memory only). A store with no snapshot on disk starts from
    /// `initial`, when given (a new group's first snapshot), and writes it.
    pub fn open(dir: Option<&Path>, initial: Option<Snapshot>) -> std::io::Result<LogStore> {
        let mut store = LogStore::empty(None);
        let Some(dir) = dir else {
            if let Some(snap) = initial {
                store.install(snap);
            }
            return Ok(store);
        };
        let dir = dir.join("raft");
        fs::create_dir_all(&dir)?;
        let on_disk = match fs::read(dir.join("snapshot")) {
            Ok(bytes) => Some(Snapshot::parse_from_bytes(&bytes).map_err(|e| invalid(&dir, &e.to_string()))?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let fresh = on_disk.is_none();
        if let Some(snap) = on_disk.or(initial) {
            store.install(snap);
        }
        let valid = store.replay(&dir.join("log"))?;
        let file = OpenOptions::new().create(true).write(true).truncate(false).open(dir.join("log"))?;
        // Drop a torn tail, so new records follow the last whole one.
        file.set_len(valid)?;
        let log = BufWriter::with_capacity(1 << 20, OpenOptions::new().append(true).open(dir.join("log"))?);
        drop(file);
        store.files = Some(LogFiles { dir, log, dirty: false, unsynced: false });
        if fresh && store.snap.get_metadata().index > 0 {
            store.write_snapshot_file()?;
        }
        Ok(store)
    }

    /// No log, no snapshot, writing to `files`.
    fn empty(files: Option<LogFiles>) -> LogStore {
        LogStore {
            hard: HardState::default(),
            conf: ConfState::default(),
            snap: Snapshot::default(),
            entries: Vec::new(),
            files,
            wants_fresh: std::cell::Cell::new(false),
        }
    }

    /// Replays the log file into memory; returns the length of its whole records.
    fn replay(&mut self, path: &Path) -> std::io::Result<u64> {
        let mut bytes = Vec::new();
        match File::open(path) {
            Ok(mut f) => f.read_to_end(&mut bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut at = 0usize;
        while let Some(head) = bytes.get(at..at + 9) {
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            let Some(body) = bytes.get(at + 8..at + 9 + len) else { break };
            if crc32fast::hash(body) != crc {
                break;
            }
            let payload = &body[1..];
            match body[0] {
                ENTRY => {
                    let entry =
                        Entry::parse_from_bytes(payload).map_err(|e| invalid(path, &e.to_string()))?;
                    self.append_in_memory(std::slice::from_ref(&entry));
                }
                HARD_STATE => {
                    self.hard =
                        HardState::parse_from_bytes(payload).map_err(|e| invalid(path, &e.to_string()))?;
                }
                other => return Err(invalid(path, &format!("unknown record kind {other}"))),
            }
            at += 9 + len;
        }
        // The snapshot may be newer than the hard state recorded with the log.
        let snap_meta = self.snap.get_metadata();
        self.hard.commit = self.hard.commit.max(snap_meta.index);
        self.hard.term = self.hard.term.max(snap_meta.term);
        Ok(at as u64)
    }

    fn install(&mut self, snap: Snapshot) {
        let meta = snap.get_metadata();
        self.hard.term = self.hard.term.max(meta.term);
        self.hard.commit = self.hard.commit.max(meta.index);
        self.conf = meta.get_conf_state().clone();
        let index = meta.index;
        self.entries.retain(|e| e.index > index);
        if self.entries.first().is_some_and(|e| e.index != index + 1) {
            self.entries.clear();
        }
        self.snap = snap;
    }

    fn append_in_memory(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let snap_index = self.snap.get_metadata().index;
        if first.index <= snap_index {
            // Already in the snapshot (a record written before it was taken).
            let skip = (snap_index + 1 - first.index) as usize;
            return self.append_in_memory(entries.get(skip..).unwrap_or_default());
        }
        let keep = (first.index - snap_index - 1) as usize;
        self.entries.truncate(keep);
        if self.entries.len() == keep {
            self.entries.extend_from_slice(entries);
        }
    }

    /// Appends entries Raft handed over (replacing any at the same indexes and after), to memory and file.
    pub fn append(&mut self, entries: &[Entry]) -> std::io::Result<()> {
        self.append_in_memory(entries);
        for e in entries {
            self.record(ENTRY, &e.write_to_bytes().map_err(|e| invalid(Path::new("raft"), &e.to_string()))?)?;
        }
        Ok(())
    }

    /// Records the hard state.
    pub fn set_hard_state(&mut self, hard: &HardState) -> std::io::Result<()> {
        self.hard = hard.clone();
        self.record(
            HARD_STATE,
            &hard.write_to_bytes().map_err(|e| invalid(Path::new("raft"), &e.to_string()))?,
        )
    }

    /// Raft's commit index moved (not recorded: the next hard state or the log replay says it again).
    pub fn set_commit(&mut self, commit: u64) {
        self.hard.commit = commit;
    }

    fn record(&mut self, kind: u8, payload: &[u8]) -> std::io::Result<()> {
        let Some(files) = &mut self.files else { return Ok(()) };
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&[kind]);
        hasher.update(payload);
        files.log.write_all(&(payload.len() as u32).to_le_bytes())?;
        files.log.write_all(&hasher.finalize().to_le_bytes())?;
        files.log.write_all(&[kind])?;
        files.log.write_all(payload)?;
        files.dirty = true;
        Ok(())
    }

    /// Writes what was recorded to the file; with `durable`, syncs it too.
    pub fn flush(&mut self, durable: bool) -> std::io::Result<()> {
        let Some(files) = &mut self.files else { return Ok(()) };
        if files.dirty {
            files.log.flush()?;
            files.dirty = false;
            files.unsynced = true;
        }
        if durable && files.unsynced {
            files.log.get_ref().sync_data()?;
            files.unsynced = false;
        }
        Ok(())
    }

    /// Installs a snapshot a leader sent: the log before it is gone, and so is any entry that disagrees.
    pub fn apply_snapshot(&mut self, snap: Snapshot) -> std::io::Result<()> {
        self.install(snap);
        self.write_snapshot_file()?;
        self.rewrite_log()
    }

    /// Takes a snapshot at `index` (applied here) with `data` and `conf`, and drops the log up to it.
    pub fn compact(&mut self, index: u64, conf: ConfState, data: Vec<u8>) -> std::io::Result<()> {
        let term = self.term(index).map_err(|e| invalid(Path::new("raft"), &e.to_string()))?;
        let mut snap = Snapshot::default();
        snap.set_data(data.into());
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(conf);
        let keep_conf = self.conf.clone();
        self.install(snap);
        // Raft's own configuration is whatever it applied; `conf` matters only for a restart.
        self.conf = keep_conf;
        self.write_snapshot_file()?;
        self.rewrite_log()
    }

    fn write_snapshot_file(&mut self) -> std::io::Result<()> {
        let Some(files) = &self.files else { return Ok(()) };
        let bytes = self.snap.write_to_bytes().map_err(|e| invalid(&files.dir, &e.to_string()))?;
        replace_file(&files.dir, "snapshot", &bytes)
    }

    fn rewrite_log(&mut self) -> std::io::Result<()> {
        let Some(files) = &mut self.files else { return Ok(()) };
        files.log.flush()?;
        let dir = files.dir.clone();
        // The entries after the snapshot and the hard state, written aside, then put in the log's place.
        let tmp = dir.join("log.new");
        let log = BufWriter::new(File::create(&tmp)?);
        let mut fresh =
            LogStore::empty(Some(LogFiles { dir: dir.clone(), log, dirty: false, unsynced: false }));
        fresh.set_hard_state(&self.hard)?;
        for e in &self.entries {
            fresh.record(ENTRY, &e.write_to_bytes().map_err(|e| invalid(&dir, &e.to_string()))?)?;
        }
        fresh.flush(true)?;
        drop(fresh);
        fs::rename(&tmp, dir.join("log"))?;
        File::open(&dir)?.sync_all()?;
        let log = BufWriter::with_capacity(1 << 20, OpenOptions::new().append(true).open(dir.join("log"))?);
        *files = LogFiles { dir, log, dirty: false, unsynced: false };
        Ok(())
    }

    /// Whether Raft asked for a snapshot newer than the latest (and forgets that it did).
    pub fn take_wants_fresh(&self) -> bool {
        self.wants_fresh.replace(false)
    }

    /// The latest snapshot.
    pub fn snapshot_ref(&self) -> &Snapshot {
        &self.snap
    }

    /// The index of the last entry.
    pub fn last(&self) -> u64 {
        self.entries.last().map_or(self.snap.get_metadata().index, |e| e.index)
    }

    fn first(&self) -> u64 {
        self.snap.get_metadata().index + 1
    }
}

/// Writes `name` in `dir` whole or not at all: aside, synced, renamed, and the directory synced.
fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.new"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

fn invalid(path: &Path, why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {why}", path.display()))
}

impl Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState { hard_state: self.hard.clone(), conf_state: self.conf.clone() })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let offset = self.first();
        let mut entries = self.entries[(low - offset) as usize..(high - offset) as usize].to_vec();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let meta = self.snap.get_metadata();
        if idx == meta.index {
            return Ok(meta.term);
        }
        if idx < meta.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.entries.get((idx - self.first()) as usize) {
            Some(e) => Ok(e.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, _request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let conf = self.snap.get_metadata().get_conf_state();
        if !conf.voters.contains(&to) && !conf.learners.contains(&to) {
            // A member can only take a snapshot that names it.
            self.wants_fresh.set(true);
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(self.snap.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, data: format!("{index}@{term}").into_bytes().into(), ..Entry::default() }
    }

    #[test]
    fn a_reopened_log_holds_what_was_written_with_later_entries_replacing_earlier_ones() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = LogStore::open(Some(dir.path()), None).unwrap();
            s.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]).unwrap();
            s.append(&[entry(3, 2), entry(4, 2)]).unwrap();
            let hard = HardState { term: 2, commit: 3, ..HardState::default() };
            s.set_hard_state(&hard).unwrap();
            s.flush(true).unwrap();
        }
        let s = LogStore::open(Some(dir.path()), None).unwrap();
        assert_eq!(s.last(), 4);
        assert_eq!(s.term(3).unwrap(), 2);
        assert_eq!(s.initial_state().unwrap().hard_state.commit, 3);
    }

    #[test]
    fn a_torn_tail_is_dropped_and_a_snapshot_replaces_the_log_before_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = LogStore::open(Some(dir.path()), None).unwrap();
            s.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]).unwrap();
            s.flush(true).unwrap();
            s.compact(2, ConfState::from((vec![1, 2, 3], vec![])), b"data".to_vec()).unwrap();
            s.append(&[entry(4, 1)]).unwrap();
            s.flush(true).unwrap();
        }
        // Half a record at the end: a crash in the middle of a write.
        let log = dir.path().join("raft/log");
        let mut bytes = fs::read(&log).unwrap();
        bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2]);
        fs::write(&log, bytes).unwrap();
        let mut s = LogStore::open(Some(dir.path()), None).unwrap();
        assert_eq!((s.first(), s.last()), (3, 4));
        assert_eq!(s.snapshot_ref().get_data(), b"data");
        assert_eq!(s.initial_state().unwrap().conf_state.voters, vec![1, 2, 3]);
        assert!(matches!(s.term(1), Err(raft::Error::Store(StorageError::Compacted))));
        s.append(&[entry(5, 1)]).unwrap();
        s.flush(true).unwrap();
        assert_eq!(LogStore::open(Some(dir.path()), None).unwrap().last(), 5);
    }
}
