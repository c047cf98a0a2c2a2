#!/usr/bin/env bash
# Memory per key: RSS of one OTKV node (memory engine, durability none) and one redis-server holding the
# same data, side by side in one run. Each is started by the harness, preloaded with N keys of S bytes
# (16-byte keys), then read for a second; RSS comes from the server itself (/metrics, INFO memory).
# Prints bytes per key and the OTKV/Redis ratio for 1M × 100 B, 1M × 16 B and 100k × 4 KiB.
# Usage: benches/server/memory.sh            (needs redis-server: apt-get install redis-server)
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install redis-server)"; exit 1; }
cargo build --release -q -p otkv-harness
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
printf "%-14s %12s %12s %10s %10s %8s\n" "data" "OTKV RSS" "Redis RSS" "OTKV B/key" "Redis B/key" "ratio"
for spec in "1000000 100" "1000000 16" "100000 4096"; do
  set -- $spec
  ./target/release/harness run --target otkv,redis --nodes 1 --workload get --keys "$1" --value-size "$2" \
    --duration 1s --warmup 0s --connections 16 --json --out "$TMP/res" >"$TMP/summary.json" 2>/dev/null
  python3 - "$TMP/summary.json" "$1" "$2" <<'PY'
import json, sys
runs = json.load(open(sys.argv[1]))["runs"]
keys, size = int(sys.argv[2]), int(sys.argv[3])
rss = {r["target"]: r["per_node"][0]["rss_bytes"] for r in runs}
o, r = rss["otkv"], rss["redis"]
label = f"{keys // 1000}k x {size} B" if keys < 1_000_000 else f"{keys // 1_000_000}M x {size} B"
print(f"{label:<14} {o / 2**20:9.1f} MiB {r / 2**20:9.1f} MiB {o / keys:10.0f} {r / keys:10.0f} {o / r:8.2f}")
PY
done
