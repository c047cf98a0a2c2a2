#!/usr/bin/env python3
"""A leader killed under load: one replica group of 3 members (durability sync) behind `harness proxy`,
an open-loop YCSB-A load (50% reads, 50% writes) through the proxy, then `kill -9` of the member that
leads, and its restart on its data directory a few seconds later.

Prints: how long after the kill a write through the proxy was acknowledged again (a probe PUT every
10 ms), how long after its restart the killed member had applied everything the leader had committed,
and the harness's own account of the load (errors by kind, latency, the per-second lines). Lost writes
and linearizability are what harness/tests/replica_groups.rs checks; this measures the window.

Usage: benches/server/failover.py [--rate 2000] [--seconds 12] [--kill-at 4] [--restart-after 3]"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from listening import start  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
SERVER = os.path.join(ROOT, "target/release/otkv-server")
HARNESS = os.path.join(ROOT, "target/release/harness")


def http(method, url, body=None):
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def replica(url):
    status, body = http("GET", f"{url}/v1/stats")
    return json.loads(body)["replica"] if status == 200 else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--seconds", type=int, default=12)
    ap.add_argument("--kill-at", type=float, default=4)
    ap.add_argument("--restart-after", type=float, default=3)
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "otkv-adapter-http", "-p", "otkv-harness"],
                   check=True, cwd=ROOT)
    tmp = tempfile.mkdtemp(prefix="otkv-failover-")
    procs, argvs, urls = {}, {}, {}
    for m in (1, 2, 3):
        argv = [SERVER, "--port", "0", "--member", str(m), "--durability", "sync", "--data-dir", f"{tmp}/m{m}"]
        if m > 1:
            argv.append("--join")
        procs[m], urls[m] = start(argv)
        # Restarted on the same port, so the group's member list stays right.
        argvs[m] = [a if a != "0" else urls[m].rsplit(":", 1)[1] for a in argv if a != "--join"]
        if m > 1:
            while http("POST", f"{urls[1]}/v1/replica/members?add={m}&url={urls[m]}")[0] != 200:
                time.sleep(0.05)
    proxy, proxy_url = start([HARNESS, "proxy", "--port", "0", "--node", ",".join(urls.values())])
    load = subprocess.Popen([HARNESS, "run", "--proxy", proxy_url, "--workload", "ycsb-a", "--keys", "10000",
                             "--rate", str(args.rate), "--duration", f"{args.seconds}s", "--warmup", "0s",
                             "--out", f"{tmp}/run"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(load.stdout))
    reader.start()
    time.sleep(args.kill_at)
    leader = next(m for m in urls if (replica(urls[m]) or {}).get("role") == "leader")
    killed = time.monotonic()
    procs[leader].send_signal(signal.SIGKILL)
    procs[leader].wait()
    n = 0
    while http("PUT", f"{proxy_url}/v1/kv/failover-probe", b"x")[0] not in (201, 204):
        n += 1
        time.sleep(0.01)
    acked = time.monotonic() - killed
    time.sleep(max(0.0, args.restart_after - (time.monotonic() - killed)))
    procs[leader] = subprocess.Popen(argvs[leader], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    restarted = time.monotonic()
    while True:
        mine, others = replica(urls[leader]), [replica(urls[m]) for m in urls if m != leader]
        commit = max((o or {}).get("commit_index", 0) for o in others)
        if mine and mine["applied_index"] >= commit > 0:
            break
        time.sleep(0.01)
    in_sync = time.monotonic() - restarted
    load.wait()
    reader.join()
    print(f"member {leader} (the leader) killed {args.kill_at:.0f} s into a {args.rate} ops/s YCSB-A load through the proxy")
    print(f"writes acknowledged again {acked * 1000:.0f} ms after the kill ({n} probes refused first)")
    print(f"the killed member, restarted {args.restart_after:.0f} s after the kill, in sync {in_sync * 1000:.0f} ms after its restart")
    print("harness run:")
    sys.stdout.writelines("  " + line for line in lines if line.strip())
    for p in list(procs.values()) + [proxy]:
        p.kill()


if __name__ == "__main__":
    main()
