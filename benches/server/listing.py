#!/usr/bin/env python3
"""What a listing page costs a node, and how long a whole listing takes through the proxy.

1. One `otkv-server` (memory engine) holding KEYS keys of 100 B: the node's CPU (utime + stime from
   /proc) per page of 1,000 keys, for a listing's first page (asked PAGES times) and for every page of a
   whole listing, each page going on from the one before.
2. `harness proxy --nodes 3` holding KEYS keys: the wall time of a whole listing through the proxy, in
   pages of 1,000 and of 10,000.

Usage: benches/server/listing.py [--keys N] [--otkv BIN] [--harness BIN] [--after]
`--after` pages with `after=` the last key (the form servers before the cursor take) instead of
`cursor=` the `next` given.
"""

import argparse
import http.client
import json
import os
import socket
import time
import urllib.parse

from listening import start

TICKS = os.sysconf("SC_CLK_TCK")


def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def load(url, keys):
    """PUTs `keys` keys of 100 B, pipelined 1,000 at a time on one connection."""
    u = urllib.parse.urlparse(url)
    s = socket.create_connection((u.hostname, u.port))
    value = b"v" * 100
    for start_at in range(0, keys, 1000):
        batch = b"".join(
            b"PUT /v1/kv/key%08d HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" % i + value
            for i in range(start_at, min(keys, start_at + 1000))
        )
        s.sendall(batch)
        want = min(keys, start_at + 1000) - start_at
        got = b""
        while got.count(b"HTTP/1.1 ") < want or not got.endswith(b"\r\n\r\n"):
            chunk = s.recv(1 << 20)
            if not chunk:
                raise SystemExit("the server closed the connection while loading")
            got += chunk
    s.close()


class Lister:
    def __init__(self, url, after_form):
        u = urllib.parse.urlparse(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port)
        self.after_form = after_form

    def page(self, limit, cursor=None):
        query = f"limit={limit}"
        if cursor is not None:
            query += f"&{'after' if self.after_form else 'cursor'}={cursor}"
        self.conn.request("GET", f"/v1/kv?{query}")
        r = self.conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise SystemExit(f"listing answered {r.status}: {body[:200]!r}")
        doc = json.loads(body)
        return doc["keys"], doc.get("next")

    def whole(self, limit):
        """Every page; returns (keys listed, pages)."""
        cursor, keys, pages = None, 0, 0
        while True:
            page, nxt = self.page(limit, cursor)
            keys += len(page)
            pages += 1
            if nxt is None:
                return keys, pages
            cursor = nxt


def node_page_cost(args):
    node, url = start([args.otkv, "--port", "0"])
    try:
        load(url, args.keys)
        lister = Lister(url, args.after)
        c0 = cpu(node.pid)
        for _ in range(args.pages):
            lister.page(1000)
        first = (cpu(node.pid) - c0) / args.pages
        c0, t0 = cpu(node.pid), time.time()
        keys, pages = lister.whole(1000)
        later = (cpu(node.pid) - c0) / pages
        wall = time.time() - t0
        print(f"node of {args.keys:,} keys: first page of 1,000: {first * 1000:.2f} ms of node CPU "
              f"(mean of {args.pages}); whole listing: {pages} pages, {later * 1000:.2f} ms of node CPU a page, "
              f"{wall:.2f} s, {keys:,} keys listed")
    finally:
        node.terminate()
        node.wait()


def proxy_listing(args):
    proxy, url = start([args.harness, "proxy", "--port", "0", "--nodes", "3"])
    try:
        load(url, args.keys)
        for limit in (1000, 10000):
            lister = Lister(url, args.after)
            t0 = time.time()
            keys, pages = lister.whole(limit)
            print(f"proxy of 3 nodes, {args.keys:,} keys: whole listing in pages of {limit:,}: "
                  f"{time.time() - t0:.2f} s ({pages} pages, {keys:,} keys listed)")
    finally:
        proxy.terminate()
        proxy.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--pages", type=int, default=50, help="first pages asked, for their mean cost")
    ap.add_argument("--otkv", default="target/release/otkv-server")
    ap.add_argument("--harness", default="target/release/harness")
    ap.add_argument("--after", action="store_true")
    ap.add_argument("--only", choices=["node", "proxy"])
    args = ap.parse_args()
    if args.only != "proxy":
        node_page_cost(args)
    if args.only != "node":
        proxy_listing(args)


if __name__ == "__main__":
    main()
