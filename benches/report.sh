#!/usr/bin/env bash
# Every published figure, measured again in one go, so none can go stale: benches/results/README.md is
# their one home, and README shows its headline.
#
# Runs each benchmark below, in order, and writes:
#   benches/results/NAME.txt   its output as printed (the whole of it);
#   benches/results/README.md  the date, the commit, the machine, and per benchmark what it measures, the
#                              exact command, and its summary;
#   img/                       the reference run's plots and its full output (img/reference-run.txt);
#   README.md                  its headline table (between `<!-- results:headline -->` and
#                              `<!-- /results -->`), from the reference, instructions and memory sections.
# Takes about an hour on a 2-core machine. Needs wrk, redis-server, redis-benchmark, haproxy, memcached
# valgrind, openssl and etcd (apt-get install wrk redis-server haproxy memcached valgrind openssl
# etcd-server); netns needs root and iproute2 (skipped, and said so, without them).
#
# Usage: benches/report.sh [NAME...]   (default: all; NAME: reference sync instructions pipelined compare
#        durability proxy tls reshard listing resp-client client-vs-wrk memory memory-churn compaction-tail
#        ten-million recovery replication failover netns)
#        benches/report.sh --index-only  (rewrite the index and README's headline from the last results)
# With NAMEs, only those are rerun; the others keep their last results (each section says its own date).
set -euo pipefail
cd "$(dirname "$0")/.."
# The commit measured, taken before anything runs: what this script itself rewrites (the results, the
# reference plots, README's headline) does not count as an uncommitted change.
COMMIT="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!benches/results' ':!img' ':!README.md' ||
  echo ' (with uncommitted changes)')"

ROOT=$PWD
OUT=benches/results
mkdir -p "$OUT" img

ALL=(reference sync instructions pipelined compare durability proxy tls reshard listing resp-client client-vs-wrk
  memory memory-churn compaction-tail ten-million recovery replication failover netns)
WANT=("$@")
INDEX_ONLY=
if [ "${1:-}" = --index-only ]; then
  INDEX_ONLY=1
  WANT=()
elif [ ${#WANT[@]} -eq 0 ]; then
  WANT=("${ALL[@]}")
fi

[ -n "$INDEX_ONLY" ] || for tool in wrk redis-server redis-benchmark haproxy memcached valgrind python3 openssl etcd; do
  command -v "$tool" >/dev/null || { echo "report: needs $tool (apt-get install wrk redis-server haproxy memcached valgrind python3 openssl etcd-server)" >&2; exit 1; }
done

[ -n "$INDEX_ONLY" ] || cargo build --release -q -p otkv-harness -p otkv-adapter-http --bins
HARNESS=./target/release/harness

# What each benchmark measures, its command, and how to cut its summary from its output.
declare -A WHAT CMD
WHAT[reference]="The main job against OTKV, then the same workload, client, routing and value checks against redis-server (no persistence, as OTKV's --durability none): YCSB-B, 100k keys of 100 B, 64 connections, 1 s warm-up, 10 s per node count, client and nodes sharing the machine."
CMD[reference]="$HARNESS run --nodes 1..3 --target otkv,redis --out $OUT/reference"
WHAT[sync]="YCSB-A (50% updates) with every write acknowledged only once on disk, one node each (Redis: appendfsync always)."
CMD[sync]="$HARNESS run --nodes 1 --workload ycsb-a --durability sync --target otkv,redis --duration 5s --out $OUT/sync"
WHAT[instructions]="User-space instructions per request, counted by callgrind (the same on every run), and last-level cache misses per request: otkv-server on its own table and on flurry, the may_minihttp hello baseline, redis-server; GETs and PUTs of random keys among 100k keys of 100 B, 8 connections, unpipelined and pipelined 16 deep."
CMD[instructions]="CACHE=1 benches/server/instructions.sh 3s"
WHAT[pipelined]="Server CPU time per pipelined GET (16 deep) at 100k keys, otkv-server (table, flurry) and redis-server alternating round by round; medians of the rounds and of the per-round ratios."
CMD[pipelined]="benches/server/pipelined-get.sh 5 5s"
WHAT[compare]="Throughput and server CPU per request, unpipelined and pipelined 16 deep: otkv-server GET and PUT on 100k keys of 100 B under wrk -t1 -c64, the may_minihttp hello baseline, redis-server under redis-benchmark -c 64."
CMD[compare]="benches/server/compare.sh 10s"
WHAT[durability]="PUT throughput by engine and durability mode (wrk -t1 -c64, unique 100-byte values), and redis-server's SET under each appendfsync setting."
CMD[durability]="benches/server/durability.sh 10s"
WHAT[proxy]="The routing tier: 3 nodes, GETs of 100k keys of 100 B under wrk -t1 -c64, routed by the client, through harness proxy, and through HAProxy (consistent hashing on the URI), alternating; the proxies' CPU per request."
CMD[proxy]="benches/server/proxy.sh 10s"
WHAT[tls]="What TLS and tokens cost: server CPU per GET (100k keys of 100 B, 64 keep-alive connections, the harness as the one client) for otkv-server in clear, over TLS and with a token, and redis-server in clear and over TLS (tls-port, the same ECDSA P-256 certificate); then new TLS connections per second (handshake, one GET, close) with 8 reconnecting connections. Alternating rounds; medians."
CMD[tls]="benches/server/tls.sh 5 5s"
WHAT[reshard]="Growing a cluster under load: 1M keys of 100 B behind harness proxy on 2 nodes, a third node added (the proxy's --nodes-file, SIGHUP) and harness reshard --proxy moving the keys while an open-loop GET load of 10,000 ops/s runs through the proxy, the load generator pinned to one core and the cluster (nodes, proxy, mover) to the other: the mover's time and rate, the nodes' CPU per moved key beyond what the load costs them, GET p99 of the same load in the 40 s before the move and during it, and failed requests; the mover unpaced and paced with --rate 2000, a fresh cluster each round, settings alternating, 5 rounds each, medians."
CMD[reshard]="PIN=1 benches/server/reshard.sh 1000000 10000 5 - '--rate 2000'"
WHAT[listing]="What a listing page costs: one node (memory engine) holding 1M keys of 100 B, its CPU per page of 1,000 keys for a listing's first page and for every page of a whole listing; then the wall time of a whole listing of 1M keys through harness proxy in front of 3 nodes, in pages of 1,000 and 10,000."
CMD[listing]="python3 benches/server/listing.py --keys 1000000"
WHAT[resp-client]="The harness's RESP client against redis-benchmark on one redis-server (GET, 100-byte values, 100k keys, 64 connections): is the harness fast enough to measure Redis?"
CMD[resp-client]="benches/server/resp-client.sh 10"
WHAT[client-vs-wrk]="The harness's HTTP client against wrk -t1 on the same node and connection count: its own CPU per request."
CMD[client-vs-wrk]="benches/server/client-vs-wrk.sh 10s"
WHAT[memory]="Memory per key: RSS of one server holding the same data (OTKV on its table and on flurry, redis-server, memcached), with each one's ratio to Redis."
CMD[memory]="benches/server/memory.sh"
WHAT[memory-churn]="Memory as the data changes, otkv-server and redis-server through the same sequences (RSS 15 s after each step): 1M keys of 100 B written then all deleted; 1M keys of 1 KiB overwritten with 100 B, against a server loaded with the 100 B values directly; 1,000 keys of 4 KiB overwritten 1,000 times with a log and no snapshot, kill -9, restart (OTKV only); 1M keys of 100 B with every other key deleted."
CMD[memory-churn]="python3 benches/server/memory_churn.py --otkv ./target/release/otkv-server"
WHAT[compaction-tail]="GET latency while compaction moves 1M live entries (every other key of 2M deleted during an open-loop load of 20,000 GET/s on 64 connections, one worker), against the same sequence with --compaction off; alternating rounds, medians."
CMD[compaction-tail]="benches/server/compaction_tail.sh 3 20000"
WHAT[ten-million]="Ten million keys of 16 + 100 bytes with periodic durability, on the table then on flurry: load rate, RSS, GET p99 with and without a snapshot running, snapshot time, the slowest put while the table grows, recovery in a new process."
CMD[ten-million]="for e in memory flurry; do echo \"== ENGINE=\$e\"; ENGINE=\$e cargo run --release -q -p otkv-engine --example ten_million; done"
WHAT[recovery]="Recovery of 1M keys of 100 B from the log alone and from a snapshot: time and disk use."
CMD[recovery]="cargo run --release -q -p otkv-engine --example recovery"
WHAT[replication]="Replica groups against etcd, the same harness on the same machine: one OTKV group of 3 members against one 3-member etcd cluster, both syncing every write before acknowledging it; replicated PUT, then linearizable GET, of 100k keys of 100 B, 64 connections, closed loop; alternating rounds, medians; CPU per operation summed over every member (from their own /metrics), and throughput per CPU as etcd's CPU per operation over OTKV's."
CMD[replication]="benches/server/replication.sh 3 5s"
WHAT[failover]="The leader of a group of 3 (durability sync) killed with kill -9 under a 2,000 ops/s open-loop YCSB-A load (50% writes) through harness proxy, then restarted on its data directory 3 s later: when writes were acknowledged again (a probe PUT every 10 ms), when the restarted member was back in sync, and the load's errors and latency as the harness saw them. That no acknowledged write is lost and the history stays linearizable is what harness/tests/replica_groups.rs checks."
CMD[failover]="python3 benches/server/failover.py"
WHAT[netns]="Three nodes in three network namespaces behind veth pairs and a bridge: the reference workload across real network hops (with netem's 0.1 ms delay where the kernel has it)."
CMD[netns]="benches/netns/cluster.sh --duration 5s"

# summary NAME: the part of NAME's output README shows.
summary() {
  local f=$OUT/$1.txt
  case $1 in
    reference | sync | netns) python3 - "$1" <<'PY'
import json, sys
name = sys.argv[1]
doc = json.load(open(f"benches/results/{name}/summary.json"))
print("| run | ops/s | p50 ms | p99 ms | p99.9 ms | server CPU µs/op | client CPU µs/op | projected ops/s |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
fmt = lambda v, d=3: "-" if v is None else f"{v:,.{d}f}"
for r in doc["runs"]:
    label = f"{r['nodes']} {r['target']}" + (f" via {r['via']}" if r.get("via") else "")
    lat = r["latency_ms"]
    print(f"| {label} | {r['throughput']:,.0f} | {fmt(lat['p50'])} | {fmt(lat['p99'])} | {fmt(lat['p999'])} "
          f"| {fmt(r.get('server_cpu_us_per_op'), 2)} | {fmt(r.get('client_cpu_us_per_op'), 2)} "
          f"| {fmt(r.get('projected_throughput'), 0)} |")
    if name == "sync":
        for op, o in r.get("by_op", {}).items():
            l = o["latency_ms"]
            print(f"| {label}, {op}s | | {fmt(l['p50'])} | {fmt(l['p99'])} | {fmt(l['p999'])} | | | |")
PY
      ;;
    instructions) sed -n '/^server /,/^$/p; /^== /q' "$f" | sed '/^== /d' ;;
    pipelined) sed -n '/^medians/,$p' "$f" ;;
    tls) sed -n '/^| server/,$p' "$f" ;;
    reshard) grep -v '^{' "$f" ;;
    *) grep -v '^\s*$' "$f" | grep -Ev '^(warning|   Compiling|    Finished|     Running)' ;;
  esac
}

run_one() {
  local name=$1 cmd=${CMD[$1]}
  echo "== $name: $cmd" >&2
  if [ "$name" = netns ] && { [ "$EUID" -ne 0 ] || ! command -v ip >/dev/null; }; then
    echo "skipped: needs root and iproute2" >"$OUT/$name.txt"
    return
  fi
  local started
  started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  if ! bash -c "$cmd" >"$OUT/$name.txt" 2>"$OUT/$name.err"; then
    echo "report: $name failed; see $OUT/$name.err" >&2
    tail -5 "$OUT/$name.err" >&2
  fi
  if [ "$name" = netns ]; then
    # cluster.sh leaves its results in results/: keep its summary beside the others.
    mkdir -p "$OUT/netns" && cp results/summary.json "$OUT/netns/" 2>/dev/null || true
  fi
  printf '%s\n%s\n' "$started" "$COMMIT" >"$OUT/$name.when"
}

for name in "${WANT[@]+"${WANT[@]}"}"; do
  [ -n "${CMD[$name]:-}" ] || { echo "report: no benchmark named $name (${ALL[*]})" >&2; exit 1; }
  run_one "$name"
done

if [[ " ${WANT[*]-} " == *" reference "* ]]; then
  cp "$OUT"/reference/*.png img/ 2>/dev/null || true
  cp "$OUT/reference.txt" img/reference-run.txt
  cp "$OUT/reference/report.html" img/report.html
  # The report as a browser shows it, at desktop and phone widths.
  if command -v chromium >/dev/null; then
    for shot in desktop:1280,4200 phone:390,6000; do
      chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size="${shot#*:}" \
        --screenshot="$ROOT/img/report-${shot%%:*}.png" "file://$ROOT/img/report.html" 2>/dev/null || true
    done
  fi
fi

# The index: machine, then each benchmark's date, commit, command and summary.
{
  cat <<'TXT'
# Benchmark results

Every measured figure of OTKV lives here, each with the date, the commit and the exact command that
produced it; README shows only the headline. This page is written by `benches/report.sh`; each
section's whole output is `NAME.txt` beside this file.

```sh
benches/report.sh                     # every section below, rerun (about an hour on 2 cores)
benches/report.sh memory proxy        # ... only some of them; the others keep their last results
cargo bench -p otkv-benches           # criterion: the engine's table against flurry, papaya, dashmap, RwLock
```

The scripts need `wrk`, `redis-server`, `haproxy`, `memcached`, `valgrind`, `openssl` and `etcd` (`apt-get
install wrk redis-server haproxy memcached valgrind openssl etcd-server`); `netns` needs root and iproute2. How to read the
figures: on small shared machines wall-clock figures swing by ±30% between runs, so the scripts that
compare CPU time alternate the servers round by round and report medians and ratios; instruction counts
(callgrind) are exact on every run. What `harness run`'s columns mean (server and client CPU per
operation, the projection) is in [the harness guide](../../docs/harness.md#what-each-operation-cost).
TXT
  echo
  echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r), $(rustc --version | cut -d' ' -f1-2)."
  for name in "${ALL[@]}"; do
    [ -f "$OUT/$name.txt" ] || continue
    { read -r when; read -r commit; } <"$OUT/$name.when"
    echo
    echo "## $name"
    echo
    echo "${WHAT[$name]}"
    echo
    echo "Measured $when at commit $commit:"
    echo
    echo '```sh'
    echo "${CMD[$name]}" | sed "s#$HARNESS#harness#g; s# --out $OUT/[a-z-]*##"
    echo '```'
    echo
    if [[ $name == reference || $name == sync || $name == netns ]] && [ -f "$OUT/$name/summary.json" ]; then
      summary "$name"
    else
      echo '```text'
      summary "$name"
      echo '```'
    fi
  done
} >"$OUT/README.md"

# The headline: OTKV against Redis from four of the sections above, into the index's top and README's
# one marked block (`<!-- results:headline -->`). Nothing else in README quotes a figure.
python3 - <<'PY'
import json, re
out = "benches/results"
def when(name):
    try:
        stamp, commit = open(f"{out}/{name}.when").read().split("\n")[:2]
        return stamp, commit
    except (OSError, ValueError):
        return None
rows, sources = [], []
def row(what, otkv, redis, fmt, source):
    ratio = f"{otkv / redis:.2f}" if redis else "-"
    rows.append(f"| {what} | {fmt(otkv)} | {fmt(redis)} | {ratio} | [{source}](benches/results/README.md#{source}) |")
    if source not in sources:
        sources.append(source)
try:
    # Medians of alternating rounds, the harness as the one client of either server.
    table = {m.group(1): float(m.group(2)) for m in
             re.finditer(r"^\| (otkv clear|redis clear) \| \d+ \| ([\d.]+) \|$", open(f"{out}/tls.txt").read(), re.M)}
    row("server CPU per GET, µs (64 connections, median of alternating rounds)", table["otkv clear"],
        table["redis clear"], lambda v: f"{v:.2f}", "tls")
except (OSError, KeyError):
    pass
try:
    text = open(f"{out}/pipelined.txt").read()
    total = lambda who: float(re.search(rf"^  {who}\S* +total ([\d.]+)", text, re.M).group(1))
    row("server CPU per GET pipelined 16 deep, µs (median of alternating rounds)", total("otkv memory"),
        total("redis-server"), lambda v: f"{v:.2f}", "pipelined")
except (OSError, AttributeError):
    pass
try:
    text = open(f"{out}/instructions.txt").read()
    def cols(label):
        line = next(l for l in text.splitlines() if l.startswith(label))
        return [int(c.split("/")[0]) for c in re.findall(r"(\d+/[\d.]+)", line)]
    o, r = cols("otkv-server (memory)"), cols("redis-server")
    row("user-space instructions per GET (callgrind)", o[0], r[0], lambda v: f"{v:,}", "instructions")
    row("user-space instructions per PUT (callgrind)", o[2], r[2], lambda v: f"{v:,}", "instructions")
except (OSError, StopIteration, IndexError):
    pass
try:
    line = next(l for l in open(f"{out}/memory.txt") if l.startswith("1M x 100 B"))
    per_key = [int(v) for v in line.split("  ")[-1].split(";")[0].split(" / ")]
    row("memory per key, bytes of RSS (1M keys of 100 B)", per_key[0], per_key[2], lambda v: f"{v:,}", "memory")
except (OSError, StopIteration, ValueError, IndexError):
    pass
machine = re.search(r"^Machine: (.*)$", open(f"{out}/README.md").read(), re.M)
stamps = []
for src in sources:
    w = when(src)
    if w:
        stamps.append(f"{src} {w[0][:10]} at `{w[1]}`")
index_text = open(f"{out}/README.md").read()
commands = []
for src in sources:
    m = re.search(rf"^## {re.escape(src)}\n.*?```sh\n(.*?)\n```", index_text, re.S | re.M)
    if m:
        commands.append(f"`{m.group(1)}`")
table = "\n".join([
    "| per request or key (lower is better) | OTKV | Redis | OTKV ÷ Redis | from |",
    "|---|---:|---:|---:|---|",
    *rows,
])
# Replicated: a group of 3 against a 3-member etcd cluster.
try:
    replicated = []
    for line in open(f"{out}/replication.txt"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 9 and cells[0].startswith(("PUT", "GET")):
            replicated.append(f"| {cells[0]} | {cells[1]} ({cells[3]}× etcd) | {cells[2]} | {cells[8]}× | "
                              f"{cells[4]} / {cells[5]} | [replication](benches/results/README.md#replication) |")
    if replicated:
        sources.append("replication")
        w = when("replication")
        if w:
            stamps.append(f"replication {w[0][:10]} at `{w[1]}`")
        m = re.search(r"^## replication\n.*?```sh\n(.*?)\n```", index_text, re.S | re.M)
        if m:
            commands.append(f"`{m.group(1)}`")
        table += "\n\n" + "\n".join([
            "| replicated, a group of 3 against a 3-member etcd cluster, both `sync` | OTKV ops/s | etcd ops/s | throughput per CPU, OTKV ÷ etcd | p99 ms, OTKV / etcd | from |",
            "|---|---:|---:|---:|---:|---|",
            *replicated,
        ])
except OSError:
    pass
block = (f"{table}\n\n{machine.group(1) if machine else ''} Measured: {'; '.join(stamps)}. "
         f"Commands: {', '.join(commands)}.")
readme = open("README.md").read()
readme = re.sub(r"<!-- results:headline -->.*?<!-- /results -->",
                f"<!-- results:headline -->\n{block}\n<!-- /results -->", readme, flags=re.S)
open("README.md", "w").write(readme)
index = open(f"{out}/README.md").read()
index = index.replace("\n## reference\n", f"\n## headline\n\nWhat README shows, taken from the sections below.\n\n{block.replace('](benches/results/README.md#', '](#')}\n\n## reference\n", 1)
open(f"{out}/README.md", "w").write(index)
PY
echo "report: wrote $OUT/README.md and README.md's headline" >&2
