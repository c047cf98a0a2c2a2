#!/usr/bin/env bash
# PUT throughput by engine and durability mode, one run: wrk -t1 -c64 -d DURATION, PUT of 100-byte unique
# values to random keys among 100k, against otkv-server with 1 worker and a fresh data directory each.
# Usage: benches/server/durability.sh [DURATION]   (default 10s; needs wrk)
set -euo pipefail
cd "$(dirname "$0")/../.."
DUR=${1:-10s}
cargo build --release -q -p otkv-adapter-http --bin otkv-server
TMP=$(mktemp -d)
trap 'kill $NODE 2>/dev/null || true; rm -rf "$TMP"' EXIT
for mode in "memory none" "memory periodic" "memory sync" "sled none" "sled periodic" "sled sync"; do
  set -- $mode
  rm -rf "$TMP/data"
  ./target/release/otkv-server --port 0 --workers 1 --engine "$1" --durability "$2" --data-dir "$TMP/data" \
    >"$TMP/node.out" 2>"$TMP/node.err" &
  NODE=$!
  until grep -q listening "$TMP/node.out" 2>/dev/null; do sleep 0.05; done
  URL=$(sed 's/listening on //' "$TMP/node.out")
  out=$(wrk -t1 -c64 -d"$DUR" -s benches/server/kv.lua "$URL" -- put 1)
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  errs=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  printf "%-8s %-9s %10.0f PUT/s%s\n" "$1" "$2" "$rps" "${errs:+  ($errs non-2xx!)}"
  kill -TERM $NODE; wait $NODE || true
done
