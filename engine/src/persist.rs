//! Making the memory engine durable: the operation log, its flusher, snapshots, and recovery.
//!
//! Layout of `DATA_DIR`: `log/log-{first seq}.otkv` segments (format in `logfile.rs`) and
//! `snapshots/snapshot-{replay_from}.otkv` (format in `snapshot.rs`).
//!
//! **Writing.** A mutation takes the log lock, gets the next sequence number, applies itself to the map and
//! appends its record to an in-memory buffer, then releases the lock (a few hundred nanoseconds; reads never
//! take it). Applying under the lock makes the log's order of writes to a key the map's order, so replaying
//! the log reproduces the map. The flusher thread ([`GroupCommit`]) swaps the buffer out, writes it and
//! `fdatasync`s it: in `sync` mode as soon as a writer asks (every writer whose record was in the buffer is
//! then acknowledged: group commit), in `periodic` mode every `flush_interval`.
//!
//! **Snapshots** (every `snapshot_interval`, and on clean shutdown), without stopping writes: the flusher
//! rotates to a new segment starting at sequence `B` (everything before `B` is then in older segments and
//! applied to the map); the snapshot thread copies the live map to a snapshot named for `B`; once that is
//! durable, older segments and snapshots are deleted, so disk use follows the data, not its history.
//!
//! **Recovery** (at open): the newest snapshot, then every log record from its `B` on, in order. Rules:
//! - a `*.tmp` snapshot is an interrupted write: removed;
//! - a damaged newest snapshot, a gap in the sequence numbers, a missing segment, or a damaged record that
//!   is followed by valid ones: the start fails with an error naming the file (serving less data silently
//!   could hide an acknowledged write);
//! - a damaged record at the very end of the last segment is a torn write (never acknowledged): cut off and
//!   reported in the log, never applied.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rayon::prelude::*;

use crate::budget::Budget;
use crate::commit::{lock, Flush, GroupCommit, Schedule};
use crate::config::{Durability, EngineConfig};
use crate::entry::Meta;
use crate::error::io_err;
use crate::error::{EngineError, Result};
use crate::logfile::{self, LogOp};
use crate::map::{Change, Changed, Map};
use crate::mapped::MappedFile;
use crate::snapshot;

/// What writers share with the flusher.
struct LogState {
    next_seq: u64,
    buf: Vec<u8>,
    /// A snapshot asks the flusher to start a new segment and tell it the first sequence number there.
    rotate: Option<crossbeam_channel::Sender<u64>>,
}

/// Bytes of log records in memory at which the flusher is asked to write them before its interval.
const FLUSH_AT: usize = 4 << 20;

/// The background snapshot thread and the flag (with its condvar) that stops it.
type Snapshotter = (JoinHandle<()>, Arc<(Mutex<bool>, Condvar)>);

/// Persistence of one memory store.
pub(crate) struct Persistence {
    inner: Arc<Inner>,
    snapshotter: Mutex<Option<Snapshotter>>,
    snapshots_enabled: bool,
    closed: std::sync::atomic::AtomicBool,
}

struct Inner {
    log_dir: PathBuf,
    snap_dir: PathBuf,
    state: Arc<Mutex<LogState>>,
    commit: GroupCommit,
    sync: bool,
    /// The map's hash seeds, written into every snapshot.
    seeds: snapshot::Seeds,
}

impl std::fmt::Debug for Persistence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persistence").field("log_dir", &self.inner.log_dir).finish_non_exhaustive()
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl Persistence {
    /// Recovers the map from `dir`, counting what it loads in `budget`, and starts logging to it. Also
    /// returns whether any recovered value has an expiry (the caller then indexes them). The map is
    /// hashed with the newest snapshot's seeds, or new ones (`snapshot.rs`).
    pub(crate) fn open<M: Map>(
        dir: &Path,
        config: &EngineConfig,
        budget: &Budget,
    ) -> Result<(Persistence, Arc<M>, bool)> {
        let started = Instant::now();
        let log_dir = dir.join("log");
        let snap_dir = dir.join("snapshots");
        for d in [&log_dir, &snap_dir] {
            std::fs::create_dir_all(d).map_err(io_err(d))?;
        }
        let (map, seeds, replay_from, snapshot_expiry) =
            load_newest_snapshot::<M>(&snap_dir, budget, config.lru_cap())?;
        let map = Arc::new(map);
        let (next_seq, segment, segment_start, log_expiry) =
            replay_log(&log_dir, replay_from, &*map, budget)?;
        tracing::info!(
            keys = map.len(),
            next_seq,
            ms = started.elapsed().as_millis() as u64,
            dir = %dir.display(),
            "recovered memory engine"
        );

        let state =
            Arc::new(Mutex::new(LogState { next_seq, buf: Vec::with_capacity(1 << 16), rotate: None }));
        let flusher = LogFlush {
            state: Arc::clone(&state),
            segment,
            segment_start,
            log_dir: log_dir.clone(),
            spare: Vec::with_capacity(1 << 16),
            out: Vec::with_capacity(1 << 16),
            synced: next_seq - 1,
        };
        let schedule = match config.durability {
            Durability::Sync => Schedule::OnRequest(config.commit_delay),
            _ => Schedule::Every(config.flush_interval),
        };
        let commit = GroupCommit::start("otkv-log-flush", schedule, next_seq - 1, flusher)
            .map_err(io_err(&log_dir))?;
        let inner = Arc::new(Inner {
            log_dir,
            snap_dir,
            state,
            commit,
            sync: config.durability == Durability::Sync,
            seeds,
        });
        let snapshotter = config
            .snapshot_interval
            .map(|every| spawn_snapshotter(Arc::clone(&inner), Arc::clone(&map), every));
        let persistence = Persistence {
            inner,
            snapshotter: Mutex::new(snapshotter),
            snapshots_enabled: config.snapshot_interval.is_some(),
            closed: std::sync::atomic::AtomicBool::new(false),
        };
        Ok((persistence, map, snapshot_expiry || log_expiry))
    }

    /// Logs `op` and applies it to the map (`apply`, given the sequence number the record will have: a
    /// put's version) under the log lock; logs only if `logged(&result)`. Returns the result and the
    /// record's sequence number (0 when nothing was logged).
    pub(crate) fn append<R>(
        &self,
        op: LogOp<'_>,
        apply: impl FnOnce(u64) -> R,
        logged: impl Fn(&R) -> bool,
    ) -> Result<(R, u64)> {
        if let Some(f) = self.inner.commit.failure() {
            return Err(EngineError::Unavailable(f.to_string()));
        }
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(EngineError::Unavailable("the engine is shutting down".into()));
        }
        let mut st = lock(&self.inner.state);
        let result = apply(st.next_seq);
        if !logged(&result) {
            return Ok((result, 0));
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        logfile::encode(&mut st.buf, seq, now_us(), op);
        let full = st.buf.len() >= FLUSH_AT;
        drop(st);
        // `sync`: every write asks. `periodic`: a buffer this full is written now, not at the interval, so
        // it never grows past a few MiB (growing it meant copying it, under this lock: 68 ms stalls of
        // single writes at 10M keys).
        if self.inner.sync || full {
            self.inner.commit.request();
        }
        Ok((result, seq))
    }

    pub(crate) fn commit(&self) -> &GroupCommit {
        &self.inner.commit
    }

    /// Makes every record so far durable.
    pub(crate) fn flush(&self) -> Result<()> {
        let last = lock(&self.inner.state).next_seq - 1;
        self.inner.commit.request();
        self.inner.commit.wait(last).map_err(EngineError::Unavailable)
    }

    /// Takes a snapshot now (tests, and clean shutdown).
    pub(crate) fn snapshot_now<M: Map>(&self, map: &M) -> Result<()> {
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(EngineError::Unavailable("the engine is closed".into()));
        }
        self.inner.snapshot(map)
    }

    /// Clean shutdown: stop the snapshot thread, write a last snapshot, flush and stop the flusher.
    /// Closing twice does nothing the second time.
    pub(crate) fn close<M: Map>(&self, map: &M) -> Result<()> {
        if self.closed.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return Ok(());
        }
        let snapshotter = lock(&self.snapshotter).take();
        if let Some((thread, stop)) = snapshotter {
            *lock(&stop.0) = true;
            stop.1.notify_all();
            let _ = thread.join();
        }
        let result = if self.snapshots_enabled && self.inner.commit.failure().is_none() {
            self.inner.snapshot(map)
        } else {
            Ok(())
        };
        self.inner.commit.close();
        result
    }
}

impl Inner {
    fn snapshot<M: Map>(&self, map: &M) -> Result<()> {
        let started = Instant::now();
        let (tx, rx) = crossbeam_channel::bounded(1);
        lock(&self.state).rotate = Some(tx);
        self.commit.request();
        let boundary = rx
            .recv_timeout(Duration::from_mins(1))
            .map_err(|_| EngineError::Unavailable("the log flusher did not rotate the log".into()))?;
        // Entries go out with their metadata; expired ones are left behind.
        let now = crate::entry::now_ms();
        let (path, count) = snapshot::write(&self.snap_dir, boundary, self.seeds, |add| {
            map.for_each(|key, meta, value| {
                if !meta.expired_at(now) {
                    add(key, meta, value);
                }
            });
        })?;
        // The snapshot holds everything before `boundary`: older segments and snapshots are history.
        for (seq, old) in logfile::list_segments(&self.log_dir)? {
            if seq < boundary {
                std::fs::remove_file(&old).map_err(io_err(&old))?;
            }
        }
        remove_snapshots_other_than(&self.snap_dir, boundary)?;
        snapshot::sync_dir(&self.log_dir)?;
        tracing::info!(file = %path.display(), keys = count, ms = started.elapsed().as_millis() as u64, "snapshot written");
        Ok(())
    }
}

fn spawn_snapshotter<M: Map>(inner: Arc<Inner>, map: Arc<M>, every: Duration) -> Snapshotter {
    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    let stop2 = Arc::clone(&stop);
    let thread = std::thread::spawn(move || loop {
        {
            let stopped = lock(&stop2.0);
            let (stopped, _) = stop2
                .1
                .wait_timeout_while(stopped, every, |s| !*s)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *stopped {
                return;
            }
        }
        if let Err(e) = inner.snapshot(&*map) {
            tracing::error!(error = %e, "snapshot failed; the log keeps every write, the next attempt follows");
        }
    });
    (thread, stop)
}

/// The flusher's side: write the buffered records, sync, rotate segments on request.
struct LogFlush {
    state: Arc<Mutex<LogState>>,
    segment: Segment,
    segment_start: u64,
    log_dir: PathBuf,
    /// The records taken from writers (swapped with `LogState::buf`).
    spare: Vec<u8>,
    /// What one flush writes: a synced marker, then the records.
    out: Vec<u8>,
    /// The highest sequence number known durable.
    synced: u64,
}

impl Flush for LogFlush {
    fn flush(&mut self) -> std::io::Result<u64> {
        let (rotate, next_seq) = {
            let mut st = lock(&self.state);
            std::mem::swap(&mut st.buf, &mut self.spare);
            (st.rotate.take(), st.next_seq)
        };
        if !self.spare.is_empty() {
            // The marker first: it tells recovery that everything before this write was synced.
            self.out.clear();
            logfile::encode_synced(&mut self.out, self.synced, now_us());
            self.out.extend_from_slice(&self.spare);
            self.segment.write(&self.out)?;
            self.segment.file.sync_data()?;
            self.spare.clear();
            if self.spare.capacity() > 16 << 20 {
                self.spare = Vec::with_capacity(1 << 16);
                self.out = Vec::with_capacity(1 << 16);
            }
        }
        self.synced = next_seq - 1;
        if let Some(tx) = rotate {
            if next_seq != self.segment_start {
                self.segment = Segment::create(&self.log_dir, next_seq)?;
                self.segment_start = next_seq;
            }
            let _ = tx.send(next_seq);
        }
        Ok(next_seq - 1)
    }
}

/// The segment being written: records go at `end`; the file is zeros from there to `allocated`.
struct Segment {
    file: File,
    end: u64,
    allocated: u64,
}

/// How far ahead of the writes a segment is grown with zeros. Growing costs one extra write of this size,
/// folded into the next sync (about 2 ms for 1 MiB here), once per 1 MiB of log.
const PREALLOCATE: u64 = 1 << 20;

impl Segment {
    /// Creates `log-{seq}` with its header, durably (file and directory entry).
    fn create(log_dir: &Path, seq: u64) -> std::io::Result<Segment> {
        let path = log_dir.join(logfile::segment_name(seq));
        let mut file = OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
        file.write_all(&logfile::header())?;
        file.sync_all()?;
        File::open(log_dir)?.sync_all()?;
        let end = logfile::HEADER_LEN as u64;
        Ok(Segment { file, end, allocated: end })
    }

    /// Writes `bytes` at the end of the records, first growing the file with zeros if they do not fit: an
    /// overwrite of allocated blocks syncs faster than an append, which must also log the new size.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let len = bytes.len() as u64;
        if self.end + len > self.allocated {
            static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
            let target = self.end + len + PREALLOCATE;
            while self.allocated < target {
                let n = (target - self.allocated).min(ZEROS.len() as u64);
                self.file.write_all_at(&ZEROS[..n as usize], self.allocated)?;
                self.allocated += n;
            }
        }
        self.file.write_all_at(bytes, self.end)?;
        self.end += len;
        Ok(())
    }
}

/// Records replayed under one guard.
const REPIN: usize = 1024;

/// What a load or replay step changed in the budget, in bytes.
fn cost_delta(changed: Changed) -> i64 {
    changed.new.map_or(0, |c| c as i64) - changed.old.map_or(0, |(_, c)| c as i64)
}

/// Loads the newest snapshot into a new map hashed with its seeds (or new ones), counting its entries in
/// `budget`; returns the map, its seeds, the sequence number to replay the log from, and whether any
/// loaded value has an expiry.
fn load_newest_snapshot<M: Map>(
    snap_dir: &Path,
    budget: &Budget,
    lru_cap: Option<u64>,
) -> Result<(M, snapshot::Seeds, u64, bool)> {
    let mut snapshots = Vec::new();
    for entry in std::fs::read_dir(snap_dir).map_err(io_err(snap_dir))? {
        let path = entry.map_err(io_err(snap_dir))?.path();
        if path.extension().is_some_and(|e| e == "tmp") {
            tracing::warn!(file = %path.display(), "removing an interrupted snapshot");
            std::fs::remove_file(&path).map_err(io_err(&path))?;
        } else if let Some(seq) = snapshot::snapshot_seq(&path) {
            snapshots.push((seq, path));
        }
    }
    snapshots.sort();
    let Some((_, newest)) = snapshots.last() else {
        let seeds = crate::map::fresh_seeds();
        return Ok((M::with_seeds(seeds, lru_cap), seeds, 1, false));
    };
    let file = MappedFile::open(newest)?;
    let loaded = snapshot::parse(newest, file.bytes())?;
    let seeds = loaded.seeds.unwrap_or_else(crate::map::fresh_seeds);
    let map = M::with_seeds(seeds, lru_cap);
    // The table sized once for every entry: growing it while inserting would copy it again and again.
    map.reserve(usize::try_from(loaded.count).unwrap_or(0));
    // rayon: decoding and inserting is the costly part, run by run on every core (both maps take
    // concurrent inserts); the sequential pass in `parse` has already checked every entry's bounds.
    let now = crate::entry::now_ms();
    let any_expiry = std::sync::atomic::AtomicBool::new(false);
    loaded.chunks.par_iter().for_each(|range| {
        let guard = map.pin();
        let (mut bytes, mut expiry) = (0, false);
        for (k, meta, v) in loaded.entries(range.clone()).filter(|(_, m, _)| !m.expired_at(now)) {
            expiry |= meta.expires_ms != 0;
            let ((), changed) = map.change(k, &guard, |_| (Change::Put(meta, v), ()));
            bytes += cost_delta(changed);
        }
        budget.add(bytes);
        if expiry {
            any_expiry.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    tracing::info!(file = %newest.display(), keys = loaded.count, "loaded snapshot");
    remove_snapshots_other_than(snap_dir, loaded.replay_from)?;
    Ok((map, seeds, loaded.replay_from, any_expiry.into_inner()))
}

fn remove_snapshots_other_than(snap_dir: &Path, keep: u64) -> Result<()> {
    for entry in std::fs::read_dir(snap_dir).map_err(io_err(snap_dir))? {
        let path = entry.map_err(io_err(snap_dir))?.path();
        if snapshot::snapshot_seq(&path).is_some_and(|s| s != keep) {
            std::fs::remove_file(&path).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

/// Replays every segment from `replay_from` into `map`; returns the next sequence number, the segment to
/// append to, and its first sequence number.
/// Replays the log from `replay_from` into `map`, counting in `budget`; returns the next sequence number,
/// the segment to append to and its first sequence number, and whether any replayed put has an expiry.
fn replay_log<M: Map>(
    log_dir: &Path,
    replay_from: u64,
    map: &M,
    budget: &Budget,
) -> Result<(u64, Segment, u64, bool)> {
    let mut segments = logfile::list_segments(log_dir)?;
    // Segments before the snapshot's boundary are history a crash left behind after the snapshot.
    for (seq, path) in segments.iter().filter(|(seq, _)| *seq < replay_from) {
        tracing::info!(file = %path.display(), seq, "removing a log segment the snapshot covers");
        std::fs::remove_file(path).map_err(io_err(path))?;
    }
    segments.retain(|(seq, _)| *seq >= replay_from);
    if let Some((first, path)) = segments.first() {
        if *first != replay_from {
            return Err(EngineError::Corrupt {
                path: path.clone(),
                detail: format!(
                    "the log starts at sequence {first} but recovery needs {replay_from}: a snapshot or a log \
                     segment is missing"
                ),
            });
        }
    } else if replay_from > 1 {
        return Err(EngineError::Corrupt {
            path: log_dir.join(logfile::segment_name(replay_from)),
            detail: "the log segment that follows the newest snapshot is missing".into(),
        });
    }
    let mut next_seq = replay_from;
    let mut last_end = logfile::HEADER_LEN as u64;
    let mut last_version = logfile::VERSION;
    let now = crate::entry::now_ms();
    // Re-pinned every REPIN records: a replay of many overwrites releases what it replaces as it goes,
    // instead of holding every replaced value until the end.
    let mut guard = map.pin();
    let mut since_repin = 0;
    let segment_count = segments.len();
    let mut any_expiry = false;
    for (i, (start, path)) in segments.iter().enumerate() {
        if *start != next_seq {
            return Err(EngineError::Corrupt {
                path: path.clone(),
                detail: format!(
                    "segment starts at sequence {start}, but the previous one ended at {next_seq}"
                ),
            });
        }
        let file = MappedFile::open(path)?;
        let data = file.bytes();
        let scan = logfile::scan(path, data, next_seq, |record| {
            since_repin += 1;
            if since_repin == REPIN {
                since_repin = 0;
                map.repin(&mut guard);
                // The pages read so far leave the RSS: a long log is replayed in bounded memory.
                let key = match record.op {
                    LogOp::Put { key, .. } | LogOp::Delete(key) => key,
                };
                file.done_before((key.as_ptr() as usize).saturating_sub(data.as_ptr() as usize));
            }
            let (key, change) = match record.op {
                // A put that has expired since is gone, whatever it replaced.
                LogOp::Put { key, expires_ms, .. } if expires_ms != 0 && expires_ms <= now => (key, None),
                LogOp::Put { key, value, expires_ms } => {
                    any_expiry |= expires_ms != 0;
                    (key, Some((Meta { version: record.seq, expires_ms }, value)))
                }
                LogOp::Delete(key) => (key, None),
            };
            let change = change.map_or(Change::Remove, |(meta, value)| Change::Put(meta, value));
            let ((), changed) = map.change(key, &guard, |_| (change, ()));
            budget.add(cost_delta(changed));
        })?;
        if let Some((offset, reason)) = &scan.torn {
            if i + 1 != segment_count {
                return Err(EngineError::Corrupt {
                    path: path.clone(),
                    detail: format!(
                        "damaged record at offset {offset} ({reason}) in a segment that later ones follow"
                    ),
                });
            }
            tracing::warn!(file = %path.display(), offset, reason = %reason, "cut a torn record off the end of the log");
            let file = OpenOptions::new().write(true).open(path).map_err(io_err(path))?;
            if scan.valid_len < logfile::HEADER_LEN {
                file.set_len(0).map_err(io_err(path))?;
                (&file).write_all(&logfile::header()).map_err(io_err(path))?;
            } else {
                file.set_len(scan.valid_len as u64).map_err(io_err(path))?;
            }
            file.sync_all().map_err(io_err(path))?;
        }
        next_seq = scan.next_seq;
        last_end = scan.valid_len.max(logfile::HEADER_LEN) as u64;
        last_version = scan.version;
    }
    drop(guard);
    let (segment, start) = match segments.last() {
        // A segment of an older format is only read: new records go to a new segment.
        Some((start, path)) if last_version == logfile::VERSION => {
            let file = OpenOptions::new().write(true).open(path).map_err(io_err(path))?;
            let allocated = file.metadata().map_err(io_err(path))?.len();
            (Segment { file, end: last_end, allocated }, *start)
        }
        _ => (Segment::create(log_dir, next_seq).map_err(io_err(log_dir))?, next_seq),
    };
    Ok((next_seq, segment, start, any_expiry))
}
