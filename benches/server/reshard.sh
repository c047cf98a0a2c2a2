#!/usr/bin/env bash
# Growing a cluster under load: KEYS keys of 100 B behind `harness proxy` on 2 nodes, then a third node
# added (the proxy's --nodes-file, SIGHUP) and `harness reshard --proxy` moving the keys, while an
# open-loop GET load (RATE ops/s through the proxy) runs. For each mover setting (`-` for the mover's
# defaults, e.g. `--rate 2000` for a paced one), ROUNDS rounds on a fresh cluster each, the settings
# alternating: the mover's time and rate, the load's p99 in the 40 s before the move and during it, and
# its failed requests; then each setting's medians.
# Usage: benches/server/reshard.sh [KEYS] [RATE] [ROUNDS] [SETTING...]
#        (defaults 1000000, 10000, 3, and the settings `-` and `--rate 2000`)
# Needs curl and python3 with hdrh (pip install hdrhistogram). HARNESS=PATH runs another harness binary.
# PIN=1 pins the load generator to core 0 and the cluster (nodes, proxy, mover) to core 1, before and
# during alike, so the ratio measures the cluster and not the load generator's share of the two cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
KEYS=${1:-1000000}
RATE=${2:-10000}
ROUNDS=${3:-3}
shift $(($# < 3 ? $# : 3))
SETTINGS=("$@")
[ ${#SETTINGS[@]} -eq 0 ] && SETTINGS=("-" "--rate 2000")
cargo build --release -q -p otkv-harness --bin harness
H=${HARNESS:-./target/release/harness}
CLUSTER=()
LOADER=()
if [ "${PIN:-0}" = 1 ]; then
  CLUSTER=(taskset -c 1)
  LOADER=(taskset -c 0)
fi
ALL=$(mktemp -d)
PIDS=()
stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  PIDS=()
}
trap 'stop_all; rm -rf "$ALL"' EXIT

start() { # name args... (sets URL and LAST_PID)
  local name=$1
  shift
  "${CLUSTER[@]}" "$H" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
  PIDS+=($!)
  LAST_PID=$!
  until grep -q listening "$TMP/$name.out" 2>/dev/null; do sleep 0.05; done
  URL=$(sed 's/listening on //' "$TMP/$name.out")
}

p99s() { # hlog t0 t1 hup -> p99 (ms) of the load's 1 s intervals wholly inside [t0, t1], then in the 40 s before hup
  python3 - "$@" <<'PY'
import sys
from hdrh.histogram import HdrHistogram
path, *bounds = sys.argv[1:]
rows, start = [], None
for line in open(path):
    if line.startswith("#[StartTime:"):
        start = float(line.split()[1])
    elif line[0].isdigit():
        t, dur, _, enc = line.strip().split(",")
        rows.append((start + float(t), float(dur), enc))
t0, t1, hup = map(float, bounds)
for lo, hi in ((t0, t1), (hup - 40, hup)):
    h = HdrHistogram(1, 60_000_000, 3)
    for t, dur, enc in rows:
        if t >= lo and t + dur <= hi:
            h.add(HdrHistogram.decode(enc))
    print(h.get_value_at_percentile(99) / 1000, end=" ")
print()
PY
}
now() { date +%s.%N; }
ticks() { # pids... -> their CPU ticks (utime + stime), summed
  local sum=0 p f
  for p in "$@"; do
    read -r -a f < <(sed 's/.*) //' "/proc/$p/stat")
    sum=$((sum + f[11] + f[12]))
  done
  echo "$sum"
}

# One round: a fresh cluster and one open-loop GET load through the proxy (its untimed preload writes
# every key first). "Before" is the load's 40 s before the third node is added, after its first 5 s (its
# connections and the nodes' caches warm); "during" is the load while the mover runs, from the same
# load's per-second histograms (--out's .hlog). Appends a line to RESULTS.
round() { # setting
  local setting=$1 args=()
  [ "$setting" != "-" ] && read -r -a args <<<"$setting"
  TMP=$(mktemp -d -p "$ALL")
  start n0 node --port 0 && N0=$URL && NP=("$LAST_PID")
  start n1 node --port 0 && N1=$URL && NP+=("$LAST_PID")
  start n2 node --port 0 && N2=$URL && NP+=("$LAST_PID")
  printf '%s\n%s\n' "$N0" "$N1" >"$TMP/nodes"
  start proxy proxy --port 0 --nodes-file "$TMP/nodes" && P=$URL && PROXY_PID=$LAST_PID
  # (Started here: SIGINT must reach the harness itself.)
  "${LOADER[@]}" "$H" run --proxy "$P" --workload ycsb-c --keys "$KEYS" --rate "$RATE" --connections 32 --warmup 0s \
    --duration 3600s --json --out "$TMP/load" >"$TMP/load.json" 2>"$TMP/load.err" &
  local load_pid=$! hup t0 t1
  # Waited for with one sleep, not by polling: a process started 10 times a second (grep, sleep) takes
  # the load's p99 on a 2-core machine from 0.2 to over 1 ms.
  until grep -q '\[   1s/' "$TMP/load.err" 2>/dev/null; do sleep 0.2; done
  sleep 4
  local base0 base1 cpu0 cpu1
  base0=$(ticks "${NP[@]}")
  sleep 40
  base1=$(ticks "${NP[@]}")
  hup=$(now)
  printf '%s\n%s\n%s\nprevious %s\nprevious %s\n' "$N0" "$N1" "$N2" "$N0" "$N1" >"$TMP/nodes"
  kill -HUP "$PROXY_PID"
  until curl -fs "$P/v1/stats" | python3 -c 'import json,sys; sys.exit(not json.load(sys.stdin)["topology"]["previous"])'; do
    sleep 0.05
  done
  t0=$(now)
  cpu0=$(ticks "${NP[@]}")
  "${CLUSTER[@]}" "$H" reshard --proxy "$P" --state "$TMP/state.json" "${args[@]}" >"$TMP/reshard.txt" 2>/dev/null
  t1=$(now)
  cpu1=$(ticks "${NP[@]}")
  kill -INT "$load_pid" 2>/dev/null || true
  wait "$load_pid" || true
  stop_all
  read -r during_p99 before_p99 < <(p99s "$TMP"/load/*proxy.hlog "$t0" "$t1" "$hup")
  python3 - "$setting" "$t0" "$t1" "$TMP/reshard.txt" "$before_p99" "$during_p99" "$TMP/load.json" \
    "$base0" "$base1" "$cpu0" "$cpu1" "$(getconf CLK_TCK)" <<'PY' | tee -a "$ALL/results"
import json, re, sys
setting, t0, t1, path, b, d, load, base0, base1, cpu0, cpu1, hz = sys.argv[1:]
text = open(path).read()
run = json.load(open(load))["runs"][0]
moved = int(re.search(r"moved (\d+)", text).group(1))
by_proxy = int(re.search(r"clients' requests (\d+)", text).group(1))
secs = float(t1) - float(t0)
# The nodes' CPU during the move beyond what the same load cost them in the 40 s before, per moved key.
extra = (int(cpu1) - int(cpu0) - (int(base1) - int(base0)) / 40 * secs) / int(hz)
print(json.dumps({"setting": setting, "node_cpu_us_per_key": extra / max(moved, 1) * 1e6, "secs": secs, "moved": moved, "moved_by_proxy": by_proxy,
                  "keys_per_s": moved / secs, "before_p99": float(b), "during_p99": float(d),
                  "ratio": float(d) / float(b), "failed": run["errors_total"], "requests": run["ops"]}))
PY
}

echo "== $KEYS keys of 100 B on 2 nodes behind the proxy, a third added; GET load at $RATE ops/s through it"
for ((r = 1; r <= ROUNDS; r++)); do
  for s in "${SETTINGS[@]}"; do round "$s" >/dev/null; done
done
python3 - "$ALL/results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for r in rows:
    print(f"round: mover {r['setting']:<13} moved {r['moved']:>7} (+{r['moved_by_proxy']} on clients' reads) in "
          f"{r['secs']:5.1f} s = {r['keys_per_s']:>6,.0f} keys/s, {r['node_cpu_us_per_key']:.1f} µs of node CPU a key; GET p99 {r['before_p99']:.3f} -> "
          f"{r['during_p99']:.3f} ms ({r['ratio']:.2f}x); {r['failed']} failed of {r['requests']}")
print("medians:")
for s in dict.fromkeys(r["setting"] for r in rows):
    rs = [r for r in rows if r["setting"] == s]
    m = lambda k: statistics.median(r[k] for r in rs)
    print(f"mover {s:<13} {m('secs'):5.1f} s, {m('keys_per_s'):>6,.0f} keys moved/s, {m('node_cpu_us_per_key'):.1f} µs of node CPU a key; GET p99 before {m('before_p99'):.3f} ms, "
          f"during {m('during_p99'):.3f} ms, during/before {m('ratio'):.2f}x (median of {len(rs)}); "
          f"failed requests {sum(r['failed'] for r in rs)} of {sum(r['requests'] for r in rs)}")
PY
