#!/usr/bin/env bash
# Server CPU per GET (pipelined, or not with DEPTH=1), otkv-server against redis-server, in alternating
# rounds of one run: the
# wall-clock figure of the request-path work. Wall-clock CPU swings ±30% between runs on these machines,
# so each round measures every server once, back to back, and the summary gives the median of the
# rounds and the median of the per-round ratios. User and system time are reported apart: the user part
# is what the request path costs, the system part is the kernel's TCP work for the same bytes.
#
#   otkv-server: 1 worker, 100k keys of 100 B, on each engine of ENGINES (default "memory flurry": the
#   engine's table and flurry); wrk -t1 -c64, GETs pipelined DEPTH deep (default 16; benches/server/kv.lua).
#   redis-server: the same keys and sizes; redis-benchmark -c 64 -P DEPTH.
#
# OTKV_BINS="a b" measures several otkv-server builds side by side (a before/after), each once a round.
# KEYS=N uses N keys instead of 100k (few keys fit in the caches: what is left is the request path).
# Needs wrk, redis-server, redis-benchmark (apt-get install wrk redis-server).
# Usage: benches/server/pipelined-get.sh [ROUNDS] [DURATION]   (default 5 rounds of 5s)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-5}
DUR=${2:-5s}
CONNS=64
HERE=benches/server
HZ=$(getconf CLK_TCK)
cargo build --release -q -p otkv-adapter-http --bin otkv-server
OTKV_BINS=${OTKV_BINS:-./target/release/otkv-server}
REDIS_N=${REDIS_N:-3000000}
KEYS=${KEYS:-100000}
DEPTH=${DEPTH:-16}
ENGINES=${ENGINES:-memory flurry}
# Unpipelined, Redis serves a tenth as many GETs a second: fewer requests keep its round as long.
[ "$DEPTH" = 1 ] && REDIS_N=${REDIS_N_1:-400000}

TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

# utime and stime of a process, in clock ticks.
cpu() { awk '{print $14, $15}' "/proc/$1/stat"; }
# per_request BEFORE AFTER N: user and system µs per request.
per_request() {
  awk -v b="$1" -v a="$2" -v n="$3" -v hz="$HZ" 'BEGIN {
    split(b, x, " "); split(a, y, " ");
    printf "%.3f %.3f", (y[1] - x[1]) / hz * 1e6 / n, (y[2] - x[2]) / hz * 1e6 / n }'
}

declare -a URLS OTKV NAMES
i=0
for bin in $OTKV_BINS; do
  for engine in $ENGINES; do
    "$bin" --port 0 --workers 1 --engine "$engine" >"$TMP/otkv$i.out" 2>"$TMP/otkv$i.err" &
    PIDS+=($!)
    OTKV[i]=$!
    NAMES[i]="$engine:$bin"
    until grep -q listening "$TMP/otkv$i.out" 2>/dev/null; do sleep 0.05; done
    URLS[i]=$(sed 's/listening on //' "$TMP/otkv$i.out")
    wrk -t1 -c"$CONNS" -d3s -s "$HERE/kv.lua" "${URLS[i]}" -- preload 1 "$KEYS" >/dev/null
    i=$((i + 1))
  done
done
RPORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$RPORT" --save '' --appendonly no >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
REDIS=$!
until redis-cli -p "$RPORT" ping >/dev/null 2>&1; do sleep 0.05; done
redis-benchmark -p "$RPORT" -t set -n 300000 -c "$CONNS" -d 100 -r "$KEYS" -P 16 -q >/dev/null

printf "%-6s %-40s %10s %10s %10s %10s\n" round server req/s "user us" "sys us" "total us"
for round in $(seq 1 "$ROUNDS"); do
  for i in "${!OTKV[@]}"; do
    before=$(cpu "${OTKV[i]}")
    out=$(wrk -t1 -c"$CONNS" -d"$DUR" -s "$HERE/kv.lua" "${URLS[i]}" -- get "$DEPTH" "$KEYS")
    after=$(cpu "${OTKV[i]}")
    if echo "$out" | grep -q Non-2xx; then echo "$out"; echo "non-2xx answers from ${NAMES[i]}"; exit 1; fi
    n=$(echo "$out" | awk '/requests in/ {print $1}')
    rate=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    read -r user sys <<<"$(per_request "$before" "$after" "$n")"
    printf "%-6s %-40s %10.0f %10s %10s %10.3f\n" "$round" "otkv ${NAMES[i]}" "$rate" "$user" "$sys" \
      "$(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')"
  done
  before=$(cpu "$REDIS")
  out=$(redis-benchmark -p "$RPORT" -t get -n "$REDIS_N" -c "$CONNS" -d 100 -r "$KEYS" -P "$DEPTH" -q)
  after=$(cpu "$REDIS")
  rate=$(echo "$out" | tr '\r' '\n' | awk -F'[ :]+' '/requests per second/ {print $2}' | tail -1)
  read -r user sys <<<"$(per_request "$before" "$after" "$REDIS_N")"
  printf "%-6s %-40s %10.0f %10s %10s %10.3f\n" "$round" "redis-server" "$rate" "$user" "$sys" \
    "$(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')"
done | tee "$TMP/rounds"

echo
echo "medians over $ROUNDS rounds, depth $DEPTH (µs of server CPU per request; ratios = otkv ÷ Redis in the same round):"
awk '
  function median(list,    n, a, i, j, t) {
    n = split(list, a, " ");
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  {
    server = $2 == "otkv" ? $2 " " $3 : $2;
    total[server] = total[server] " " $NF; user[server] = user[server] " " $(NF - 2);
    sys[server] = sys[server] " " $(NF - 1);
    if ($2 == "redis-server") { redis[$1] = $NF; redis_user[$1] = $(NF - 2) }
    else { otkv[$1, server] = $NF; otkv_user[$1, server] = $(NF - 2); names[server] = 1 }
  }
  END {
    for (s in total) printf "  %-40s total %.3f  user %.3f  sys %.3f\n", s, median(total[s]), median(user[s]), median(sys[s]);
    for (s in names) {
      list = ""; ulist = "";
      for (r in redis) { list = list " " otkv[r, s] / redis[r]; ulist = ulist " " otkv_user[r, s] / redis_user[r] }
      printf "  %-40s ÷ Redis: total %.2f, user %.2f\n", s, median(list), median(ulist);
    }
  }' "$TMP/rounds"
