#!/usr/bin/env bash
# Benchmark of the daemon's HTTP API: requests/s and p50/p90/p99 acknowledgement
# latency of POST /api/v1/requests (a builtin no-op op; the 202 is sent once the
# request's `received` event is fdatasynced by the log store) at fixed offered
# loads, beside the disk's own fdatasync latency measured in the same run, right
# before and right after each load, in the store's directory tree (same disk);
# and the daemon's idle and loaded resident memory.
#
#   scripts/bench-http.sh
#
# The target: p99 at 500 and 1,000 req/s ≤ 2 × the same-run fdatasync p99 + 2 ms
# (the "bound" column; an acknowledgement may wait for the sync under way, then
# its own).
#
# Environment (all optional):
#   RATES="500 1000"            offered loads, requests/s
#   DURATION=10s                measured phase per load
#   WARMUP=2s                   warm-up per load (same rate, not measured)
#   CONCURRENCY=256             most requests in flight
#   IDLE_WAIT=2                 seconds after /healthz before idle RSS is read
#   PROBE_DURATION=3s           each fdatasync probe (before and after every load)
#   PROBE_GROUP=1               records per write + fdatasync in the probe
#   PROBE_RECORD_BYTES=420      bytes per probe record (an audit event line)
#   NO_BUILD=1                  skip `cargo build --release -p youops -p youops-perf`
#   KEEP=1                      keep the temp dir (config, store, daemon log)
#   RESULTS=FILE                also write the markdown table to FILE
#   BASELINE=1                  also run, before each load, the same rate with a wrong
#                               token (401 from the HTTP stack and the token check: no
#                               executor, no store): this machine's own noise
#   SAMPLES=PREFIX              also write every measured request of each load to
#                               PREFIX-<rate>.csv (scheduled ms, latency µs, status),
#                               and of its baseline to PREFIX-baseline-<rate>.csv
#   NICE=-10                    run the daemon and the load generator at this nice
#                               level (negative needs root)
#   TMPDIR=DIR                  where the temp dir (and so the store) goes: the disk
#                               measured
#
# Everything listens on and talks to 127.0.0.1 only; every step is bounded in time.
# Exit 1 if the daemon does not run the log store (youops-store), or fails to stop.
set -euo pipefail

RATES=${RATES:-"500 1000"}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONCURRENCY=${CONCURRENCY:-256}
IDLE_WAIT=${IDLE_WAIT:-2}
PROBE_DURATION=${PROBE_DURATION:-3s}
PROBE_GROUP=${PROBE_GROUP:-1}
PROBE_RECORD_BYTES=${PROBE_RECORD_BYTES:-420}
prio=()
[[ -n "${NICE:-}" ]] && prio=(nice -n "$NICE")

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [[ "${NO_BUILD:-0}" != 1 ]]; then
    timeout 1800 cargo build --release -p youops -p youops-perf >&2
fi
target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null ||
    echo "$root/target")
youops="$target_dir/release/youops"
load="$target_dir/release/youops-load"
[[ -x "$youops" && -x "$load" ]] || { echo "bench-http: missing $youops or $load" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/youops-bench.XXXXXX")
pid=""
cleanup() {
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    if [[ "${KEEP:-0}" == 1 ]]; then echo "bench-http: kept $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

# A free port on 127.0.0.1 (the kernel picks; tiny race before the daemon binds).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
url="http://127.0.0.1:$port"
token="bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
digest=$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)

cat >"$tmp/youops.toml" <<EOF
# Written by scripts/bench-http.sh.
[server]
listen = "127.0.0.1:$port"

[executor]
# The per-principal rate limit (600/min by default) would cap the one benchmark
# principal: off.
rate_limit_per_minute = 0

[store]
path = "store"

[[ops]]
name = "bench.noop"
description = "Benchmark: builtin no-op runner"
runner = { type = "builtin", name = "noop" }
timeout = "10s"

[principals.bench]
roles = ["bench"]
tokens = ["sha256:$digest"]

[[grants]]
roles = ["bench"]
ops = ["bench.noop"]
frontends = ["api"]
EOF

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

RUST_LOG=warn "${prio[@]}" "$youops" serve --config "$tmp/youops.toml" >"$tmp/daemon.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
    if curl -fsS -m 1 "$url/healthz" >/dev/null 2>&1; then break; fi
    kill -0 "$pid" 2>/dev/null || { echo "bench-http: the daemon exited" >&2; cat "$tmp/daemon.log" >&2; exit 1; }
    sleep 0.1
done
curl -fsS -m 1 "$url/healthz" >/dev/null || { echo "bench-http: no /healthz after 10 s" >&2; exit 1; }
sleep "$IDLE_WAIT"
idle=$(rss_kib "$pid")

# The daemon must run the log store: `log/` and `index.redb` in the store dir.
if [[ -d "$tmp/store/log" && -f "$tmp/store/index.redb" ]]; then
    engine="log store (youops-store: log/ + index.redb)"
else
    echo "bench-http: $youops did not create a log store in $tmp/store (found: $(ls "$tmp/store" 2>/dev/null | tr '\n' ' ')); rebuild it" >&2
    exit 1
fi
# Live store bytes: the log segments and the index (archives excluded).
live_bytes() {
    local n=0 f
    for f in "$1"/log/*.jsonl "$1"/index.redb; do
        [[ -f "$f" ]] && n=$((n + $(stat -c %s "$f")))
    done
    echo "$n"
}

# Machine facts.
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
echo "machine: $(nproc) CPUs ($cpu), $(awk '/^MemTotal/ { printf "%.0f GiB", $2/1048576 }' /proc/meminfo) RAM, $(uname -sr)" >&2
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "load average before: $load_before" >&2
echo "store: $engine, $(df -T "$tmp" | awk 'NR==2 { print $1 " (" $2 ")" }') at $tmp${NICE:+; nice $NICE}" >&2
echo "idle RSS: $(mib "$idle") MiB" >&2

table="| offered req/s | achieved req/s | 202 | other / errors | p50 ms | p99 ms | max ms | fdatasync p50 / p99 ms (same run) | bound: 2 × p99 + 2 ms | p99 ≤ bound | daemon CPU µs/req | RSS max MiB |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|---:|---:|"
base_table="| offered req/s | 401 | other / errors | p50 ms | p90 ms | p99 ms | max ms | daemon CPU µs/req |
|---:|---:|---:|---:|---:|---:|---:|---:|"
for rate in $RATES; do
    if [[ "${BASELINE:-0}" == 1 ]]; then
        echo "--- baseline: $rate req/s with a wrong token for $DURATION (+$WARMUP warm-up)" >&2
        out=$(timeout 300 "${prio[@]}" "$load" --url "$url" --token "not-a-token" --op bench.noop --rate "$rate" \
            --duration "$DURATION" --warmup "$WARMUP" --concurrency "$CONCURRENCY" --pid "$pid" --json \
            ${SAMPLES:+--samples "$SAMPLES-baseline-$rate.csv"}) || true
        [[ -n "$out" ]] || { echo "bench-http: the load generator failed at $rate req/s" >&2; exit 1; }
        row=$(python3 -c '
import json, sys
r = json.loads(sys.argv[1])
l = r["latency_ms"]
st = r["statuses"]
f = lambda v: "-" if v is None else "%.2f" % v
cpu = r.get("daemon_cpu") or {"us_per_request": 0}
print("| %d | %d | %d | %s | %s | %s | %s | %.0f |" % (r["offered_rps"], st.get("401", 0),
      sum(v for k, v in st.items() if k != "401") + r["errors"],
      f(l["p50"]), f(l["p90"]), f(l["p99"]), f(l["max"]), cpu["us_per_request"]))
' "$out")
        base_table="$base_table
$row"
    fi
    echo "--- $rate req/s for $DURATION (+$WARMUP warm-up)" >&2
    out=$(timeout 300 "${prio[@]}" "$load" --url "$url" --token "$token" --op bench.noop --rate "$rate" \
        --duration "$DURATION" --warmup "$WARMUP" --concurrency "$CONCURRENCY" --pid "$pid" --json \
        --fsync-probe "$tmp/fsync-probe" --probe-duration "$PROBE_DURATION" --probe-group "$PROBE_GROUP" \
        --probe-record-bytes "$PROBE_RECORD_BYTES" ${SAMPLES:+--samples "$SAMPLES-$rate.csv"}) || true
    [[ -n "$out" ]] || { echo "bench-http: the load generator failed at $rate req/s" >&2; exit 1; }
    echo "$out" >&2
    row=$(python3 -c '
import json, sys
r = json.loads(sys.argv[1])
l = r["latency_ms"]
st = r["statuses"]
acc = st.get("202", 0)
other = sum(v for k, v in st.items() if k != "202") + r["errors"]
f = lambda v: "-" if v is None else "%.2f" % v
rss = r["rss_kib"]["max"] / 1024 if r.get("rss_kib") else 0
cpu = r.get("daemon_cpu") or {"core_pct": 0, "us_per_request": 0}
fs = r["fsync_probe"]["pooled_ms"]
bound = 2 * fs["p99"] + 2
ok = "yes" if l["p99"] is not None and l["p99"] <= bound else "**no**"
print("| %d | %.0f | %d | %d | %s | %s | %s | %s / %s | %.2f | %s | %.0f | %.1f |" % (r["offered_rps"], r["achieved_rps"], acc, other,
      f(l["p50"]), f(l["p99"]), f(l["max"]), f(fs["p50"]), f(fs["p99"]), bound, ok, cpu["us_per_request"], rss))
' "$out")
    table="$table
$row"
done
loaded=$(rss_kib "$pid")
# Where the time goes: the daemon's own histogram of audit appends (durable ones
# include the group fsync), cumulative over all runs.
echo "daemon audit append latency (cumulative buckets, seconds):" >&2
curl -fsS -m 5 "$url/metrics" 2>/dev/null | grep -E '^youops_audit_append_seconds_(bucket|count|sum)' |
    sed -E 's/^youops_audit_append_seconds_//' | tr '\n' ' ' >&2 || true
echo >&2
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
echo "load average after: $load_after" >&2

kill -TERM "$pid"
rc=0
for _ in $(seq 1 600); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$pid" 2>/dev/null; then
    echo "bench-http: the daemon did not stop within 60 s of SIGTERM" >&2
    rc=1
else
    wait "$pid" || rc=$?
    pid=""
    [[ $rc == 0 ]] || echo "bench-http: the daemon exited with $rc after SIGTERM" >&2
fi
store_kib=$(( $(live_bytes "$tmp/store") / 1024 ))

echo
echo "$table"
echo
echo "fdatasync: the disk's own, ${PROBE_GROUP} × ${PROBE_RECORD_BYTES} bytes per write + fdatasync in $tmp/fsync-probe, ${PROBE_DURATION} right before and ${PROBE_DURATION} right after each load, pooled."
if [[ "${BASELINE:-0}" == 1 ]]; then
    echo
    echo "Same-run baseline (a wrong token: HTTP stack and token check only):"
    echo
    echo "$base_table"
fi
echo
echo "Load average before: $load_before; after: $load_after. Store: $engine."
echo "Idle RSS: $(mib "$idle") MiB; RSS after the runs: $(mib "$loaded") MiB; live store (log + index) after the runs: $(mib "$store_kib") MiB; daemon exit after SIGTERM: $rc."
if [[ -n "${RESULTS:-}" ]]; then
    { echo "$table"; echo; echo "Idle RSS: $(mib "$idle") MiB; RSS after the runs: $(mib "$loaded") MiB."; } >"$RESULTS"
fi
[[ -s "$tmp/daemon.log" ]] && { echo "daemon log (warnings and errors):" >&2; tail -20 "$tmp/daemon.log" >&2; }
exit "$rc"
