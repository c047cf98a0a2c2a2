#!/usr/bin/env bash
# Is the harness a cheaper client than wrk -t1? Same node, same connection count, one run:
#   wrk -t1 -c64 on one fixed key (wrk's cheapest mode, no Lua), wrk -t1 -c64 with kv.lua random keys,
#   and harness run --threads 1 --connections 64 --workload get, all on 100k preloaded keys.
# Reports throughput and client CPU per request (utime+stime of the client process / requests).
# Usage: benches/server/client-vs-wrk.sh [DURATION] [NODE_WORKERS]
set -euo pipefail
cd "$(dirname "$0")/../.."
DUR=${1:-10s}
NODE_WORKERS=${2:-1}
cargo build --release -q -p otkv-harness -p otkv-adapter-http
TMP=$(mktemp -d)
trap 'kill $NODE 2>/dev/null; rm -rf "$TMP"' EXIT
./target/release/otkv-server --port 0 --workers "$NODE_WORKERS" >"$TMP/node.out" 2>/dev/null &
NODE=$!
until grep -q listening "$TMP/node.out" 2>/dev/null; do sleep 0.05; done
URL=$(sed 's/listening on //' "$TMP/node.out")
wrk -t1 -c64 -d3s -s benches/server/kv.lua "$URL" -- preload 1 >/dev/null

child_cpu() { # command...: runs it, prints "<requests-or-output> <client cpu seconds>"
  /usr/bin/time -f "%U %S" -o "$TMP/time" "$@" >"$TMP/out" 2>"$TMP/err"
  awk '{print $1 + $2}' "$TMP/time"
}
row() { awk -v l="$1" -v n="$2" -v s="$3" -v c="$4" \
  'BEGIN { printf "%-34s %10.0f req/s %8.2f us client CPU/req\n", l, n / s, c * 1e6 / n }'; }

cpu=$(child_cpu wrk -t1 -c64 -d"$DUR" "$URL/v1/kv/key0000000000042")
n=$(awk '/requests in/ {print $1}' "$TMP/out"); s=$(awk '/requests in/ {gsub(/s,?/, "", $4); print $4}' "$TMP/out")
row "wrk -t1, one key" "$n" "$s" "$cpu"
cpu=$(child_cpu wrk -t1 -c64 -d"$DUR" -s benches/server/kv.lua "$URL" -- get 1)
n=$(awk '/requests in/ {print $1}' "$TMP/out"); s=$(awk '/requests in/ {gsub(/s,?/, "", $4); print $4}' "$TMP/out")
row "wrk -t1, random keys (Lua)" "$n" "$s" "$cpu"
cpu=$(child_cpu ./target/release/harness run --node "$URL" --workload get --keys 100000 --connections 64 \
  --threads 1 --duration "$DUR" --json --out "$TMP/res")
n=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["runs"][0]; print(r["ops"], r["duration_s"])' "$TMP/res/summary.json")
# The harness's CPU includes its untimed preload; subtract nothing and so overstate its cost slightly.
row "harness --threads 1, random keys" ${n% *} ${n#* } "$cpu"
