# CycloneDX SBOMs of the Rust binaries (sourced by scan.sh and release.sh).
# shellcheck shell=bash

# binary_sboms DIR: one SBOM per binary the workspace builds (NAME_bin.cdx.json) into DIR,
# with cargo-cyclonedx, installed pinned where missing (cargo_tool, scripts/lib/tools.sh).
binary_sboms() {
    cargo_tool cargo-cyclonedx cargo-cyclonedx@0.5.9
    cargo cyclonedx --format json --spec-version 1.5 --describe binaries >/dev/null
    mkdir -p "$1"
    find crates tests -maxdepth 3 -name '*.cdx.json' -exec mv {} "$1"/ \;
}
