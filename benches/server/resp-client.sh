#!/usr/bin/env bash
# Is the harness's RESP client fast enough to measure Redis? One redis-server, GET of 100-byte values,
# 64 connections, no pipelining; alternating rounds of:
#   redis-benchmark -t get -c 64 -d 100 -r 100000 (its keys preloaded by redis-benchmark -t set), and
#   harness run --target redis --node redis://... --workload get --connections 64 (its own preload).
# Prints each round and the medians: throughput, the ratio harness/redis-benchmark, and the harness's own
# client CPU per operation (from its summary.json).
# Usage: benches/server/resp-client.sh [DURATION_SECONDS] (ROUNDS=3)
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-10}
ROUNDS=${ROUNDS:-3}
command -v redis-server >/dev/null || { echo "needs redis-server and redis-benchmark (apt-get install redis-server)"; exit 1; }
cargo build --release -q -p otkv-harness
TMP=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize no --logfile "$TMP/redis.log" &
REDIS=$!
trap 'kill $REDIS 2>/dev/null; rm -rf "$TMP"' EXIT
until redis-cli -p "$PORT" ping >/dev/null 2>&1; do sleep 0.05; done
redis-benchmark -p "$PORT" -q -t set -c 64 -d 100 -r 100000 -n 400000 >/dev/null

: >"$TMP/rb"; : >"$TMP/h"; : >"$TMP/hcpu"
for round in $(seq "$ROUNDS"); do
  # redis-benchmark runs a request count, not a duration: size it from the first round's rate.
  n=${N:-$((SECS * 120000))}
  /usr/bin/time -f "%U %S" -o "$TMP/time" redis-benchmark -p "$PORT" -q -t get -c 64 -d 100 -r 100000 \
    -n "$n" >"$TMP/rb.out"
  rb=$(tr '\r' '\n' <"$TMP/rb.out" | awk '/GET:/ {print $2}' | tail -1)
  rbcpu=$(awk -v n="$n" '{printf "%.2f", ($1 + $2) * 1e6 / n}' "$TMP/time")
  ./target/release/harness run --target redis --node "redis://127.0.0.1:$PORT" --workload get \
    --keys 100000 --value-size 100 --connections 64 --duration "${SECS}s" --json --out "$TMP/res" \
    >"$TMP/summary.json" 2>/dev/null
  read -r h hcpu < <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["runs"][0]; print(r["throughput"], r["client_cpu_us_per_op"])' "$TMP/summary.json")
  printf "round %d: redis-benchmark %8.0f GET/s (client %.2f us/op)   harness --target redis %8.0f GET/s (client %.2f us/op)\n" \
    "$round" "$rb" "$rbcpu" "$h" "$hcpu"
  echo "$rb" >>"$TMP/rb"; echo "$h" >>"$TMP/h"; echo "$hcpu" >>"$TMP/hcpu"
done
median() { sort -g "$1" | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
rb=$(median "$TMP/rb"); h=$(median "$TMP/h"); c=$(median "$TMP/hcpu")
printf "median: redis-benchmark %.0f GET/s, harness %.0f GET/s: ratio %.2f (client %.2f us/op)\n" \
  "$rb" "$h" "$(echo "$h / $rb" | bc -l)" "$c"
