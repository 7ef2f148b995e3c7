#!/usr/bin/env bash
# Run every coverage-guided fuzz target for a given time (default 60 s each).
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# Needs cargo-fuzz (`cargo install cargo-fuzz`). On a stable toolchain the
# sanitizer flags cargo-fuzz passes need RUSTC_BOOTSTRAP=1, which this sets.
# A crash is saved under fuzz/artifacts/<target>/; turn it into a regression
# test next to the parser's proptests before fixing it.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"; shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list 2>/dev/null || ls fuzz_targets | sed 's/\.rs$//')
fi
export RUSTC_BOOTSTRAP="${RUSTC_BOOTSTRAP:-1}"
for t in "${targets[@]}"; do
  echo "== fuzzing $t for ${secs}s"
  mkdir -p "corpus/$t"
  cargo fuzz run --sanitizer none "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536
done
