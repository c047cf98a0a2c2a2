#!/usr/bin/env bash
# The routing tier, all in one run on this machine: 3 local otkv-server nodes (memory engine, one worker
# each) with 100k keys of 100 bytes, and GETs of random keys
#   1. routed by the client (harness run --node x3: no proxy, the floor);
#   2. through `harness proxy` (one worker), under wrk -t1 -c64;
#   3. through HAProxy (nbthread 1, balance uri, hash-type consistent, http-reuse always), the routing
#      tier a user would otherwise deploy, under the same wrk load;
# each proxy without pipelining and with pipelining depth 16. Every key is preloaded through the proxy
# being measured, so each GET finds its value wherever that proxy routes it (wrk counts non-2xx).
# Proxy CPU per request = (utime + stime of the proxy process over the run) / requests served. The two
# proxies alternate, ROUNDS times (default 3), and the medians close the output (the machine is noisy).
#
# Needs wrk and haproxy (apt-get install wrk haproxy).
# Usage: benches/server/proxy.sh [DURATION]   (default 10s)
set -euo pipefail
cd "$(dirname "$0")/../.."
DUR=${1:-10s}
ROUNDS=${ROUNDS:-3}
CONNS=64
HERE=benches/server
HZ=$(getconf CLK_TCK)
for tool in wrk haproxy; do
  command -v "$tool" >/dev/null || { echo "needs $tool: apt-get install $tool"; exit 1; }
done

cargo build --release -q -p otkv-harness
H=./target/release/harness
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for log in "$TMP"/*.err; do
    if grep -qiE "panic|abort" "$log" 2>/dev/null; then echo "--- $log"; tail -n 40 "$log"; fi
  done
  rm -rf "$TMP"
}
trap cleanup EXIT

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

start() { # name command... ; sets URL and PID
  local name=$1; shift
  "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
  PIDS+=($!)
  PID=$!
  until grep -q listening "$TMP/$name.out" 2>/dev/null; do
    kill -0 "$PID" 2>/dev/null || { cat "$TMP/$name.err"; exit 1; }
    sleep 0.05
  done
  URL=$(sed 's/listening on //' "$TMP/$name.out")
}

NODE_URLS=()
for i in 0 1 2; do
  start "node$i" "$H" node --port 0 --workers 1
  NODE_URLS+=("$URL")
done

wrk_run() { # label pid url depth
  local before after out n secs non2xx p50 p99
  before=$(ticks "$2")
  out=$(wrk -t1 -c"$CONNS" -d"$DUR" --latency -s "$HERE/kv.lua" "$3" -- get "$4")
  after=$(ticks "$2")
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  secs=$(echo "$out" | awk '/requests in/ {gsub(/s,?/, "", $4); print $4}')
  p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  awk -v l="$1" -v n="$n" -v s="$secs" -v t="$((after - before))" -v hz="$HZ" -v p50="$p50" -v p99="$p99" \
    'BEGIN { printf "%-28s %9.0f req/s  p50 %-8s p99 %-8s %7.2f us proxy CPU/req\n", l, n / s, p50, p99, t / hz * 1e6 / n }' |
    tee -a "$TMP/results"
  if [ -n "$non2xx" ]; then echo "   !! $non2xx non-2xx responses"; fi
}

preload() { wrk -t1 -c"$CONNS" -d3s -s "$HERE/kv.lua" "$1" -- preload 16 >/dev/null; }

echo "== 3 nodes, GET of 100k keys (100 B), $CONNS connections, $DUR each"

# 1. Routed by the client.
direct_args=()
for u in "${NODE_URLS[@]}"; do direct_args+=(--node "$u"); done
$H run "${direct_args[@]}" --workload get --keys 100000 --connections "$CONNS" --duration "$DUR" \
  --out "$TMP/direct" --json 2>/dev/null |
  python3 -c 'import json,sys; r=json.load(sys.stdin)["runs"][0]; l=r["latency_ms"]; print("%-28s %9.0f req/s  p50 %.3fms  p99 %.3fms  (no proxy)" % ("routed by the client", r["throughput"], l["p50"], l["p99"]))'

# 2. harness proxy.
proxy_args=()
for u in "${NODE_URLS[@]}"; do proxy_args+=(--node "$u"); done
start proxy "$H" proxy --port 0 --workers 1 "${proxy_args[@]}"
PROXY_PID=$PID PROXY_URL=$URL
preload "$PROXY_URL"

# 3. HAProxy, in front of the same nodes.
HAPORT=7480
{
  cat <<CFG
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend fe
  bind 127.0.0.1:$HAPORT
  default_backend nodes
backend nodes
  balance uri
  hash-type consistent
CFG
  i=0
  for u in "${NODE_URLS[@]}"; do echo "  server node$i ${u#http://}"; i=$((i + 1)); done
} >"$TMP/haproxy.cfg"
haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.out" 2>"$TMP/haproxy.err" &
PIDS+=($!)
HA_PID=$!
until (exec 3<>/dev/tcp/127.0.0.1/$HAPORT) 2>/dev/null; do
  kill -0 "$HA_PID" 2>/dev/null || { cat "$TMP/haproxy.err"; exit 1; }
  sleep 0.05
done
HA_URL=http://127.0.0.1:$HAPORT
preload "$HA_URL"

for round in $(seq "$ROUNDS"); do
  echo "-- round $round"
  wrk_run "harness proxy" "$PROXY_PID" "$PROXY_URL" 1
  wrk_run "haproxy" "$HA_PID" "$HA_URL" 1
  wrk_run "harness proxy -p16" "$PROXY_PID" "$PROXY_URL" 16
  wrk_run "haproxy -p16" "$HA_PID" "$HA_URL" 16
done
echo "-- medians of $ROUNDS rounds (wrk's latency under pipelining is per batch)"
python3 - "$TMP/results" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"(.+?)\s+([\d.]+) req/s\s+p50 (\S+)\s+p99 (\S+)\s+([\d.]+) us", line)
    if m:
        rows.setdefault(m.group(1).strip(), []).append((float(m.group(2)), float(m.group(5))))
for label, runs in rows.items():
    rps = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    print(f"{label:<28} {rps:9.0f} req/s {cpu:7.2f} us proxy CPU/req")
cpu = {label: statistics.median(r[1] for r in runs) for label, runs in rows.items()}
for suffix in ["", " -p16"]:
    ours, theirs = cpu.get("harness proxy" + suffix), cpu.get("haproxy" + suffix)
    if ours and theirs:
        print(f"harness proxy ÷ haproxy, CPU/req{suffix or ' (no pipelining)'}: {ours / theirs:.2f}")
PY
