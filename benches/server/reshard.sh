#!/usr/bin/env bash
# Growing a cluster under load: KEYS keys of 100 B behind `harness proxy` on 2 nodes, then a third node
# added (the proxy's --nodes-file, SIGHUP) and `harness reshard --proxy` moving the keys, while an
# open-loop GET load (RATE ops/s through the proxy) runs. Prints the mover's time and rate, and the
# load's p99 before the move and during it, with its failed requests.
# Usage: benches/server/reshard.sh [KEYS] [RATE]   (defaults 1000000 and 10000)
set -euo pipefail
cd "$(dirname "$0")/../.."
KEYS=${1:-1000000}
RATE=${2:-10000}
cargo build --release -q -p otkv-harness --bin harness
H=./target/release/harness
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

start() { # name args... (sets URL)
  local name=$1
  shift
  "$H" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
  PIDS+=($!)
  LAST_PID=$!
  until grep -q listening "$TMP/$name.out" 2>/dev/null; do sleep 0.05; done
  URL=$(sed 's/listening on //' "$TMP/$name.out")
}
start n0 node --port 0 && N0=$URL
start n1 node --port 0 && N1=$URL
start n2 node --port 0 && N2=$URL
printf '%s\n%s\n' "$N0" "$N1" >"$TMP/nodes"
start proxy proxy --port 0 --nodes-file "$TMP/nodes" && P=$URL && PROXY_PID=$LAST_PID

load() { # out duration -> runs the GET load (its untimed preload writes every key first)
  "$H" run --proxy "$P" --workload ycsb-c --keys "$KEYS" --rate "$RATE" --connections 32 --warmup 0s \
    --duration "$2" --json --out "$TMP/$1" >"$TMP/$1.json" 2>"$TMP/$1.err"
}
p99() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["runs"][0]; print(r["latency_ms"]["p99"], r["errors_total"], r["ops"]); print(json.dumps(r["errors"]), file=sys.stderr)' "$1"; }

echo "== $KEYS keys of 100 B on 2 nodes behind the proxy; GET load at $RATE ops/s through it"
load before 20s
read -r before_p99 before_err before_ops < <(p99 "$TMP/before.json")
echo "before the move: p99 ${before_p99} ms, ${before_err} failed of ${before_ops}"

# The load again (its preload rewrites the same keys, on 2 nodes), then the third node and the mover once
# its measured window is open.
"$H" run --proxy "$P" --workload ycsb-c --keys "$KEYS" --rate "$RATE" --connections 32 --warmup 0s \
  --duration 300s --json --out "$TMP/during" >"$TMP/during.json" 2>"$TMP/during.err" &
LOAD=$!
until grep -q '\[   1s/' "$TMP/during.err" 2>/dev/null; do sleep 0.2; done
printf '%s\n%s\n%s\nprevious %s\nprevious %s\n' "$N0" "$N1" "$N2" "$N0" "$N1" >"$TMP/nodes"
kill -HUP "$PROXY_PID"
sleep 0.5
start_s=$(date +%s.%N)
"$H" reshard --proxy "$P" --state "$TMP/state.json" ${MOVER_ARGS:-} 2>/dev/null | tee "$TMP/reshard.txt"
end_s=$(date +%s.%N)
kill -INT "$LOAD" 2>/dev/null || true
wait "$LOAD" || true
read -r during_p99 during_err during_ops < <(p99 "$TMP/during.json")
python3 - "$start_s" "$end_s" "$TMP/reshard.txt" "$before_p99" "$during_p99" "$during_err" "$during_ops" <<'PY'
import re, sys
start, end, path, b, d, err, ops = sys.argv[1:]
secs = float(end) - float(start)
moved = int(re.search(r"moved (\d+)", open(path).read()).group(1))
print(f"mover: {moved} keys moved in {secs:.1f} s = {moved / secs:,.0f} keys/s")
print(f"GET p99 during the move: {float(d):.3f} ms = {float(d) / float(b):.2f}x before ({float(b):.3f} ms); {err} failed of {ops}")
PY
