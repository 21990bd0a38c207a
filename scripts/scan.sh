#!/usr/bin/env bash
# The security scanners, offline (no vulnerability database can be downloaded here):
#   1. cargo deny: advisories (from the RustSec snapshot in ../shared/advisory-db, or
#      FLOWFORGE_ADVISORY_DB; without one, a warning, and a failure on GitHub), bans,
#      licenses and sources (deny.toml);
#   2. checkov over deploy/ (.checkov.yaml and inline comments give each skip's reason);
#   3. trufflehog3's secret patterns over every commit and the working tree;
#   4. a CycloneDX SBOM per Rust binary, kept in artifacts/sbom/.
# Missing tools are installed, pinned: about 7 minutes the first time (two cargo
# installs), under a minute after. Called by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }
# shellcheck source=scripts/lib/tools.sh
source scripts/lib/tools.sh
# shellcheck source=scripts/lib/sbom.sh
source scripts/lib/sbom.sh

# The snapshot: FLOWFORGE_ADVISORY_DB, else beside the checkout, else this machine's copy.
advisories=
for dir in "${FLOWFORGE_ADVISORY_DB:-}" ../shared/advisory-db /work/shared/advisory-db; do
    [ -n "$dir" ] && [ -d "$dir/crates" ] && { advisories=$dir; break; }
done
# On a developer's machine a missing snapshot only narrows the scan (with a warning). On
# GitHub, whose scan job checks the database out, a missing one would let a vulnerable
# dependency through unnoticed, so it fails the scan there. (The project's own CI machine
# keeps a snapshot beside the checkout.)
if [ -z "$advisories" ] && [ "${GITHUB_ACTIONS:-}" = true ]; then
    echo "scan: no RustSec advisory snapshot (a directory with crates/) in FLOWFORGE_ADVISORY_DB," \
        "../shared/advisory-db or /work/shared/advisory-db; on GitHub advisories must be checked" >&2
    exit 1
fi
# pip downloads while cargo compiles.
if ! command -v checkov >/dev/null || ! command -v trufflehog3 >/dev/null; then
    pip_tools checkov==3.3.30 trufflehog3==3.0.10 &
fi
cargo_tool cargo-deny cargo-deny@0.20.2
wait

db=$(mktemp -d)
trap 'rm -rf "$db"' EXIT
# Offline, every crate of the lock file must be in cargo's cache (for every target).
cargo fetch --locked -q
if [ -n "$advisories" ]; then
    step "cargo deny: advisories ($(head -c 80 "$advisories/SNAPSHOT" 2>/dev/null || echo "$advisories")), bans, licenses, sources"
    # cargo deny looks for the database of deny.toml's URL under this name, and wants a
    # git repository there.
    copy="$db/advisory-db-3157b0e258782691"
    cp -r "$advisories" "$copy"
    # A clone (CI checks the database out) brings its own history: one commit of the files
    # is all cargo deny needs, and a fresh one always has something to commit.
    rm -rf "$copy/.git"
    git -C "$copy" init -q && git -C "$copy" add -A &&
        git -C "$copy" -c user.name=scan -c user.email=scan@localhost commit -qm snapshot
    sed "s|^\[advisories\]\$|[advisories]\ndb-path = \"$db\"|" deny.toml >"$db/deny.toml"
    cargo deny --offline --config "$db/deny.toml" check
else
    step "cargo deny: bans, licenses, sources"
    echo "WARNING: no RustSec advisory snapshot found (set FLOWFORGE_ADVISORY_DB): advisories NOT checked" >&2
    cargo deny --offline check bans licenses sources
fi

step "checkov over deploy/"
checkov -d deploy --config-file .checkov.yaml --skip-download --quiet --compact

step "secret scan of every commit (trufflehog3)"
trufflehog3 --no-entropy -c .trufflehog3.yml .

step "SBOM per binary (CycloneDX) into artifacts/sbom/"
binary_sboms artifacts/sbom
ls artifacts/sbom
