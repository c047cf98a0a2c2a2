#!/usr/bin/env bash
# What TLS and tokens cost the server, against Redis, with the same client (the harness) on this machine:
#   server CPU per GET, 64 keep-alive connections, 100k keys of 100 bytes (ycsb-c), for
#     otkv-server in clear, otkv-server over TLS, otkv-server in clear with a token on every request,
#     redis-server in clear, redis-server over TLS (tls-port, the same certificate);
#   new connections per second and server CPU per connection (handshake + one GET + close:
#   `harness run --reconnect`), over TLS, otkv against Redis.
# Server CPU comes from each server's own counters (OTKV's /metrics, Redis's INFO), as in every harness
# report. The configurations alternate round by round; the table gives medians and the ratios asked for.
#
# Certificates: a throwaway CA and an ECDSA P-256 server certificate made with openssl here (docs/operations.md shows
# the same commands). Needs openssl and redis-server (built with TLS, as Debian's is).
# Usage: benches/server/tls.sh [ROUNDS] [DURATION]   (defaults 3 and 5s)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
DUR=${2:-5s}
KEYS=${KEYS:-100000}

cargo build --release -q -p otkv-adapter-http --bin otkv-server
cargo build --release -q -p otkv-harness --bin harness
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

# The CA and the server certificate (for localhost and 127.0.0.1).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=otkv bench CA" -keyout "$TMP/ca.key" -out "$TMP/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
  -keyout "$TMP/node.key" -out "$TMP/node.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$TMP/san.cnf"
openssl x509 -req -in "$TMP/node.csr" -CA "$TMP/ca.pem" -CAkey "$TMP/ca.key" -CAcreateserial -days 2 \
  -extfile "$TMP/san.cnf" -out "$TMP/node.pem" 2>/dev/null
TOKEN=$(openssl rand -hex 24)
printf 'write %s\n' "$TOKEN" >"$TMP/tokens"

start_otkv() { # name args... (sets URL; not in a subshell, so PIDS keeps the pid for the cleanup)
  local name=$1
  shift
  ./target/release/otkv-server --port 0 "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
  PIDS+=($!)
  until grep -q listening "$TMP/$name.out" 2>/dev/null; do sleep 0.05; done
  URL=$(sed 's/listening on //; s/127.0.0.1/localhost/' "$TMP/$name.out")
}
start_otkv clear
CLEAR=$URL
start_otkv tls --tls-cert "$TMP/node.pem" --tls-key "$TMP/node.key"
TLS=$URL
start_otkv tokens --auth-token-file "$TMP/tokens"
TOKENS=$URL
redis-server --port 6401 --save '' --appendonly no >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
redis-server --port 0 --tls-port 6402 --tls-cert-file "$TMP/node.pem" --tls-key-file "$TMP/node.key" \
  --tls-ca-cert-file "$TMP/ca.pem" --tls-auth-clients no --save '' --appendonly no >"$TMP/redis-tls.log" 2>&1 &
PIDS+=($!)
until redis-cli -p 6401 ping >/dev/null 2>&1; do sleep 0.05; done
until grep -q "Ready to accept" "$TMP/redis-tls.log" 2>/dev/null; do sleep 0.05; done

# name | harness options. Each run preloads its keys (untimed), warms up 1 s, then measures DUR.
CONFIGS=(
  "otkv clear|--node $CLEAR"
  "otkv TLS|--node $TLS --tls-ca $TMP/ca.pem"
  "otkv clear + token|--node $TOKENS --token-file $TMP/tokens"
  "redis clear|--target redis --node redis://localhost:6401"
  "redis TLS|--target redis --node rediss://localhost:6402 --tls-ca $TMP/ca.pem"
)
HANDSHAKES=(
  "otkv TLS new conn|--node $TLS --tls-ca $TMP/ca.pem --reconnect --connections 8"
  "redis TLS new conn|--target redis --node rediss://localhost:6402 --tls-ca $TMP/ca.pem --reconnect --connections 8"
)

measure() { # options -> "ops/s cpu_us_per_op"
  # shellcheck disable=SC2086
  ./target/release/harness run $1 --workload ycsb-c --keys "$KEYS" --duration "$DUR" --out "$TMP/run" --json \
    2>"$TMP/harness.err" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["runs"][0]; print(round(r["throughput"]), r["server_cpu_us_per_op"], r["errors_total"])'
}

declare -A CPU OPS
for round in $(seq "$ROUNDS"); do
  for entry in "${CONFIGS[@]}" "${HANDSHAKES[@]}"; do
    name=${entry%%|*}
    opts=${entry#*|}
    [[ $name == *"new conn"* ]] || opts="$opts --connections 64"
    if ! read -r ops cpu errors < <(measure "$opts"); then
      echo "$name: the harness failed:"; cat "$TMP/harness.err"; exit 1
    fi
    if [ "$errors" != 0 ]; then echo "   !! $name: $errors errors"; fi
    echo "round $round  $(printf '%-22s' "$name") $(printf '%9s' "$ops") ops/s  $(printf '%7.2f' "$cpu") us server CPU/op"
    CPU[$name]+="$cpu "
    OPS[$name]+="$ops "
  done
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
echo
echo "== medians of $ROUNDS rounds, $DUR each, harness client (64 keep-alive connections; 8 reconnecting)"
echo "| server | ops/s | server CPU µs per op |"
echo "|---|---:|---:|"
for entry in "${CONFIGS[@]}" "${HANDSHAKES[@]}"; do
  name=${entry%%|*}
  printf '| %s | %.0f | %.2f |\n' "$name" "$(echo "${OPS[$name]}" | median)" "$(echo "${CPU[$name]}" | median)"
done
m() { echo "${CPU[$1]}" | median; }
o() { echo "${OPS[$1]}" | median; }
echo
awk -v a="$(m 'otkv TLS')" -v b="$(m 'redis TLS')" -v c="$(m 'otkv clear')" -v d="$(m 'otkv clear + token')" \
  -v e="$(m 'otkv TLS new conn')" -v f="$(m 'redis TLS new conn')" -v g="$(o 'otkv TLS new conn')" \
  -v h="$(o 'redis TLS new conn')" 'BEGIN {
  printf "CPU per GET over TLS: %.2f x redis-server over TLS, %.2f x OTKV in clear\n", a / b, a / c
  printf "CPU per GET with a token: %.3f x without\n", d / c
  printf "new TLS connections: %.2f x Redis'\''s rate; server CPU per connection %.2f x Redis'\''s\n", g / h, e / f
}'
