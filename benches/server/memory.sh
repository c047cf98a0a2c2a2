#!/usr/bin/env bash
# Memory per key: RSS of one server holding the same data, side by side in one run:
#   OTKV on its own table (--engine memory), OTKV on flurry (--engine flurry), redis-server and memcached.
# OTKV and Redis are started by the harness and preloaded by it with N keys of S bytes (16-byte keys
# `key0000000000000`..), then read for a second; their RSS comes from the server itself (/metrics, INFO
# memory). memcached gets the same keys and values from a pipelined loader here (the harness does not
# speak its protocol), and its RSS is read from /proc (memcached -m 4096 -t 1, so its slab cap is not the
# limit).
# Prints bytes per key and each server's ratio to Redis for 1M x 100 B, 1M x 16 B and 100k x 4 KiB.
# Usage: benches/server/memory.sh   (needs redis-server and memcached: apt-get install redis-server memcached)
set -euo pipefail
cd "$(dirname "$0")/../.."
for tool in redis-server memcached; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install $tool)"; exit 1; }
done
cargo build --release -q -p otkv-harness
TMP=$(mktemp -d)
MC_PID=
trap '[ -n "$MC_PID" ] && kill $MC_PID 2>/dev/null; rm -rf "$TMP"' EXIT

# harness_rss ENGINE KEYS SIZE: RSS of the OTKV node (and, with ENGINE=memory, of redis-server), as JSON.
harness_rss() {
  local targets=otkv
  [ "$1" = memory ] && targets=otkv,redis
  ./target/release/harness run --target "$targets" --engine "$1" --nodes 1 --workload get --keys "$2" \
    --value-size "$3" --duration 1s --warmup 0s --connections 16 --json --out "$TMP/res" >"$TMP/$1.json" 2>/dev/null
}

# memcached_rss KEYS SIZE: loads memcached with the same keys and values; prints its RSS in bytes.
memcached_rss() {
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  memcached -m 4096 -t 1 -U 0 -l 127.0.0.1 -p "$port" -u "$(id -un)" &
  MC_PID=$!
  python3 - "$port" "$1" "$2" <<'PY'
import socket, sys, time
port, keys, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
for _ in range(100):
    try:
        s = socket.create_connection(("127.0.0.1", port)); break
    except OSError:
        time.sleep(0.05)
batch = []
for i in range(keys):
    value = (f"k{i}:c0:s0:".encode() + b"." * size)[:size]
    batch.append(b"set key%013d 0 0 %d noreply\r\n%s\r\n" % (i, size, value))
    if len(batch) == 1000 or i == keys - 1:
        s.sendall(b"".join(batch)); batch = []
s.sendall(b"get key0000000000000\r\n")
buf = b""
while not buf.endswith(b"END\r\n"):
    buf += s.recv(65536)
PY
  awk '/VmRSS/ {print $2 * 1024}' "/proc/$MC_PID/status"
  kill "$MC_PID"; wait "$MC_PID" 2>/dev/null || true
  MC_PID=
}

printf "%-14s %14s %14s %14s %14s   %s\n" "data" "OTKV table" "OTKV flurry" "Redis" "memcached" "bytes/key; ratio to Redis"
for spec in "1000000 100" "1000000 16" "100000 4096"; do
  set -- $spec
  harness_rss memory "$1" "$2"
  harness_rss flurry "$1" "$2"
  mc=$(memcached_rss "$1" "$2")
  python3 - "$TMP/memory.json" "$TMP/flurry.json" "$mc" "$1" "$2" <<'PY'
import json, sys
def rss(path):
    return {r["target"]: r["per_node"][0]["rss_bytes"] for r in json.load(open(path))["runs"]}
table, flurry = rss(sys.argv[1]), rss(sys.argv[2])
mc, keys, size = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
redis = table["redis"]
label = f"{keys // 1000}k x {size} B" if keys < 1_000_000 else f"{keys // 1_000_000}M x {size} B"
cells = [table["otkv"], flurry["otkv"], redis, mc]
print(f"{label:<14} " + " ".join(f"{c / 2**20:8.1f} MiB " for c in cells)
      + "  " + " / ".join(f"{c / keys:.0f}" for c in cells)
      + "; " + " / ".join(f"{c / redis:.2f}" for c in cells))
PY
done
