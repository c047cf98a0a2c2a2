#!/usr/bin/env python3
"""Memory as the data changes: RSS of otkv-server and redis-server through the same sequences, side by side.

Each sequence starts fresh servers (OTKV: the engine given; Redis: no persistence), drives them with the
same keys and values over pipelined connections (HTTP/1.1 keep-alive for OTKV, RESP for Redis), and reads
RSS from /proc after waiting SETTLE seconds:

  delete-all   N keys x 100 B written, then every key deleted: RSS empty, full, after the deletes
  shrink       N keys x 1 KiB written, then overwritten with 100 B: RSS after, and RSS of a server loaded with
               the 100 B values directly (the ratio is what counts)
  restart      (OTKV only: Redis has no log to replay here) K keys overwritten M times with 4 KiB values,
               durability periodic, no snapshot; kill -9; restart on the log: RSS before the kill, after
               the restart, and of an empty node
  half         N keys x 100 B written, every other key deleted: RSS after (compaction's case)

Usage: memory_churn.py --otkv target/release/otkv-server [--keys N] [--settle S] [--only NAME,...]
Prints one table per sequence, figures in MiB and ratios.
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def exchange(sock, requests, server, answers):
    """Sends the pipelined requests; returns the bytes read once `answers(bytes)` counts them all."""
    sock.sendall(b"".join(requests))
    buf = b""
    while answers(buf) < len(requests):
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise SystemExit(f"{server} closed the connection")
        buf += chunk
    return buf


class Otkv:
    name = "OTKV"

    def __init__(self, binary, engine, extra=()):
        self.proc = subprocess.Popen(
            [binary, "--port", "0", "--engine", engine, "--workers", "2", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in self.proc.stdout:
            m = re.search(r"listening on (?:http://)?([0-9.]+):(\d+)", line)
            if m:
                self.port = int(m.group(2))
                break
        else:
            raise SystemExit("otkv-server did not start")
        # Keep reading its output so a full pipe never blocks it.
        import threading
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()
        self.sock = socket.create_connection(("127.0.0.1", self.port))

    @property
    def pid(self):
        return self.proc.pid

    def _pipeline(self, requests):
        buf = exchange(self.sock, requests, "otkv-server", lambda b: b.count(b"HTTP/1.1 "))
        bad = re.findall(rb"HTTP/1.1 ([45]\d\d)", buf)
        if bad:
            raise SystemExit(f"otkv-server answered {bad[:3]}")

    def put_many(self, items):
        reqs = [b"PUT /v1/kv/%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (k, len(v), v)
                for k, v in items]
        self._pipeline(reqs)

    def delete_many(self, keys):
        self._pipeline([b"DELETE /v1/kv/%s HTTP/1.1\r\nHost: x\r\n\r\n" % k for k in keys])

    def stop(self, sig=signal.SIGTERM):
        self.sock.close()
        self.proc.send_signal(sig)
        self.proc.wait()


class Redis:
    name = "Redis"

    def __init__(self):
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--bind", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                self.sock = socket.create_connection(("127.0.0.1", self.port))
                break
            except OSError:
                time.sleep(0.02)
        else:
            raise SystemExit("redis-server did not start")

    @property
    def pid(self):
        return self.proc.pid

    @staticmethod
    def _cmd(*parts):
        out = b"*%d\r\n" % len(parts)
        for p in parts:
            out += b"$%d\r\n%s\r\n" % (len(p), p)
        return out

    def _pipeline(self, cmds):
        # Every answer here (+OK, :1, :0) is one line.
        buf = exchange(self.sock, cmds, "redis-server", lambda b: b.count(b"\r\n"))
        if b"-ERR" in buf:
            raise SystemExit("redis-server answered an error")

    def put_many(self, items):
        self._pipeline([self._cmd(b"SET", k, v) for k, v in items])

    def delete_many(self, keys):
        self._pipeline([self._cmd(b"DEL", k) for k in keys])

    def stop(self, sig=signal.SIGTERM):
        self.sock.close()
        self.proc.send_signal(sig)
        self.proc.wait()


BATCH = 500


def key(i):
    return b"key%013d" % i


def value(i, size, tag=b""):
    return (b"%d:%s:" % (i, tag) + b"." * size)[:size]


def load(server, n, size, tag=b""):
    for start in range(0, n, BATCH):
        server.put_many([(key(i), value(i, size, tag)) for i in range(start, min(n, start + BATCH))])


def delete(server, keys):
    keys = list(keys)
    for start in range(0, len(keys), BATCH):
        server.delete_many([key(i) for i in keys[start:start + BATCH]])


def mib(b):
    return f"{b / 2**20:8.1f} MiB"


def settle(args):
    time.sleep(args.settle)


def deletes(args, make, step):
    """N keys x 100 B written, then every `step`-th deleted: RSS empty, full and after, per server."""
    for server in make():
        settle(args)
        empty = rss(server.pid)
        load(server, args.keys, 100)
        settle(args)
        full = rss(server.pid)
        delete(server, range(0, args.keys, step))
        settle(args)
        after = rss(server.pid)
        server.stop()
        yield server.name, empty, full, after


def seq_delete_all(args, make):
    print(f"\n== delete-all: {args.keys:,} keys x 100 B written, then every key deleted; RSS {args.settle:g} s later")
    print(f"{'server':<8} {'empty':>12} {'full':>12} {'after':>12} {'after - empty':>14}")
    for name, empty, full, after in deletes(args, make, 1):
        print(f"{name:<8} {mib(empty)} {mib(full)} {mib(after)} {mib(after - empty)}")


def seq_half(args, make):
    print(f"\n== half: {args.keys:,} keys x 100 B written, every other key deleted; RSS {args.settle:g} s later")
    print(f"{'server':<8} {'empty':>12} {'full':>12} {'after':>12} {'after/full':>10}")
    for name, empty, full, after in deletes(args, make, 2):
        print(f"{name:<8} {mib(empty)} {mib(full)} {mib(after)} {after / full:10.2f}")


def seq_shrink(args, make):
    print(f"\n== shrink: {args.keys:,} keys x 1 KiB, overwritten with 100 B; RSS {args.settle:g} s later, against"
          " a server loaded with the 100 B values directly")
    print(f"{'server':<8} {'1 KiB':>12} {'after':>12} {'direct':>12} {'after/direct':>12}")
    for server, direct in zip(make(), make()):
        load(server, args.keys, 1024)
        settle(args)
        big = rss(server.pid)
        load(server, args.keys, 100, b"small")
        settle(args)
        after = rss(server.pid)
        server.stop()
        load(direct, args.keys, 100, b"small")
        settle(args)
        d = rss(direct.pid)
        direct.stop()
        print(f"{server.name:<8} {mib(big)} {mib(after)} {mib(d)} {after / d:12.2f}")


def seq_restart(args):
    keys, rounds = args.restart_keys, args.restart_writes // args.restart_keys
    print(f"\n== restart: {keys:,} keys x 4 KiB overwritten {rounds:,} times (durability periodic, no snapshot),"
          " kill -9, restart on the log")
    print(f"{'server':<8} {'empty':>12} {'before kill':>12} {'restarted':>12} {'live data':>12} {'restarted - empty - live':>24}")
    with tempfile.TemporaryDirectory() as d:
        extra = ["--data-dir", d, "--durability", "periodic", "--snapshot-interval", "0s"]
        fresh = Otkv(args.otkv, args.engine, ["--durability", "none"])
        settle(args)
        empty = rss(fresh.pid)
        fresh.stop()
        server = Otkv(args.otkv, args.engine, extra)
        for r in range(rounds):
            load(server, keys, 4096, b"%d" % r)
        settle(args)
        before = rss(server.pid)
        server.stop(signal.SIGKILL)
        server = Otkv(args.otkv, args.engine, extra)
        settle(args)
        after = rss(server.pid)
        server.stop(signal.SIGKILL)
    live = keys * (4096 + 16 + 30)
    print(f"{'OTKV':<8} {mib(empty)} {mib(before)} {mib(after)} {mib(live)} {mib(after - empty - live):>24}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--otkv", required=True, help="the otkv-server binary")
    ap.add_argument("--engine", default="memory")
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--settle", type=float, default=15.0, help="seconds to wait before reading RSS")
    ap.add_argument("--restart-keys", type=int, default=1000)
    ap.add_argument("--restart-writes", type=int, default=1_000_000)
    ap.add_argument("--only", default="delete-all,shrink,restart,half")
    ap.add_argument("--no-redis", action="store_true")
    args = ap.parse_args()

    def make():
        yield Otkv(args.otkv, args.engine)
        if not args.no_redis:
            yield Redis()

    only = args.only.split(",")
    print(f"# memory_churn.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, engine {args.engine}")
    if "delete-all" in only:
        seq_delete_all(args, make)
    if "shrink" in only:
        seq_shrink(args, make)
    if "restart" in only:
        seq_restart(args)
    if "half" in only:
        seq_half(args, make)


if __name__ == "__main__":
    sys.exit(main())
