# shellcheck shell=bash
# Installing the pinned tools the scripts use, where they are missing.

# cargo_tool COMMAND CRATE@VERSION [INSTALL OPTIONS...]: installs the pinned cargo tool
# where COMMAND is missing. Its release profile's LTO and few codegen units are traded for
# a quicker cold install: these tools run for seconds (cargo-tarpaulin installed in 188 s
# this way, against 240 s).
cargo_tool() {
    local command=$1 crate=$2
    shift 2
    command -v "$command" >/dev/null && return
    printf '==> installing %s (cargo install)\n' "$crate" >&2
    CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
        cargo install -q --locked "$@" "$crate"
}

# pip_tools PACKAGE==VERSION...: pip install, quiet but for real errors (as root here, pip's
# warning about it is noise).
pip_tools() {
    pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "Running pip as the 'root' user" || true
}
