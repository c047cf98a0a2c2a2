#!/usr/bin/env bash
# Growing a cluster under load: KEYS keys of 100 B behind `harness proxy` on 2 nodes, then a third node
# added (the proxy's --nodes-file, SIGHUP) and `harness reshard --proxy` moving the keys, while an
# open-loop GET load (RATE ops/s through the proxy) runs. For each mover setting (`-` for the mover's
# defaults, e.g. `--rate 2000` for a paced one), ROUNDS rounds on a fresh cluster each, the settings
# alternating: the mover's time and rate, the load's p99 in the 20 s before the move and during it, and
# its failed requests; then each setting's medians.
# Usage: benches/server/reshard.sh [KEYS] [RATE] [ROUNDS] [SETTING...]
#        (defaults 1000000, 10000, 3, and the settings `-` and `--rate 2000`)
set -euo pipefail
cd "$(dirname "$0")/../.."
KEYS=${1:-1000000}
RATE=${2:-10000}
ROUNDS=${3:-3}
shift $(($# < 3 ? $# : 3))
SETTINGS=("$@")
[ ${#SETTINGS[@]} -eq 0 ] && SETTINGS=("-" "--rate 2000")
cargo build --release -q -p otkv-harness --bin harness
H=./target/release/harness
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
  "$H" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
  PIDS+=($!)
  LAST_PID=$!
  until grep -q listening "$TMP/$name.out" 2>/dev/null; do sleep 0.05; done
  URL=$(sed 's/listening on //' "$TMP/$name.out")
}

load() { # out duration -> the GET load (its untimed preload writes every key first)
  "$H" run --proxy "$P" --workload ycsb-c --keys "$KEYS" --rate "$RATE" --connections 32 --warmup 0s \
    --duration "$2" --json --out "$TMP/$1" >"$TMP/$1.json" 2>"$TMP/$1.err"
}
p99() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["runs"][0]; print(r["latency_ms"]["p99"], r["errors_total"], r["ops"])' "$1"; }

# One round: a fresh cluster, the load before, then the move under the load. Appends a line to RESULTS.
round() { # setting
  local setting=$1 args=()
  [ "$setting" != "-" ] && read -r -a args <<<"$setting"
  TMP=$(mktemp -d -p "$ALL")
  start n0 node --port 0 && N0=$URL
  start n1 node --port 0 && N1=$URL
  start n2 node --port 0 && N2=$URL
  printf '%s\n%s\n' "$N0" "$N1" >"$TMP/nodes"
  start proxy proxy --port 0 --nodes-file "$TMP/nodes" && P=$URL && PROXY_PID=$LAST_PID
  load before 20s
  read -r before_p99 before_err before_ops < <(p99 "$TMP/before.json")
  # The load again (its preload rewrites the same keys, on 2 nodes), then the third node and the mover
  # once its measured window is open.
  # (Started here, not through `load`: SIGINT must reach the harness itself.)
  "$H" run --proxy "$P" --workload ycsb-c --keys "$KEYS" --rate "$RATE" --connections 32 --warmup 0s \
    --duration 600s --json --out "$TMP/during" >"$TMP/during.json" 2>"$TMP/during.err" &
  local load_pid=$!
  until grep -q '\[   1s/' "$TMP/during.err" 2>/dev/null; do sleep 0.2; done
  printf '%s\n%s\n%s\nprevious %s\nprevious %s\n' "$N0" "$N1" "$N2" "$N0" "$N1" >"$TMP/nodes"
  kill -HUP "$PROXY_PID"
  sleep 0.5
  local t0 t1
  t0=$(date +%s.%N)
  "$H" reshard --proxy "$P" --state "$TMP/state.json" "${args[@]}" >"$TMP/reshard.txt" 2>/dev/null
  t1=$(date +%s.%N)
  kill -INT "$load_pid" 2>/dev/null || true
  wait "$load_pid" || true
  read -r during_p99 during_err during_ops < <(p99 "$TMP/during.json")
  stop_all
  python3 - "$setting" "$t0" "$t1" "$TMP/reshard.txt" "$before_p99" "$before_err" "$before_ops" \
    "$during_p99" "$during_err" "$during_ops" <<'PY' | tee -a "$ALL/results"
import json, re, sys
setting, t0, t1, path, b, berr, bops, d, derr, dops = sys.argv[1:]
text = open(path).read()
moved = int(re.search(r"moved (\d+)", text).group(1))
by_proxy = int(re.search(r"clients' requests (\d+)", text).group(1))
secs = float(t1) - float(t0)
print(json.dumps({"setting": setting, "secs": secs, "moved": moved, "moved_by_proxy": by_proxy,
                  "keys_per_s": moved / secs, "before_p99": float(b), "during_p99": float(d),
                  "ratio": float(d) / float(b), "failed": int(berr) + int(derr), "requests": int(bops) + int(dops)}))
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
          f"{r['secs']:5.1f} s = {r['keys_per_s']:>6,.0f} keys/s; GET p99 {r['before_p99']:.3f} -> "
          f"{r['during_p99']:.3f} ms ({r['ratio']:.2f}x); {r['failed']} failed of {r['requests']}")
print("medians:")
for s in dict.fromkeys(r["setting"] for r in rows):
    rs = [r for r in rows if r["setting"] == s]
    m = lambda k: statistics.median(r[k] for r in rs)
    print(f"mover {s:<13} {m('secs'):5.1f} s, {m('keys_per_s'):>6,.0f} keys moved/s; GET p99 before {m('before_p99'):.3f} ms, "
          f"during {m('during_p99'):.3f} ms, during/before {m('ratio'):.2f}x (median of {len(rs)}); "
          f"failed requests {sum(r['failed'] for r in rs)} of {sum(r['requests'] for r in rs)}")
PY
