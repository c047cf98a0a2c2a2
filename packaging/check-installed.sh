#!/usr/bin/env bash
# The Debian package as a user gets it: installs with dpkg, its unit passes `systemd-analyze verify`,
# and the installed configuration serves requests when started as the unit starts it (its ExecStart,
# as an unprivileged user, in its state directory). A restart keeps the data. Used by .ci/run, as root.
#
# Usage: packaging/check-installed.sh target/debian/otkv_*.deb
set -euo pipefail
deb=$1
unit=/usr/lib/systemd/system/otkv-server.service

dpkg -i "$deb"
systemd-analyze verify "$unit"
otkv-server --config /etc/otkv/otkv-server.toml --print-config | grep -q '^data-dir = "/var/lib/otkv"'

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
stop

# Removing keeps the configuration (a conffile) and the data; purging drops the configuration.
dpkg -r otkv
test -f /etc/otkv/otkv-server.toml
dpkg -P otkv
test ! -e /etc/otkv/otkv-server.toml
rm -rf /var/lib/otkv
echo "check-installed: the package installs, verifies, serves and restarts with its data"
