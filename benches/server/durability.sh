#!/usr/bin/env bash
# PUT throughput by engine and durability mode, one run: wrk -t1 -c64 -d DURATION, PUT of 100-byte unique
# values to random keys among 100k, against otkv-server with 1 worker and a fresh data directory each;
# then, for scale, redis-server SET with no AOF, `appendfsync everysec` and `appendfsync always`
# (redis-benchmark -c 64 -d 100 -r 100000), if redis-server is installed.
# Usage: benches/server/durability.sh [DURATION]   (default 10s; needs wrk)
set -euo pipefail
cd "$(dirname "$0")/../.."
DUR=${1:-10s}
cargo build --release -q -p otkv-adapter-http --bin otkv-server
TMP=$(mktemp -d)
NODE=
trap 'kill $NODE 2>/dev/null || true; rm -rf "$TMP"' EXIT
for mode in "memory none" "memory periodic" "memory sync" "sled none" "sled periodic" "sled sync"; do
  set -- $mode
  rm -rf "$TMP/data"
  ./target/release/otkv-server --port 0 --workers 1 --engine "$1" --durability "$2" --data-dir "$TMP/data" \
    >"$TMP/node.out" 2>"$TMP/node.err" &
  NODE=$!
  until grep -q listening "$TMP/node.out" 2>/dev/null; do sleep 0.05; done
  URL=$(sed 's/listening on //' "$TMP/node.out")
  out=$(wrk -t1 -c64 -d"$DUR" --latency -s benches/server/kv.lua "$URL" -- put 1)
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  errs=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  printf "%-8s %-9s %10.0f PUT/s  p50 %-9s p99 %-9s%s\n" "$1" "$2" "$rps" "$p50" "$p99" "${errs:+  ($errs non-2xx!)}"
  kill -TERM $NODE; wait $NODE || true
done
if command -v redis-server >/dev/null; then
  SECS=${DUR%s}
  for aof in "no no" "yes everysec" "yes always"; do
    set -- $aof
    rm -rf "$TMP/redis" && mkdir -p "$TMP/redis"
    redis-server --port 6398 --dir "$TMP/redis" --save '' --appendonly "$1" --appendfsync "$2" \
      >"$TMP/redis.log" 2>&1 &
    NODE=$!
    until redis-cli -p 6398 ping >/dev/null 2>&1; do sleep 0.05; done
    # About DURATION seconds of SETs at the rate this machine does them.
    n=$((SECS * 60000))
    rps=$(redis-benchmark -p 6398 -t set -n "$n" -c 64 -d 100 -r 100000 -q | tr '\r' '\n' \
      | awk -F'[ :]+' '/requests per second/ {print $2}' | tail -1)
    printf "%-8s %-9s %10.0f SET/s  (appendfsync %s)\n" "redis" "aof-$1" "$rps" "$2"
    kill -TERM $NODE; wait $NODE || true
  done
fi
