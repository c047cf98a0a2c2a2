#!/usr/bin/env bash
# A cluster across real network hops on one machine: three OTKV nodes, each in a network namespace this
# script creates, joined by veth pairs to a bridge in the root namespace; addresses from 198.18.0.0/15
# (RFC 2544's range for benchmark networks, so nothing real is ever addressed); `tc netem` delays what
# leaves each end of every veth by DELAY, so a request waits DELAY on its way in and its answer DELAY on
# its way out: 2×DELAY more per round trip than loopback.
# Runs `harness run --node ... --nodes 1..3` from the root namespace, then removes everything it made,
# also on failure or Ctrl-C.
#
# Usage (root): benches/netns/cluster.sh [harness run options...]
#   DELAY=0.1ms (0 for none), NODES=1..3   e.g.  benches/netns/cluster.sh --duration 10s --connections 64
# Needs ip and tc (iproute2). A kernel without netem (CONFIG_NET_SCH_NETEM) still gets the hops, and the
# script says the delay could not be added.
set -euo pipefail
cd "$(dirname "$0")/../.."
DELAY=${DELAY:-0.1ms}
BR=otkvbr0
NS=(otkv-n0 otkv-n1 otkv-n2)
ADDR=(198.18.0.10 198.18.0.11 198.18.0.12)
HOST_ADDR=198.18.0.1/24
[[ $EUID -eq 0 ]] || { echo "netns: needs root (it creates network namespaces and links)" >&2; exit 1; }
command -v ip >/dev/null && command -v tc >/dev/null || { echo "netns: needs ip and tc (apt-get install iproute2)" >&2; exit 1; }
for ns in "${NS[@]}"; do
  ! ip netns list | grep -qw "$ns" || { echo "netns: $ns already exists; remove it first (ip netns del $ns)" >&2; exit 1; }
done
! ip link show "$BR" >/dev/null 2>&1 || { echo "netns: link $BR already exists" >&2; exit 1; }

cargo build --release -q -p otkv-harness
HARNESS=$PWD/target/release/harness
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  for i in "${!NS[@]}"; do
    ip link del "otkvh$i" 2>/dev/null || true
    ip netns del "${NS[$i]}" 2>/dev/null || true
  done
  ip link del "$BR" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip link add "$BR" type bridge
ip addr add "$HOST_ADDR" dev "$BR"
ip link set "$BR" up
delayed=yes
for i in "${!NS[@]}"; do
  ns=${NS[$i]}
  ip netns add "$ns"
  ip link add "otkvh$i" type veth peer name "otkvn$i"
  ip link set "otkvn$i" netns "$ns"
  ip link set "otkvh$i" master "$BR" up
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$ns" ip addr add "${ADDR[$i]}/24" dev "otkvn$i"
  ip netns exec "$ns" ip link set "otkvn$i" up
  if [[ $DELAY != 0 ]]; then
    if ! tc qdisc add dev "otkvh$i" root netem delay "$DELAY" 2>/dev/null ||
       ! ip netns exec "$ns" tc qdisc add dev "otkvn$i" root netem delay "$DELAY" 2>/dev/null; then
      delayed=no
    fi
  fi
  ip netns exec "$ns" "$HARNESS" node --bind "${ADDR[$i]}" --port 7070 --workers 1 >"$TMP/node$i.out" 2>"$TMP/node$i.err" &
  PIDS+=($!)
done
if [[ $DELAY != 0 && $delayed == no ]]; then
  echo "netns: this kernel has no netem (CONFIG_NET_SCH_NETEM): no delay added; the hops are real veth + bridge"
elif [[ $DELAY != 0 ]]; then
  echo "netns: netem delay $DELAY on each end of every veth ($DELAY each way)"
fi
URLS=()
for i in "${!NS[@]}"; do
  # The node prints its address once it accepts connections; give it 30 s.
  for _ in $(seq 600); do grep -q listening "$TMP/node$i.out" 2>/dev/null && break; sleep 0.05; done
  grep -q listening "$TMP/node$i.out" || { echo "netns: node $i did not start:" >&2; cat "$TMP/node$i.err" >&2; exit 1; }
  URLS+=(--node "http://${ADDR[$i]}:7070")
done
"$HARNESS" run "${URLS[@]}" --nodes "${NODES:-1..3}" "$@"
