#!/usr/bin/env python3
"""An operator grows a cluster the way one does with HAProxy or nginx: edits the proxy's nodes file to the
new set (no `previous` lines), sends SIGHUP, then runs `harness reshard --proxy`, while a writer, a reader
and a deleter use the proxy. Afterwards: how many acknowledged keys answer 404 (lost), how many live on two
nodes, how many client requests failed.

Usage: benches/server/edit_nodes_file.py [--harness BIN] [--keys N] [--after]
(`--after`: page listings with `after=` the last key, as servers before the listing cursor take them.)
"""

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.parse

from listening import start


class Client:
    def __init__(self, url):
        u = urllib.parse.urlparse(url)
        self.host, self.port = u.hostname, u.port
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)

    def call(self, method, path, body=None):
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, body=body)
                r = self.conn.getresponse()
                return r.status, r.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
                if attempt:
                    return 0, b""


def keys_on(url, after_form):
    c, keys, cursor = Client(url), [], None
    while True:
        q = "limit=1000" + (f"&{'after' if after_form else 'cursor'}={cursor}" if cursor else "")
        status, body = c.call("GET", f"/v1/kv?{q}")
        assert status == 200, (status, body[:200])
        doc = json.loads(body)
        keys += doc["keys"]
        cursor = doc.get("next")
        if cursor is None:
            return keys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--harness", default="target/release/harness")
    ap.add_argument("--keys", type=int, default=2000)
    ap.add_argument("--after", action="store_true")
    args = ap.parse_args()
    h = os.path.abspath(args.harness)
    procs = []
    try:
        nodes = []
        for _ in range(3):
            p, url = start([h, "node", "--port", "0"])
            procs.append(p)
            nodes.append(url)
        tmp = tempfile.mkdtemp()
        nodes_file = os.path.join(tmp, "nodes.txt")
        with open(nodes_file, "w") as f:
            f.write(f"{nodes[0]}\n{nodes[1]}\n")
        proxy, purl = start([h, "proxy", "--port", "0", "--nodes-file", nodes_file])
        procs.append(proxy)
        c = Client(purl)
        n = args.keys
        for i in range(n):
            assert c.call("PUT", f"/v1/kv/k{i:05}", f"v{i}".encode())[0] in (201, 204)
        stop = threading.Event()
        acked, deleted, failed, requests = {}, set(), [0], [0]

        def writer():
            w, i = Client(purl), 0
            while not stop.is_set():
                k = f"k{i % (n // 2):05}"
                v = f"w{i}".encode()
                s, _ = w.call("PUT", f"/v1/kv/{k}", v)
                requests[0] += 1
                if s in (201, 204):
                    acked[k] = v
                else:
                    failed[0] += 1
                i += 1

        def deleter():
            d, i = Client(purl), n // 2
            while not stop.is_set() and i < n // 2 + n // 10:
                s, _ = d.call("DELETE", f"/v1/kv/k{i:05}")
                requests[0] += 1
                if s == 204:
                    deleted.add(f"k{i:05}")
                else:
                    failed[0] += 1
                i += 1

        def reader():
            r, i = Client(purl), 0
            while not stop.is_set():
                k = n // 2 + n // 10 + i % (n - n // 2 - n // 10)
                s, body = r.call("GET", f"/v1/kv/k{k:05}")
                requests[0] += 1
                if (s, body) != (200, f"v{k}".encode()):
                    failed[0] += 1
                i += 1

        threads = [threading.Thread(target=t) for t in (writer, deleter, reader)]
        for t in threads:
            t.start()
        with open(nodes_file, "w") as f:
            f.write(f"{nodes[0]}\n{nodes[1]}\n{nodes[2]}\n")
        proxy.send_signal(signal.SIGHUP)
        while True:
            s, body = c.call("GET", "/v1/stats")
            topo = json.loads(body)["topology"]
            if len(topo["nodes"]) == 3:
                break
        print(f"after SIGHUP: nodes {len(topo['nodes'])}, previous {topo['previous']}, note: {topo.get('note')}")
        print("nodes file now:\n  " + open(nodes_file).read().strip().replace("\n", "\n  "))
        out = subprocess.run([h, "reshard", "--proxy", purl, "--state", os.path.join(tmp, "state.json")],
                             capture_output=True, text=True, cwd=tmp)
        print(f"harness reshard --proxy: exit {out.returncode}: {(out.stdout + out.stderr).strip()[-300:]}")
        stop.set()
        for t in threads:
            t.join()
        lost = 0
        for i in range(n):
            k = f"k{i:05}"
            if k in deleted:
                continue
            want = acked.get(k, f"v{i}".encode())
            s, body = c.call("GET", f"/v1/kv/{k}")
            if s == 404:
                lost += 1
            elif (s, body) != (200, want):
                lost += 1
        everywhere = [k for url in nodes for k in keys_on(url, args.after)]
        twice = len(everywhere) - len(set(everywhere))
        back = sum(1 for k in deleted if c.call("GET", f"/v1/kv/{k}")[0] != 404)
        print(f"{n} keys: {lost} lost or wrong, {twice} on two nodes, {back} deleted keys back; "
              f"{failed[0]} of {requests[0]} client requests failed; state file left: "
              f"{os.path.exists(os.path.join(tmp, 'state.json'))}")
        sys.exit(1 if lost or twice or back or failed[0] else 0)
    finally:
        for p in procs:
            p.terminate()
            p.wait()


if __name__ == "__main__":
    main()
