#!/usr/bin/env bash
# The browser tests: the web UI, driven by Chromium, against a running stack.
#
#   FLOWFORGE_E2E_URL=https://localhost:8443 FLOWFORGE_E2E_TOKEN=ff_... tests/e2e/run.sh [FILE.test.mjs ...]
#
# FLOWFORGE_E2E_TOKEN must be an admin token (scripts/stack.sh token). Screenshots go to
# FLOWFORGE_E2E_ARTIFACTS (default tests/e2e/artifacts). Installs Chromium (Debian's) and
# the npm packages when missing; exits non-zero if any test fails.
set -euo pipefail
cd "$(dirname "$0")"

: "${FLOWFORGE_E2E_URL:?set FLOWFORGE_E2E_URL, e.g. https://localhost:8443}"
: "${FLOWFORGE_E2E_TOKEN:?set FLOWFORGE_E2E_TOKEN to an admin API token}"
export FLOWFORGE_E2E_URL FLOWFORGE_E2E_TOKEN
chromium=${FLOWFORGE_E2E_CHROMIUM:-/usr/bin/chromium}

log() { printf '==> %s\n' "$*" >&2; }

if [ ! -x "$chromium" ]; then
    log "installing chromium"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
command -v node >/dev/null || { echo "node (20 or newer) is needed" >&2; exit 1; }
# shellcheck source=scripts/lib/npm.sh
source ../../scripts/lib/npm.sh
npm_install .

if [ $# -eq 0 ]; then set -- *.test.mjs; fi
tap=$(mktemp)
trap 'rm -f "$tap"' EXIT
log "running $# test files against $FLOWFORGE_E2E_URL"
status=0
timeout 1200 node --test --test-concurrency=1 \
    --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$tap" "$@" || status=$?
passed=$(grep -m1 '^# pass ' "$tap" | cut -d' ' -f3 || true)
failed=$(grep -m1 '^# fail ' "$tap" | cut -d' ' -f3 || true)
echo "e2e: ${passed:-0} passed, ${failed:-?} failed (exit $status)"
exit "$status"
