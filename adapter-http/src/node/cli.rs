//! [`ServerArgs`]: how to run one node (shared by `otkv-server` and `harness node`): the front door's
//! options and the engine's.

use std::path::PathBuf;
use std::time::Duration;

use otkv_engine::{Durability, EngineConfig, EngineKind, Eviction};

use super::error::ServerError;
use crate::front::FrontArgs;

/// How to run one OTKV node.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Port to listen on; 0 picks a free one (the `listening on` line says which).
    #[arg(long, default_value_t = 7070)]
    pub port: u16,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub front: FrontArgs,
    /// Storage backend: `memory` (the engine's own hash table), `flurry` (the same memory engine on a
    /// flurry map, for comparison; same files as `memory`) or `sled` (durable B-tree; needs --data-dir).
    #[arg(long, default_value = "memory")]
    pub engine: EngineKind,
    /// Directory for durable data.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// `none` (memory: volatile), `periodic` (durable every --flush-interval) or `sync` (durable before
    /// the reply; concurrent writes share one sync). With the memory engine, `periodic` and `sync` keep an
    /// operation log and snapshots in --data-dir.
    #[arg(long, default_value = "none")]
    pub durability: Durability,
    /// With `--durability periodic`: how often everything is made durable (e.g. `1s`, `200ms`).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub flush_interval: Duration,
    /// With `--durability sync`: the longest the flusher holds a sync to gather as many writers as its
    /// last sync released, so they share one (group commit). `0s` syncs as soon as any write waits.
    #[arg(long, default_value = "1ms", value_parser = humantime::parse_duration)]
    pub commit_delay: Duration,
    /// Memory engine with a log: write a snapshot this often (and on shutdown), then drop the log before
    /// it; `0s` never snapshots (the whole log is replayed at start).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub snapshot_interval: Duration,
    /// Memory engine: the most memory its data may use, e.g. `512MiB`, `2GB`, `1000000` (bytes; KiB/MiB/GiB
    /// are powers of 1024, KB/MB/GB of 1000). What counts is the engine's estimate of its allocations
    /// (`/v1/stats` shows it beside RSS). Default: no cap.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub max_memory: Option<u64>,
    /// What a write that would pass --max-memory does: `noeviction` (refused with 507 Insufficient
    /// Storage; reads and deletes go on), `allkeys-lru` (evict approximately least-recently-used keys) or
    /// `volatile-ttl` (evict the keys with the nearest expiry; 507 when none has one). Redis's names.
    #[arg(long, default_value = "noeviction", requires = "max_memory")]
    pub eviction: Eviction,
    /// Memory engine: move live entries out of mostly empty memory in the background so it can go back
    /// to the system (`on`), or never move them (`off`; memory that empties entirely still goes back).
    /// Like Redis's `activedefrag`.
    #[arg(long, default_value = "on", value_parser = parse_switch, value_name = "on|off", action = clap::ArgAction::Set)]
    pub compaction: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub replica: super::replica::args::ReplicaArgs,
}

/// `on` or `off` (or, as a configuration file may say it, `true` or `false`).
fn parse_switch(text: &str) -> Result<bool, String> {
    match text {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("`{text}`: say on or off")),
    }
}

/// A byte count: digits with an optional unit (`B`, `KB`/`MB`/`GB`/`TB` in powers of 1000,
/// `KiB`/`MiB`/`GiB`/`TiB` in powers of 1024; case-insensitive).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("`{text}` is not a byte count (e.g. 512MiB)"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => return Err(format!("unknown unit `{other}` (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)")),
    };
    n.checked_mul(scale).ok_or_else(|| format!("`{text}` is too large"))
}

impl ServerArgs {
    /// The engine configuration these arguments describe.
    pub fn engine_config(&self) -> Result<EngineConfig, ServerError> {
        if self.engine == EngineKind::Sled && self.data_dir.is_none() {
            return Err(ServerError::Config("--engine sled needs --data-dir DIR".into()));
        }
        if self.durability != Durability::None && self.data_dir.is_none() {
            return Err(ServerError::Config(format!(
                "--durability {} needs --data-dir DIR",
                self.durability
            )));
        }
        Ok(EngineConfig {
            kind: self.engine,
            data_dir: self.data_dir.clone(),
            durability: self.durability,
            flush_interval: self.flush_interval,
            commit_delay: self.commit_delay,
            snapshot_interval: Some(self.snapshot_interval).filter(|d| !d.is_zero()),
            max_memory: self.max_memory,
            eviction: self.eviction,
            compaction: self.compaction,
            active_expiry: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("64 kib"), Ok(64 << 10));
        assert!(parse_bytes("MiB").is_err());
        assert!(parse_bytes("5 parsecs").is_err());
        assert!(parse_bytes("99999999999TiB").is_err());
    }
}
