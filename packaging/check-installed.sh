#!/usr/bin/env bash
# The Debian package as a user gets it: installs with dpkg, its units pass `systemd-analyze verify`,
# and the installed configurations serve requests when started as the units start them (their
# ExecStart, as an unprivileged user, in their state directories): a node, which keeps its data across
# a restart, and the proxy in front of it. Used by .ci/run, as root.
#
# Usage: packaging/check-installed.sh target/debian/otkv_*.deb
set -euo pipefail
deb=$1
unit=/usr/lib/systemd/system/otkv-server.service
proxy_unit=/usr/lib/systemd/system/otkv-proxy.service

dpkg -i "$deb"
systemd-analyze verify "$unit" "$proxy_unit"
otkv-server --config /etc/otkv/otkv-server.toml --print-config | grep -q '^data-dir = "/var/lib/otkv"'
harness proxy --config /etc/otkv/otkv-proxy.toml --print-config | grep -q '^node = "http://127.0.0.1:7070"'

# What a unit does, without systemd as PID 1: StateDirectory= makes its directory for the service's
# user; ExecStart= runs the server there; ExecStop is SIGTERM.
# launch UNIT STATE_DIR: sets $pid and $url (from the `listening on` line). A process substitution, not
# a coproc, so that the node and the proxy can run at once.
launch() {
  local exec_start line out
  exec_start=$(sed -n 's/^ExecStart=//p' "$1")
  install -d -o nobody -g nogroup -m 0750 "$2"
  exec {out}< <(cd "$2" && exec setpriv --reuid=nobody --regid=nogroup --clear-groups --no-new-privs $exec_start 2>"$2.log")
  pid=$!
  read -t 60 -r line <&"$out" || { cat "$2.log" >&2; echo "check-installed: $1 did not start" >&2; exit 1; }
  url=${line#listening on }
  echo "check-installed: $1: $line"
}
stop() {
  kill -TERM "$1"
  wait "$1"
}

launch "$unit" /var/lib/otkv
curl -fsS -X PUT --data-binary 'hello from the package' "$url/v1/kv/greeting"
test "$(curl -fsS "$url/v1/kv/greeting")" = 'hello from the package'
stop "$pid"
# durability = "periodic" in the shipped configuration: a clean stop keeps every write.
launch "$unit" /var/lib/otkv
node_pid=$pid node_url=$url
test "$(curl -fsS "$node_url/v1/kv/greeting")" = 'hello from the package'

# The proxy's unit in front of that node, from its installed configuration.
launch "$proxy_unit" /var/lib/otkv-proxy
test "$(curl -fsS "$url/v1/kv/greeting")" = 'hello from the package'
curl -fsS -X PUT --data-binary 'through the proxy' "$url/v1/kv/second"
test "$(curl -fsS "$node_url/v1/kv/second")" = 'through the proxy'
stop "$pid"
stop "$node_pid"

# Removing keeps the configuration (a conffile) and the data; purging drops the configuration.
dpkg -r otkv
test -f /etc/otkv/otkv-server.toml
dpkg -P otkv
test ! -e /etc/otkv/otkv-server.toml
rm -rf /var/lib/otkv /var/lib/otkv-proxy /var/lib/otkv.log /var/lib/otkv-proxy.log
echo "check-installed: the package installs, verifies, serves and restarts with its data"
