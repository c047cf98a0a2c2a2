#!/usr/bin/env bash
# Replica groups against etcd, with the same harness on the same machine: one OTKV group of 3 members
# against one 3-member etcd cluster, both syncing every write to disk before acknowledging it
# (`--durability sync`; etcd always does). Per workload (PUT, then linearizable GET of 100k keys of
# 100 B, 64 connections, closed loop) the two alternate round by round; the table gives the medians of
# throughput, p99 and server CPU per operation (summed over every member, from their own /metrics) and
# the ratios: throughput, and throughput per CPU (etcd's CPU per operation over OTKV's).
#
# Needs etcd (apt-get install etcd-server).
# Usage: benches/server/replication.sh [ROUNDS] [DURATION]   (defaults 3 and 5s)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
DUR=${2:-5s}
command -v etcd >/dev/null || { echo "needs etcd (apt-get install etcd-server)"; exit 1; }
cargo build --release -q -p otkv-harness --bin harness
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

for round in $(seq 1 "$ROUNDS"); do
  for workload in put get; do
    # Alternate which goes first, so neither always runs on a warmer (or hotter) machine.
    order="otkv etcd"
    [ $((round % 2)) -eq 0 ] && order="etcd otkv"
    for target in $order; do
      ./target/release/harness run --target "$target" --durability sync --nodes 1 --replicas 3 \
        --workload "$workload" --duration "$DUR" --out "$TMP/$workload-$target-$round" >/dev/null 2>"$TMP/err" ||
        { echo "harness run --target $target --workload $workload failed:"; tail -5 "$TMP/err"; exit 1; }
      echo "round $round $workload $target done" >&2
    done
  done
done

python3 - "$TMP" "$ROUNDS" <<'PY'
import json, statistics, sys
tmp, rounds = sys.argv[1], int(sys.argv[2])
def run(workload, target, r):
    return json.load(open(f"{tmp}/{workload}-{target}-{r}/summary.json"))["runs"][0]
print(f"{rounds} alternating rounds, medians; 1 group of 3 members (OTKV) / a 3-member cluster (etcd), durability sync")
print()
print("| workload | OTKV ops/s | etcd ops/s | ratio | OTKV p99 ms | etcd p99 ms | OTKV CPU µs/op | etcd CPU µs/op | per-CPU ratio |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for workload, label in (("put", "PUT (replicated)"), ("get", "GET (linearizable)")):
    o = [run(workload, "otkv", r) for r in range(1, rounds + 1)]
    e = [run(workload, "etcd", r) for r in range(1, rounds + 1)]
    med = lambda rs, f: statistics.median(f(x) for x in rs)
    thr = lambda x: x["throughput"]
    p99 = lambda x: x["latency_ms"]["p99"]
    cpu = lambda x: x["server_cpu_us_per_op"]
    ratio = statistics.median(thr(a) / thr(b) for a, b in zip(o, e))
    per_cpu = statistics.median(cpu(b) / cpu(a) for a, b in zip(o, e))
    print(f"| {label} | {med(o, thr):,.0f} | {med(e, thr):,.0f} | {ratio:.2f} | {med(o, p99):.2f} | {med(e, p99):.2f} "
          f"| {med(o, cpu):.1f} | {med(e, cpu):.1f} | {per_cpu:.2f} |")
PY
