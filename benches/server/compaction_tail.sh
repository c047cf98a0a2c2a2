#!/usr/bin/env bash
# GET tail latency while compaction moves entries, against the same sequence with compaction off.
#
# Each round starts one otkv-server (--workers 1, --compaction on or off), loads 1M keys of 100 B
# interleaved with 1M other keys (so that deleting the others leaves every chunk half full), then runs
# `harness run --node` (64 connections, open loop at RATE GET/s, coordinated omission corrected) and,
# two seconds into its measured window, deletes the other keys from a separate client. With compaction on,
# the memory thread then moves the 1M live entries into half as many chunks while the GETs go on; with it
# off, nothing moves. Rounds alternate on/off (on first, then off first); prints each round's p99 and p99.9 and the medians' ratios.
#
# Usage: benches/server/compaction_tail.sh [ROUNDS] [RATE]   (default 3 rounds each, 20000 GET/s)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
RATE=${2:-20000}
cargo build --release -q -p otkv-adapter-http -p otkv-harness
TMP=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$TMP"' EXIT

round() { # round ON|OFF N
  local mode=$1 n=$2 out="$TMP/$1-$2"
  ./target/release/otkv-server --port 0 --workers 1 --compaction "$mode" >"$out.server" 2>&1 &
  local pid=$!
  until grep -q "listening on" "$out.server"; do
    kill -0 "$pid" 2>/dev/null || { cat "$out.server" >&2; exit 1; }
    sleep 0.1
  done
  local url
  url=$(grep -o "http://[0-9.:]*" "$out.server" | head -n 1)
  python3 - "$url" load <<'PY'
import sys
sys.path.insert(0, "benches/server")
import memory_churn as m
class Node(m.Otkv):
    def __init__(self, port):
        import socket
        self.sock = socket.create_connection(("127.0.0.1", port))
url = sys.argv[1]
node = Node(int(url.rsplit(":", 1)[1]))
n, batch = 1_000_000, []
for i in range(n):
    batch += [(m.key(i), m.value(i, 100)), (b"other%011d" % i, m.value(i, 100))]
    if len(batch) >= 1000:
        node.put_many(batch); batch = []
node.put_many(batch)
PY
  ./target/release/harness run --node "$url" --workload get --keys 1000000 --value-size 100 \
    --connections 64 --rate "$RATE" --duration 10s --warmup 1s --json --out "$out.res" >"$out.json" 2>"$out.err" &
  local harness=$!
  # Two seconds into the measured window (after the preload and the warm-up), delete the other keys.
  until grep -q "preloading" "$out.err" 2>/dev/null; do
    kill -0 "$harness" 2>/dev/null || { cat "$out.err" >&2; exit 1; }
    sleep 0.1
  done
  until curl -s "$url/v1/stats" | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["requests"].get("get",0) > 0 else 1)'; do sleep 0.2; done
  sleep 3
  python3 - "$url" <<'PY'
import socket, sys
port = int(sys.argv[1].rsplit(":", 1)[1])
sock = socket.create_connection(("127.0.0.1", port))
n = 1_000_000
for start in range(0, n, 500):
    reqs = [b"DELETE /v1/kv/other%011d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(start, min(n, start + 500))]
    sock.sendall(b"".join(reqs))
    buf = b""
    while buf.count(b"HTTP/1.1 ") < len(reqs):
        buf += sock.recv(1 << 20)
PY
  wait "$harness"
  local moved
  moved=$(curl -s "$url/v1/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["memory"]["compacted_bytes"])')
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$out.json" "$mode" "$n" "$moved" <<'PY' | tee -a "$TMP/rows"
import json, sys
run = json.load(open(sys.argv[1]))["runs"][0]
lat = run["latency_ms"]
print(f"{sys.argv[2]} {sys.argv[3]} {lat['p99']:.3f} {lat['p999']:.3f} {int(sys.argv[4]) >> 20}")
PY
}

echo "compaction round p99_ms p99.9_ms moved_MiB"
# Alternating, and in the other order every other round (a round's place in the run is not its setting).
for n in $(seq 1 "$ROUNDS"); do
  if ((n % 2)); then
    round on "$n"; round off "$n"
  else
    round off "$n"; round on "$n"
  fi
done
python3 - "$TMP/rows" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {m: (statistics.median(float(r[2]) for r in rows if r[0] == m),
           statistics.median(float(r[3]) for r in rows if r[0] == m)) for m in ("on", "off")}
print(f"median p99 on/off {med['on'][0]:.3f}/{med['off'][0]:.3f} ms = {med['on'][0] / med['off'][0]:.2f}x; "
      f"p99.9 {med['on'][1]:.3f}/{med['off'][1]:.3f} ms = {med['on'][1] / med['off'][1]:.2f}x")
PY
