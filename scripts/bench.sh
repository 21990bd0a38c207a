#!/usr/bin/env bash
# The queue benchmark docs/benchmarks.md reports, from a fresh machine: a private
# PostgreSQL 15 with durable commits (scripts/lib/services.sh), a release build, then
#   1. burn-down of 200,000 no-op tasks with 1 and 2 worker processes, 5 runs each;
#   2. the same with 2 processes at rising handler slots per process, 3 runs each;
#   3. 2 processes with the backlog spread over 0, 2 and 10 owners (the fair claim), 3 runs each;
#   4. enqueue→start latency, 5 runs;
# every run a line in RESULTS (JSON), the printed tables beside it, and the chart.
#   scripts/bench.sh [OUT_DIR]     (default artifacts/bench/<UTC time>)
# Runs about 12 minutes. Nothing else should run on the machine meanwhile.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/services.sh
source scripts/lib/services.sh
# shellcheck source=scripts/lib/tools.sh
source scripts/lib/tools.sh

out=${1:-artifacts/bench/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
results="$out/results.jsonl"

cargo build --release --locked -p flowforge-cli
services_dir="${TMPDIR:-/tmp}/flowforge-bench-$$"
trap 'stop_services; rm -rf "$services_dir"' EXIT
start_services "$services_dir"
# A private server on loopback, without TLS: the dev profile allows that.
export FLOWFORGE_PROFILE=dev FLOWFORGE_DATABASE_URL=$FLOWFORGE_TEST_DATABASE_URL
flowforge=target/release/flowforge

{ uname -srm; nproc; grep -m1 'model name' /proc/cpuinfo || true; free -g | sed -n 2p; } >"$out/machine.txt"
"$flowforge" bench burn-down --processes 1,2 --concurrency 2000 --claim-batch 1000 --repeat 5 --out "$results" |
    tee "$out/burn-down.txt"
"$flowforge" bench burn-down --processes 2 --concurrency 64,250,1000,2000,4000 --claim-batch 1000 --repeat 3 \
    --out "$results" | tee "$out/slots.txt"
# The fair claim's cost: the same backlog without owners (no fairness to do), over 2 and
# over 10 owners (every claim shares its batch between them).
"$flowforge" bench burn-down --processes 2 --concurrency 2000 --claim-batch 1000 --owners 0,2,10 --repeat 3 \
    --out "$results" | tee "$out/owners.txt"
"$flowforge" bench latency --repeat 5 --out "$results" | tee "$out/latency.txt"

python3 -c 'import matplotlib' 2>/dev/null || pip_tools matplotlib==3.9.2
python3 scripts/bench/chart.py "$results" "$out/chart.png"
echo "results in $out"
