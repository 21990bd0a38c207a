#!/usr/bin/env bash
# Runs every test: lints, then the whole workspace's tests against a real PostgreSQL and
# Redis that this script starts (and stops) on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/services.sh
source scripts/lib/services.sh

step() { printf '\n==> %s\n' "$*"; }

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "test services"
trap stop_services EXIT
start_services "${TMPDIR:-/tmp}/flowforge-test-$$"

step "workspace tests"
cargo test --workspace --locked --no-fail-fast -- --test-threads 4
