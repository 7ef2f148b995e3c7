#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: installs what the tests need
# (headless Chromium for the dashboard test, ssh-keygen for signed-commit tests,
# git as a real peer, strace for the durability test, PostgreSQL and openssl
# for the PostgreSQL store's tests), then runs every crate's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need+=(chromium)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
command -v git >/dev/null 2>&1 || need+=(git)
# The durability test counts the daemon's fdatasync calls under strace.
command -v strace >/dev/null 2>&1 || need+=(strace)
# The PostgreSQL store's tests start throw-away clusters (youops_testkit::pg);
# Debian keeps the server binaries off PATH.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
# ... and a throw-away CA for the TLS tests.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

cargo test --workspace "$@"
# The optional sled backend: copying a store of earlier versions to the log store.
cargo test -p youops --features sled --test daemon "$@" -- store_copy
# A build without the built-in frontends: their sections are "not compiled in".
cargo test -p youops --no-default-features --test daemon "$@" -- features
