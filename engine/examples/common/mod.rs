//! Helpers the engine's examples share: the keys they write, and what they read of the process and disk.
#![allow(dead_code)] // each example uses some of them

use std::path::Path;

/// Key `i` as the benchmarks write it: `key` and 13 decimal digits, 16 bytes.
pub fn key(i: u64) -> [u8; 16] {
    let mut k = *b"key0000000000000";
    let mut n = i;
    for b in k[3..].iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
    k
}

/// Bytes of the files under `dir`, recursively.
pub fn disk_use(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let meta = entry.metadata().map_or((false, 0), |m| (m.is_dir(), m.len()));
        total += if meta.0 { disk_use(&entry.path()) } else { meta.1 };
    }
    total
}

/// This process's resident set, from `/proc/self/statm`.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()).unwrap_or(0) * 4096
}
