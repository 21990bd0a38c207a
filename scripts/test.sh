#!/usr/bin/env bash
# Runs every test: lints, then the whole workspace's tests against a real PostgreSQL and
# Redis that this script starts (and stops) on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/services.sh
source scripts/lib/services.sh

step() { printf '\n==> %s\n' "$*"; }

step "format and lints"
command -v shellcheck >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null; }
shellcheck -x scripts/*.sh scripts/lib/*.sh .ci/run deploy/images/*.sh deploy/images/*/*.sh deploy/compose/*.sh tests/stack/*.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "test services"
services_dir="${TMPDIR:-/tmp}/flowforge-test-$$"
trap 'stop_services; rm -rf "$services_dir"' EXIT
start_services "$services_dir"

step "workspace tests"
log="$services_dir/cargo-test.log"
status=0
cargo test --workspace --locked --no-fail-fast -- --test-threads 4 2>&1 | tee "$log" || status=$?

# One closing line with the totals of every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
