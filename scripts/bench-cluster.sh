#!/usr/bin/env bash
# Benchmark of cluster mode: 1, 2 and 3 `youops serve` daemons on one throw-away
# PostgreSQL on this machine (initdb into a temp dir, Unix socket only, fsync on;
# PostgreSQL must be installed: scripts/test.sh installs it), in one run of
# `youops-cluster-bench` (tools/perf): for each configuration, the p50/p99/max
# acknowledgement latency of POST /api/v1/requests (a builtin no-op op; the 202 is
# sent once the request's `received` event is committed) under an open loop at RATE
# req/s in total, then durable requests/s under a closed loop of CLIENTS clients,
# both spread round robin over the nodes; beside, measured in the same run, one
# daemon on the embedded log store under the same loads, and raw PostgreSQL
# `BEGIN; INSERT; COMMIT` of one row over the same socket (CLIENTS connections,
# then one). Every phase starts after VACUUM (ANALYZE) of each database and a
# CHECKPOINT, so that it does not pay for what the phase before it wrote.
#
#   scripts/bench-cluster.sh
#
# The targets: durable req/s ≤ the raw insert-and-commit baseline (the ceiling);
# p99 at RATE ≤ 2 × the same-run single-connection commit p99 + 2 ms (an
# acknowledgement may wait for the commit under way, then its own). On a machine
# of few cores, the nodes, PostgreSQL and the load generator share them: this
# measures contention, not scale-out.
#
# Environment (all optional):
#   NODES="1 2 3"               cluster sizes
#   CLIENTS=64                  closed-loop clients, and raw baseline connections
#   RATE=500                    open-loop offered load, requests/s in total
#   DURATION=10s                measured phase per load
#   WARMUP=2s                   warm-up per load (not measured)
#   CONCURRENCY=256             most open-loop requests in flight
#   THREADS=2                   load generator worker threads
#   NO_BUILD=1                  skip `cargo build --release -p youops -p youops-perf`
#   KEEP=1                      keep the temp dir (configs, daemon logs, embedded store)
#   RESULTS=FILE                also write the table to FILE
#   TMPDIR=DIR                  where the embedded store goes (PostgreSQL is in /tmp)
#
# Everything listens on 127.0.0.1 or a Unix socket only; every step is bounded in
# time. Exit 1 if a run fails.
set -euo pipefail

NODES=${NODES:-"1 2 3"}
CLIENTS=${CLIENTS:-64}
RATE=${RATE:-500}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONCURRENCY=${CONCURRENCY:-256}
THREADS=${THREADS:-2}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [[ "${NO_BUILD:-0}" != 1 ]]; then
    timeout 1800 cargo build --release -p youops -p youops-perf >&2
fi
target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null ||
    echo "$root/target")
youops="$target_dir/release/youops"
bench="$target_dir/release/youops-cluster-bench"
[[ -x "$youops" && -x "$bench" ]] || { echo "bench-cluster: missing $youops or $bench" >&2; exit 1; }

keep=()
[[ "${KEEP:-0}" == 1 ]] && keep=(--keep)
out=$(mktemp "${TMPDIR:-/tmp}/youops-bench-cluster.XXXXXX")
trap 'rm -f "$out"' EXIT

echo "machine: $(nproc) CPUs, $(awk '/^MemTotal/ { printf "%.0f GiB", $2/1048576 }' /proc/meminfo) RAM, $(uname -sr), disk $(df -T "${TMPDIR:-/tmp}" | awk 'NR==2 { print $1 " (" $2 ")" }')" >&2
timeout 1800 "$bench" --youops "$youops" --nodes "$(echo "$NODES" | tr ' ' ',')" --clients "$CLIENTS" \
    --rate "$RATE" --duration "$DURATION" --warmup "$WARMUP" --concurrency "$CONCURRENCY" \
    --threads "$THREADS" "${keep[@]}" | tee "$out"
if [[ -n "${RESULTS:-}" ]]; then cp "$out" "$RESULTS"; fi
