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

# What the unit does, without systemd as PID 1: StateDirectory= makes /var/lib/otkv for the service's
# user; ExecStart= runs the server; ExecStop is SIGTERM.
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
install -d -o nobody -g nogroup -m 0750 /var/lib/otkv
start() {
  coproc NODE { cd /var/lib/otkv && exec setpriv --reuid=nobody --regid=nogroup --clear-groups --no-new-privs $exec_start 2>/tmp/otkv-installed.log; }
  local line
  read -t 60 -r line <&"${NODE[0]}" || { cat /tmp/otkv-installed.log >&2; echo "check-installed: no listening line" >&2; exit 1; }
  url=${line#listening on }
  echo "check-installed: $line"
}
stop() {
  kill -TERM "$NODE_PID"
  wait "$NODE_PID"
}

start
curl -fsS -X PUT --data-binary 'hello from the package' "$url/v1/kv/greeting"
test "$(curl -fsS "$url/v1/kv/greeting")" = 'hello from the package'
stop
# durability = "periodic" in the shipped configuration: a clean stop keeps every write.
start
test "$(curl -fsS "$url/v1/kv/greeting")" = 'hello from the package'

# The proxy's unit in front of that node, from its installed configuration.
proxy_start=$(sed -n 's/^ExecStart=//p' "$proxy_unit")
install -d -o nobody -g nogroup -m 0750 /var/lib/otkv-proxy
# (A process substitution, not a second coproc: bash keeps one coproc at a time.)
exec {proxy_out}< <(cd /var/lib/otkv-proxy && exec setpriv --reuid=nobody --regid=nogroup --clear-groups --no-new-privs $proxy_start 2>/tmp/otkv-proxy-installed.log)
proxy_pid=$!
read -t 60 -r line <&"$proxy_out" || { cat /tmp/otkv-proxy-installed.log >&2; echo "check-installed: the proxy did not start" >&2; exit 1; }
proxy_url=${line#listening on }
echo "check-installed: proxy $line"
test "$(curl -fsS "$proxy_url/v1/kv/greeting")" = 'hello from the package'
curl -fsS -X PUT --data-binary 'through the proxy' "$proxy_url/v1/kv/second"
test "$(curl -fsS "$url/v1/kv/second")" = 'through the proxy'
kill -TERM "$proxy_pid"
wait "$proxy_pid"
stop

# Removing keeps the configuration (a conffile) and the data; purging drops the configuration.
dpkg -r otkv
test -f /etc/otkv/otkv-server.toml
dpkg -P otkv
test ! -e /etc/otkv/otkv-server.toml
rm -rf /var/lib/otkv /var/lib/otkv-proxy
echo "check-installed: the package installs, verifies, serves and restarts with its data"
