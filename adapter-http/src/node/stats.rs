//! What a node says about itself besides the front door's counters: the engine's keys, memory budget and
//! write refusal, in Prometheus text (`/metrics`) and in the `/v1/stats` document.

use otkv_engine::Engine;

use crate::front::{Exposition, Kind, Limits, Metrics, ProcessStats};

/// The engine's gauges and counters, appended to `/metrics`.
pub(super) fn write_engine_prometheus(e: &mut Exposition, engine: &Engine) {
    e.single("otkv_keys", Kind::Gauge, "Keys stored.", engine.len());
    let help = "Entries visited by listings (what their pages cost the engine).";
    e.single("otkv_listing_entries_visited_total", Kind::Counter, help, engine.listing_visits());
    if let Some(m) = engine.memory_stats() {
        let help = "Memory the data uses, as the engine estimates it.";
        e.single("otkv_memory_used_bytes", Kind::Gauge, help, m.used_bytes);
        if let Some(max) = m.max_bytes {
            let help = "The cap on otkv_memory_used_bytes (--max-memory).";
            e.single("otkv_memory_max_bytes", Kind::Gauge, help, max);
        }
        let help = "Keys evicted to stay under --max-memory.";
        e.single("otkv_evicted_keys_total", Kind::Counter, help, m.evicted_keys);
        let help = "Bytes the allocators hold for the process: the table's chunks plus malloc's in use.";
        e.single("otkv_memory_allocated_bytes", Kind::Gauge, help, m.allocated_bytes);
        let help = "Bytes of replaced and deleted entries not yet released (readers may still see them).";
        e.single("otkv_memory_retired_bytes", Kind::Gauge, help, m.retired_bytes);
        let help = "Bytes of live entries moved to give mostly empty memory back.";
        e.single("otkv_memory_compacted_bytes_total", Kind::Counter, help, m.compacted_bytes);
        if let Some(p) = ProcessStats::read() {
            let help = "Resident memory over the data's estimate (process_resident_memory_bytes / \
                        otkv_memory_used_bytes), as Redis's mem_fragmentation_ratio.";
            e.single(
                "otkv_memory_fragmentation_ratio",
                Kind::Gauge,
                help,
                fragmentation(p.rss_bytes, m.used_bytes),
            );
        }
    }
    let refusal = engine.write_refusal();
    let help = "1 while the node refuses every write after a failed sync.";
    e.single("otkv_writes_refused", Kind::Gauge, help, u8::from(refusal.is_some()));
    if let Some(r) = refusal {
        let since = r.since.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        let help = "When writes began to be refused (Unix time).";
        e.single("otkv_writes_refused_since_seconds", Kind::Gauge, help, since);
    }
}

/// The `/v1/stats` document.
pub(super) fn stats_json(metrics: &Metrics, limits: &Limits, engine: &Engine) -> serde_json::Value {
    let config = engine.config();
    let requests: serde_json::Map<String, serde_json::Value> =
        metrics.requests_by_op().map(|(name, n)| (name.to_string(), n.into())).collect();
    let process = ProcessStats::read();
    serde_json::json!({
        "engine": config.kind.as_str(),
        // What this node accepts, so a client can check its settings before sending a byte.
        "limits": { "max_key_bytes": limits.max_key_bytes, "max_value_bytes": limits.max_value_bytes },
        "durability": config.durability.as_str(),
        "keys": engine.len(),
        "listing_entries_visited": engine.listing_visits(),
        "uptime_seconds": metrics.uptime().as_secs_f64(),
        "connections": metrics.connections(),
        "requests": requests,
        "cpu_seconds": process.map(|p| p.cpu_seconds),
        "rss_bytes": process.map(|p| p.rss_bytes),
        "memory": engine.memory_stats().map(|m| serde_json::json!({
            "used_bytes": m.used_bytes,
            "max_bytes": m.max_bytes,
            "eviction": m.eviction.as_str(),
            "evicted_keys": m.evicted_keys,
            "allocated_bytes": m.allocated_bytes,
            "retired_bytes": m.retired_bytes,
            "compacted_bytes": m.compacted_bytes,
            "fragmentation_ratio": process.map(|p| fragmentation(p.rss_bytes, m.used_bytes)),
        })),
        "writes_refused": engine.write_refusal().map(|r| serde_json::json!({
            "since": humantime::format_rfc3339_seconds(r.since).to_string(),
            "reason": r.reason,
        })),
    })
}

/// RSS over the data's estimate (Redis's `mem_fragmentation_ratio`), rounded to 3 decimals; 0 with no
/// data.
fn fragmentation(rss: u64, used: u64) -> f64 {
    if used == 0 {
        return 0.0;
    }
    (rss as f64 / used as f64 * 1000.0).round() / 1000.0
}
