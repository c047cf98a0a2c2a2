#!/usr/bin/env bash
# Server CPU per request and throughput, all in one run on this machine:
#   otkv-server (memory engine) GET/PUT on 100k keys of 100 bytes, under wrk -t1 -c64;
#   the may_minihttp "hello" baseline under the same wrk load;
#   redis-server under redis-benchmark -c 64 -d 100 -r 100000;
# each without pipelining and with pipelining depth 16.
# CPU per request = (utime + stime of the server process over the run) / requests served.
#
# Needs wrk, redis-server and redis-benchmark (apt-get install wrk redis-server).
# Usage: benches/server/compare.sh [DURATION]   (default 10s)
set -euo pipefail
cd "$(dirname "$0")/../.."
DUR=${1:-10s}
CONNS=64
HERE=benches/server
HZ=$(getconf CLK_TCK)
WORKERS=${WORKERS:-1}

cargo build --release -q -p otkv-adapter-http --bin otkv-server --example minihttp_hello
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for log in "$TMP"/*.err; do
    if grep -qiE "panic|abort|error" "$log" 2>/dev/null; then echo "--- $log"; tail -n 40 "$log"; fi
  done
  rm -rf "$TMP"
}
trap cleanup EXIT

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

report() { # label requests seconds ticks
  awk -v l="$1" -v n="$2" -v s="$3" -v t="$4" -v hz="$HZ" \
    'BEGIN { printf "%-34s %10.0f req/s %8.2f us CPU/req\n", l, n / s, t / hz * 1e6 / n }'
}

wrk_run() { # label pid url op depth
  local before after out n secs non2xx
  if [ ! -e "/proc/$2" ]; then echo "$1: server $2 is not running"; exit 1; fi
  before=$(ticks "$2")
  out=$(wrk -t1 -c"$CONNS" -d"$DUR" -s "$HERE/kv.lua" "$3" -- "$4" "$5")
  after=$(ticks "$2")
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  secs=$(echo "$out" | awk '/requests in/ {gsub(/s,?/, "", $4); print $4}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  report "$1" "$n" "$secs" "$((after - before))"
  if [ -n "$non2xx" ]; then echo "   !! $non2xx non-2xx responses"; fi
}

start_otkv() {
  ./target/release/otkv-server --port 0 --workers "$WORKERS" >"$TMP/otkv.out" 2>"$TMP/otkv.err" &
  PIDS+=($!)
  OTKV_PID=$!
  until grep -q listening "$TMP/otkv.out" 2>/dev/null; do sleep 0.05; done
  OTKV_URL=$(sed 's/listening on //' "$TMP/otkv.out")
}

./target/release/examples/minihttp_hello 7071 "$WORKERS" >"$TMP/hello.out" 2>&1 &
PIDS+=($!)
HELLO_PID=$!
until grep -q listening "$TMP/hello.out" 2>/dev/null; do sleep 0.05; done
start_otkv
wrk -t1 -c"$CONNS" -d3s -s "$HERE/kv.lua" "$OTKV_URL" -- preload 1 >/dev/null

echo "== wrk -t1 -c$CONNS -d$DUR, $WORKERS server workers, no pipelining"
wrk_run "may_minihttp hello" "$HELLO_PID" "http://127.0.0.1:7071" hello 1
wrk_run "otkv-server GET (memory)" "$OTKV_PID" "$OTKV_URL" get 1
wrk_run "otkv-server PUT (memory)" "$OTKV_PID" "$OTKV_URL" put 1
echo "== pipelining depth 16"
wrk_run "may_minihttp hello -p16" "$HELLO_PID" "http://127.0.0.1:7071" hello 16
wrk_run "otkv-server GET -p16" "$OTKV_PID" "$OTKV_URL" get 16
wrk_run "otkv-server PUT -p16" "$OTKV_PID" "$OTKV_URL" put 16

if command -v redis-server >/dev/null; then
  redis-server --port 6399 --save '' --appendonly no >"$TMP/redis.log" 2>&1 &
  PIDS+=($!)
  REDIS_PID=$!
  until redis-cli -p 6399 ping >/dev/null 2>&1; do sleep 0.05; done
  redis_run() { # label test n pipeline
    local before after out rps
    before=$(ticks "$REDIS_PID")
    out=$(redis-benchmark -p 6399 -t "$2" -n "$3" -c "$CONNS" -d 100 -r 100000 -P "$4" -q)
    after=$(ticks "$REDIS_PID")
    rps=$(echo "$out" | tr '\r' '\n' | awk -F'[ :]+' '/requests per second/ {print $2}' | tail -1)
    report "$1" "$3" "$(awk -v n="$3" -v r="$rps" 'BEGIN { print n / r }')" "$((after - before))"
  }
  echo "== redis-benchmark -c$CONNS -d 100 -r 100000"
  redis_run "redis SET" set 1000000 1
  redis_run "redis GET" get 1000000 1
  redis_run "redis SET -P16" set 4000000 16
  redis_run "redis GET -P16" get 4000000 16
fi
