#!/usr/bin/env bash
# User-space instructions per request, counted by callgrind: exact and repeatable whatever else the machine
# does, unlike wall-clock CPU. Each server runs under `valgrind --tool=callgrind --instr-atstart=no`;
# collection is switched on only while wrk (or redis-benchmark) drives one kind of request, then the counts
# are dumped and divided by the requests answered:
#   otkv-server (1 worker) on the engine's table and on flurry, GET and PUT on 100k preloaded keys of
#   100 bytes;
#   the may_minihttp "hello" baseline;
#   redis-server, GET and SET (redis-benchmark -d 100 -r 100000), when it is installed;
# each unpipelined and pipelined 16 deep, 8 connections. Then the top functions of otkv-server's GET.
#
# Needs valgrind and wrk (apt-get install valgrind wrk; redis-server for the Redis rows).
# Usage: benches/server/instructions.sh [DURATION]   (default 3s per measurement)
# SERVERS="otkv" measures only some of hello, otkv, redis (default all three); ENGINES="memory flurry"
# which otkv engines (the engine's own table, flurry; default both). The top functions are the last one's.
# CACHE=1 also simulates the caches (--cache-sim=yes) and prints last-level data-cache misses per request
# (DLmr + DLmw): the dependent misses of a table lookup cost more than its instructions.
# OTKV_SERVER=PATH measures that otkv-server binary (another build, for a before/after) instead of this tree's.
# KEEP=DIR keeps the callgrind dumps there (for callgrind_annotate --inclusive=yes, or kcachegrind).
set -euo pipefail
cd "$(dirname "$0")/../.."
DUR=${1:-3s}
CONNS=8
HERE=benches/server
for tool in valgrind callgrind_control callgrind_annotate wrk; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install valgrind wrk)"; exit 1; }
done

cargo build --release -q -p otkv-adapter-http --bin otkv-server --example minihttp_hello
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$TMP"/*.[0-9]* "$KEEP"/ 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT

# under_callgrind NAME COMMAND...: starts COMMAND under callgrind, collection off; sets PID.
under_callgrind() {
  local name=$1
  shift
  valgrind --tool=callgrind --instr-atstart=no ${CACHE:+--cache-sim=yes} --callgrind-out-file="$TMP/$name.%p" "$@" \
    >"$TMP/$name.out" 2>"$TMP/$name.err" &
  PID=$!
  PIDS+=("$PID")
}

# measure NAME PID REQUESTS-COMMAND...: collection on for the command, off, dumped; sets PER_REQUEST
# (instructions per request: the command prints how many requests it made, on its last line) and DUMP.
measure() {
  local name=$1 pid=$2 n ir
  shift 2
  callgrind_control -z "$pid" >/dev/null 2>&1
  callgrind_control -i on "$pid" >/dev/null 2>&1
  n=$("$@" | tail -n 1)
  callgrind_control -i off "$pid" >/dev/null 2>&1
  callgrind_control -d "$name" "$pid" >/dev/null 2>&1
  DUMP=$(ls -t "$TMP"/*."$pid".* | head -n 1)
  ir=$(awk '/^totals:/ {print $2; exit}' "$DUMP")
  PER_REQUEST=$(awk -v ir="$ir" -v n="$n" 'BEGIN { printf "%.0f", ir / n }')
  if [ -n "${CACHE:-}" ]; then
    # events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
    PER_REQUEST="$PER_REQUEST/$(awk -v n="$n" '/^totals:/ { printf "%.1f", ($9 + $10) / n; exit }' "$DUMP")"
  fi
}

# wrk_requests URL OP DEPTH: runs wrk, prints the requests it completed (non-2xx answers fail the run).
wrk_requests() {
  local out
  out=$(wrk -t1 -c"$CONNS" -d"$DUR" -s "$HERE/kv.lua" "$1" -- "$2" "$3")
  if echo "$out" | grep -q Non-2xx; then echo "$out" >&2; echo "non-2xx answers" >&2; exit 1; fi
  echo "$out" | awk '/requests in/ {print $1}'
}

# redis_requests PORT TEST DEPTH N: runs redis-benchmark, prints N.
redis_requests() {
  redis-benchmark -p "$1" -t "$2" -n "$4" -c "$CONNS" -d 100 -r 100000 -P "$3" -q >/dev/null
  echo "$4"
}

wait_listening() { until grep -q listening "$1" 2>/dev/null; do sleep 0.1; done; }

printf "%-26s %9s %9s %9s %9s   (instructions per request, %s connections)\n" \
  server GET "GET x16" PUT "PUT x16" "$CONNS"

# A port the kernel says is free (minihttp_hello and redis-server do not report one they picked).
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

SERVERS=${SERVERS:-hello otkv redis}
wanted() { [[ " $SERVERS " == *" $1 "* ]]; }

if wanted hello; then
  PORT=$(free_port)
  under_callgrind hello ./target/release/examples/minihttp_hello "$PORT" 1
  HELLO=$PID
  wait_listening "$TMP/hello.out"
  measure hello-1 "$HELLO" wrk_requests "http://127.0.0.1:$PORT" hello 1
  h1=$PER_REQUEST
  measure hello-16 "$HELLO" wrk_requests "http://127.0.0.1:$PORT" hello 16
  h16=$PER_REQUEST
  printf "%-26s %9s %9s %9s %9s\n" "may_minihttp hello" "$h1" "$h16" "-" "-"
  kill "$HELLO"
fi

# otkv_row ENGINE: the GET and PUT rows of otkv-server on ENGINE (memory: the engine's table; flurry).
otkv_row() {
  under_callgrind "otkv-$1" "${OTKV_SERVER:-./target/release/otkv-server}" --port 0 --workers 1 --engine "$1"
  OTKV=$PID
  wait_listening "$TMP/otkv-$1.out"
  URL=$(sed 's/listening on //' "$TMP/otkv-$1.out")
  # Every key once (collection off), then the measurements.
  wrk -t1 -c"$CONNS" -d60s -s "$HERE/kv.lua" "$URL" -- preload 1 >/dev/null &
  PRELOAD=$!
  until curl -s "$URL/v1/stats" | grep -qE '"keys":(1[0-9]{5}|[1-9][0-9]{5,})'; do sleep 0.5; done
  kill "$PRELOAD" 2>/dev/null || true
  wait "$PRELOAD" 2>/dev/null || true
  measure "otkv-$1-get-1" "$OTKV" wrk_requests "$URL" get 1
  g1=$PER_REQUEST
  GET_DUMP=$DUMP
  measure "otkv-$1-get-16" "$OTKV" wrk_requests "$URL" get 16
  g16=$PER_REQUEST
  GET16_DUMP=$DUMP
  measure "otkv-$1-put-1" "$OTKV" wrk_requests "$URL" put 1
  p1=$PER_REQUEST
  measure "otkv-$1-put-16" "$OTKV" wrk_requests "$URL" put 16
  p16=$PER_REQUEST
  printf "%-26s %9s %9s %9s %9s\n" "otkv-server ($1)" "$g1" "$g16" "$p1" "$p16"
  kill "$OTKV"
}

if wanted otkv; then
  for engine in ${ENGINES:-memory flurry}; do
    otkv_row "$engine"
  done
fi

if wanted redis && command -v redis-server >/dev/null; then
  RPORT=$(free_port)
  under_callgrind redis redis-server --port "$RPORT" --save '' --appendonly no
  REDIS=$PID
  until redis-cli -p "$RPORT" ping >/dev/null 2>&1; do sleep 0.2; done
  redis-benchmark -p "$RPORT" -t set -n 100000 -c "$CONNS" -d 100 -r 100000 -q >/dev/null
  measure redis-get-1 "$REDIS" redis_requests "$RPORT" get 1 20000
  r1=$PER_REQUEST
  measure redis-get-16 "$REDIS" redis_requests "$RPORT" get 16 100000
  r16=$PER_REQUEST
  measure redis-set-1 "$REDIS" redis_requests "$RPORT" set 1 20000
  s1=$PER_REQUEST
  measure redis-set-16 "$REDIS" redis_requests "$RPORT" set 16 100000
  s16=$PER_REQUEST
  printf "%-26s %9s %9s %9s %9s\n" "redis-server (GET/SET)" "$r1" "$r16" "$s1" "$s16"
fi

wanted otkv || exit 0
echo
echo "== otkv-server GET (${ENGINES:-memory flurry}: the last), top functions (instructions in the function itself)"
callgrind_annotate --threshold=80 "$GET_DUMP" 2>/dev/null | sed -n '/^Ir/,$p' | head -n 25 || true
echo
echo "== otkv-server GET x16, top functions"
callgrind_annotate --threshold=80 "$GET16_DUMP" 2>/dev/null | sed -n '/^Ir/,$p' | head -n 25 || true
