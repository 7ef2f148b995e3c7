#!/usr/bin/env bash
# Soak benchmark: mixed traffic through every front door of a real `youops serve`
# at a fixed rate for minutes. Reports throughput and p50/p99 acknowledgement
# latency per front door, end-to-end completion, feedback calls, the daemon's
# resident memory over time (with a bound on its growth), its CPU, and the
# live store's size (the log store's segments `log/*.jsonl` + `index.redb`,
# archives excluded; with RETAIN, with a bound on its growth over the second
# half of the load); then verifies the audit chain offline.
#
#   scripts/soak.sh
#
# The driver is `youops-soak` (tools/perf/src/soak/): API
# submits, signed Slack slash commands and signed GitHub issue_comment webhooks
# in turn on one open-loop schedule, plus a git commit (one desired-state change
# and one `Youops-Run:` trailer) and a `POST /git/webhook` every GIT_EVERY. It
# runs the fake Slack Web API and GitHub REST API the config points at.
#
# Environment (all optional):
#   DURATION=5m           load phase (e.g. 60s, 5m)
#   RATE=100              total req/s over api + slack + github (a third each)
#   GIT_EVERY=5s          one git commit + webhook every this long (0: no git traffic)
#   DOORS=api,slack,github  the HTTP doors that share RATE (a subset isolates one)
#   DRAIN=90s             longest wait after the load for requests and feedback to finish
#   RSS_GROWTH_MIB=8      bound on RSS growth over the second half of the load
#   RETAIN=0              `[store] retain_events` (0: keep everything in the store);
#                         archives go to the temp dir's `archive/`, and the driver
#                         counts archived requests as stored
#   SEGMENT_SIZE=         `[store] segment_size`; empty: the daemon's default (64MiB),
#                         or 1MiB with RETAIN (retention moves whole segments: a
#                         64 MiB segment is more than 30,000 events)
#   DEDUP_TTL=7d          `[store] dedup_ttl`, the claims TTL (the daemon's default)
#   STORE_GROWTH_PCT=5    with RETAIN: bound on the live store's growth over the
#                         second half of the load (mean of the last 2 minutes against
#                         the 2 minutes around the middle)
#   USERS=16              principals the traffic rotates over (each stays under the
#                         default per-principal rate limit of 600/min)
#   CHANNELS=256          Slack channels the slash commands rotate over (the Slack
#                         frontend posts ~4 messages per command at most 1/s per
#                         channel, as Slack allows: ~0.25 commands/s per channel)
#   NO_BUILD=1            skip `cargo build --release -p youops -p youops-perf`
#   KEEP=1                keep the temp dir (config, store, repo, daemon log)
#   RESULTS=FILE          also write the driver's JSON report to FILE
#   TMPDIR=DIR            where the temp dir (and so the store) goes
#
# Everything listens on and talks to 127.0.0.1 only; every step is bounded in
# time. Exit 0 only if every check of the driver held, the daemon exited 0
# after SIGTERM and `youops audit verify` passed.
set -euo pipefail

DURATION=${DURATION:-5m}
RATE=${RATE:-100}
GIT_EVERY=${GIT_EVERY:-5s}
DRAIN=${DRAIN:-90s}
RSS_GROWTH_MIB=${RSS_GROWTH_MIB:-8}
USERS=${USERS:-16}
CHANNELS=${CHANNELS:-256}
DOORS=${DOORS:-api,slack,github}
RETAIN=${RETAIN:-0}
DEDUP_TTL=${DEDUP_TTL:-7d}
STORE_GROWTH_PCT=${STORE_GROWTH_PCT:-5}
SEGMENT_SIZE=${SEGMENT_SIZE:-}
[[ -z "$SEGMENT_SIZE" && "$RETAIN" != 0 ]] && SEGMENT_SIZE=1MiB

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [[ "${NO_BUILD:-0}" != 1 ]]; then
    timeout 1800 cargo build --release -p youops -p youops-perf >&2
fi
target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null ||
    echo "$root/target")
youops="$target_dir/release/youops"
soak="$target_dir/release/youops-soak"
[[ -x "$youops" && -x "$soak" ]] || { echo "soak: missing $youops or $soak" >&2; exit 1; }

secs() { # 5m / 60s / 500ms / 30 -> whole seconds (rounded up)
    python3 -c '
import re, sys, math
m = re.fullmatch(r"([0-9.]+)(ms|s|m)?", sys.argv[1].strip())
n = float(m.group(1)); u = m.group(2) or "s"
print(math.ceil(n / 1000 if u == "ms" else n * 60 if u == "m" else n))' "$1"
}
load_s=$(secs "$DURATION")
drain_s=$(secs "$DRAIN")

tmp=$(mktemp -d "${TMPDIR:-/tmp}/youops-soak.XXXXXX")
pid=""
cleanup() {
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    if [[ "${KEEP:-0}" == 1 ]]; then echo "soak: kept $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

# Free ports on 127.0.0.1 for the daemon and the two fakes (the kernel picks;
# tiny race before they bind).
read -r port slack_port gh_port < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])
for s in ss: s.close()')
url="http://127.0.0.1:$port"
rnd() { head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
export YOUOPS_SOAK_TOKEN="soak-$(rnd)"
export YOUOPS_SOAK_SLACK_SECRET="$(rnd)"
export YOUOPS_SOAK_GITHUB_SECRET="$(rnd)"
export YOUOPS_SOAK_GIT_TOKEN="$(rnd)"
digest() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

# The repository the git frontend watches: 20 declared services at v0.
repo="$tmp/repo"
mkdir -p "$repo/state"
{
    echo "# Written by youops-soak."
    for i in $(seq 0 19); do
        printf '\n[[resource]]\nkind = "svc"\nname = "svc%02d"\nversion = "v0"\n' "$i"
    done
} >"$repo/state/services.toml"
(
    cd "$repo"
    export GIT_AUTHOR_NAME="Soak Bot" GIT_AUTHOR_EMAIL=soak-git@example.invalid
    export GIT_COMMITTER_NAME="Soak Bot" GIT_COMMITTER_EMAIL=soak-git@example.invalid
    timeout 30 git init -q -b main
    timeout 30 git add state
    timeout 30 git -c commit.gpgsign=false commit -q -m "soak: initial desired state"
)

{
    cat <<EOF
# Written by scripts/soak.sh.
[server]
listen = "127.0.0.1:$port"
public_url = "$url"
shutdown_grace = "10s"

[store]
path = "store"
retain_events = $RETAIN
archive_dir = "archive"
dedup_ttl = "$DEDUP_TTL"
${SEGMENT_SIZE:+segment_size = \"$SEGMENT_SIZE\"}

# [executor] keeps its defaults, including the per-principal rate limit
# (600/min): the traffic rotates over $USERS principals to stay under it.

[[ops]]
name = "soak.noop"
description = "Soak: builtin no-op"
runner = { type = "builtin", name = "noop" }
timeout = "10s"

[[ops]]
name = "soak.echo"
description = "Soak: builtin echo"
runner = { type = "builtin", name = "echo" }
timeout = "10s"
[[ops.params]]
name = "msg"
type = "string"
pattern = "[A-Za-z0-9._-]{1,40}"

[[ops]]
name = "soak.sleep"
description = "Soak: builtin sleep"
runner = { type = "builtin", name = "sleep" }
timeout = "10s"
[[ops.params]]
name = "seconds"
type = "int"
default = 1
min = 0
max = 5

[[ops]]
name = "soak.svc.apply"
description = "Soak: apply a declared service (builtin echo)"
runner = { type = "builtin", name = "echo" }
timeout = "10s"
[[ops.params]]
name = "name"
type = "string"
[[ops.params]]
name = "version"
type = "string"

[[kinds]]
name = "svc"
description = "Soak: services declared in git"
key = "name"
apply = "soak.svc.apply"

[[grants]]
roles = ["soak"]
ops = ["soak.*"]

[principals.soakgit]
roles = ["soak"]
identities = { git = ["soak-git@example.invalid"] }
EOF
    for i in $(seq 0 $((USERS - 1))); do
        cat <<EOF

[principals.soak$i]
roles = ["soak"]
tokens = ["sha256:$(digest "$YOUOPS_SOAK_TOKEN-$i")"]
identities = { slack = ["USOAK$i"], github = ["soak-user-$i"] }
EOF
    done
    cat <<EOF

[frontends.slack]
signing_secret = "\${YOUOPS_SOAK_SLACK_SECRET}"
bot_token = "xoxb-soak-bot-token"
api_base_url = "http://127.0.0.1:$slack_port/api/"

[frontends.github]
webhook_secret = "\${YOUOPS_SOAK_GITHUB_SECRET}"
token = "ghp_soak_token"
repos = ["acme/soak"]
poll_interval = "0s"
api_base_url = "http://127.0.0.1:$gh_port"

[frontends.git]
repo = "$repo"
branch = "main"
path = "state"
interval = "30s"
webhook_token = "\${YOUOPS_SOAK_GIT_TOKEN}"
EOF
} >"$tmp/youops.toml"

timeout 60 "$youops" config check "$tmp/youops.toml" >&2 ||
    { echo "soak: the generated config does not check" >&2; exit 1; }

RUST_LOG=warn "$youops" serve --config "$tmp/youops.toml" >"$tmp/daemon.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
    if curl -fsS -m 1 "$url/readyz" >/dev/null 2>&1; then break; fi
    kill -0 "$pid" 2>/dev/null || { echo "soak: the daemon exited" >&2; cat "$tmp/daemon.log" >&2; exit 1; }
    sleep 0.1
done
curl -fsS -m 1 "$url/readyz" >/dev/null || { echo "soak: not ready after 10 s" >&2; cat "$tmp/daemon.log" >&2; exit 1; }
sleep 2
idle_kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
echo "machine: $(nproc) CPUs ($cpu), $(awk '/^MemTotal/ { printf "%.0f GiB", $2/1048576 }' /proc/meminfo) RAM, $(uname -sr)"
[[ -d "$tmp/store/log" && -f "$tmp/store/index.redb" ]] ||
    { echo "soak: $youops did not create a log store (log/ + index.redb) in $tmp/store; rebuild it" >&2; exit 1; }
echo "store: log store (youops-store), $(df -T "$tmp" | awk 'NR==2 { print $1 " (" $2 ")" }') at $tmp; dedup_ttl $DEDUP_TTL, segment_size ${SEGMENT_SIZE:-64MiB (default)}"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "daemon idle RSS: $(awk -v k="$idle_kib" 'BEGIN { printf "%.1f", k / 1024 }') MiB"
echo "command: RATE=$RATE DURATION=$DURATION GIT_EVERY=$GIT_EVERY DRAIN=$DRAIN RSS_GROWTH_MIB=$RSS_GROWTH_MIB USERS=$USERS CHANNELS=$CHANNELS DOORS=$DOORS RETAIN=$RETAIN SEGMENT_SIZE=$SEGMENT_SIZE DEDUP_TTL=$DEDUP_TTL STORE_GROWTH_PCT=$STORE_GROWTH_PCT scripts/soak.sh"
echo

rc=0
archive_args=()
[[ "$RETAIN" == 0 ]] || archive_args=(--archive "$tmp/archive" --store-growth-pct "$STORE_GROWTH_PCT")
timeout $((load_s + drain_s + 180)) "$soak" --url "$url" --pid "$pid" --store "$tmp/store" "${archive_args[@]}" \
    --slack-listen "127.0.0.1:$slack_port" --github-listen "127.0.0.1:$gh_port" \
    --git-repo "$repo" --rate "$RATE" --duration "$DURATION" --git-every "$GIT_EVERY" \
    --drain "$DRAIN" --users "$USERS" --channels "$CHANNELS" --doors "$DOORS" --rss-growth-mib "$RSS_GROWTH_MIB" \
    --json "$tmp/report.json" || rc=$?
[[ $rc == 0 ]] || echo "soak: the driver reported a failed check (exit $rc)"
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
notes=$(timeout 30 git -C "$repo" notes --ref youops list 2>/dev/null | wc -l || echo 0)
commits=$(timeout 30 git -C "$repo" rev-list --count main 2>/dev/null || echo 0)
echo "git: $commits commits on main, $notes with a youops note"

# Running (a dead child not yet reaped is a zombie: `kill -0` still finds it).
alive() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1; [[ $st != Z* ]]; }
if ! alive "$pid"; then
    stop_rc=0
    wait "$pid" || stop_rc=$?
    pid=""
    if ((stop_rc > 128)); then
        echo "soak: the daemon died during the run, by SIG$(kill -l $((stop_rc - 128))) (exit $stop_rc)"
    else
        echo "soak: the daemon exited during the run (exit $stop_rc)"
    fi
    if ((stop_rc == 0)); then stop_rc=1; fi # an exit during the run is a failure
else
    kill -TERM "$pid"
    stop_rc=0
    for _ in $(seq 1 600); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        echo "soak: the daemon did not stop within 60 s of SIGTERM"
        stop_rc=1
    else
        wait "$pid" || stop_rc=$?
        pid=""
        echo "daemon exit after SIGTERM: $stop_rc"
    fi
fi

verify_rc=0
timeout 900 "$youops" audit verify --config "$tmp/youops.toml" || verify_rc=$?
echo "audit verify exit: $verify_rc"
live=0
for f in "$tmp"/store/log/*.jsonl "$tmp"/store/index.redb; do
    [[ -f "$f" ]] && live=$((live + $(stat -c %s "$f")))
done
echo "live store (log segments + index) after stop: $(awk -v b="$live" 'BEGIN { printf "%.1f MiB", b / 1048576 }'); store dir on disk (du): $(du -sk "$tmp/store" | awk '{ printf "%.1f MiB", $1 / 1024 }')"
if [[ -d "$tmp/archive" ]]; then
    echo "archive on disk after stop: $(du -sk "$tmp/archive" | awk '{ printf "%.1f MiB", $1 / 1024 }') in $(find "$tmp/archive" -name 'audit-*.jsonl' | wc -l) files"
fi

if [[ -n "${RESULTS:-}" && -s "$tmp/report.json" ]]; then cp "$tmp/report.json" "$RESULTS"; fi
if grep -qE '(ERROR|WARN)' "$tmp/daemon.log"; then
    echo "daemon log: $(grep -cE 'WARN' "$tmp/daemon.log") warnings, $(grep -cE 'ERROR' "$tmp/daemon.log") errors; the last ones:"
    grep -E '(ERROR|WARN)' "$tmp/daemon.log" | tail -10
fi
[[ $rc == 0 && $stop_rc == 0 && $verify_rc == 0 ]]
