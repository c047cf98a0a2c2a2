#!/usr/bin/env bash
# The memory engine's table under valgrind's memcheck: engine/examples/table_stress.rs (two writers
# replacing, deleting and re-creating keys under a memory cap with allkeys-lru, two readers checking every
# value, snapshots walking the table), built with `--cfg otkv_memcheck` so that every block is its own
# allocation and valgrind sees when each is freed. Passes only with zero errors. Too slow for CI (minutes).
# Usage: benches/memcheck.sh [OPS_PER_WRITER]   (default 20000; needs valgrind)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)"; exit 1; }
RUSTFLAGS="--cfg otkv_memcheck" CARGO_TARGET_DIR=target/memcheck \
  cargo build --release -q -p otkv-engine --example table_stress
valgrind --tool=memcheck --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
  --fair-sched=yes target/memcheck/release/examples/table_stress "${1:-20000}"
