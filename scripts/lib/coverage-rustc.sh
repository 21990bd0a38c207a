#!/usr/bin/env bash
# RUSTC_WRAPPER for the coverage build. cargo-tarpaulin instruments every crate and gives
# each full debug information; only the workspace's own crates (the primary packages) are
# measured, so dependencies are compiled without either: a quicker build and smaller test
# binaries to link.
set -euo pipefail
rustc=$1
shift
if [ -n "${CARGO_PRIMARY_PACKAGE:-}" ]; then
    exec "$rustc" "$@"
fi
args=()
for arg in "$@"; do
    case $arg in
    -Cinstrument-coverage) ;;
    -Cdebuginfo=*) args+=(-Cdebuginfo=0) ;;
    *) args+=("$arg") ;;
    esac
done
exec "$rustc" "${args[@]}"
