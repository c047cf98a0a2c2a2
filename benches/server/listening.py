"""Starting a server the benchmark scripts measure: `otkv-server`, `harness node` or `harness proxy`,
each of which prints `listening on URL` once it accepts connections."""

import subprocess


def start(argv):
    """Starts `argv` and waits for its `listening on` line: returns the process and its URL."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in p.stdout:
        if "listening on" in line:
            return p, line.split("listening on ")[1].strip()
    raise SystemExit(f"{argv[0]} did not start")
