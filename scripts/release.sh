#!/usr/bin/env bash
# From a commit to production: images built and tagged by commit, an SBOM per image,
# pushed to a registry (TLS, a password), deployed to staging by digest, smoke-tested,
# then promoted to production — a canary first, watched in Prometheus — with an automatic
# rollback whenever a step fails. Here both environments are Compose projects on this
# machine and the registry is a local one (Debian's docker-registry).
#   scripts/release.sh publish             build this commit's images (tag: the full SHA, and the
#                                          version when the commit is tagged v*), SBOMs, push, record
#   scripts/release.sh deploy [SHA]        staging to a published release (default: this commit), then
#                                          the smoke test; back to the previous release if either fails
#   scripts/release.sh promote [SHA]       production to what staging runs (or SHA, once staging passed
#                                          it): one canary api and worker, watched, then the rest
#   scripts/release.sh rollback ENV [SHA]  ENV (staging|production) back to its previous release, or SHA
#   scripts/release.sh status              what each environment runs
#   scripts/release.sh login               log in to FLOWFORGE_RELEASE_REGISTRY (FLOWFORGE_REGISTRY_USER,
#                                          the password in FLOWFORGE_REGISTRY_PASSWORD)
#   scripts/release.sh sign [SHA]          sign each image of a release and attach its SBOM (cosign,
#                                          keyless: for CI with an OIDC token)
#   scripts/release.sh token ENV           create an admin API token for ENV (printed once)
#   scripts/release.sh compose ENV ARGS... any Compose command, on ENV's project and files
#   scripts/release.sh down [ENV]          remove ENV's containers (both, and the registry, without ENV)
# FLOWFORGE_RELEASE_REGISTRY names another registry (e.g. ghcr.io/OWNER) instead of the
# local one. State (release records, the local registry's CA and password, each
# environment's secrets) is kept in FLOWFORGE_RELEASE_HOME (default .run/release).
# docs/delivery.md has the details.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
log() { printf '==> %s\n' "$*" >&2; }
# shellcheck source=scripts/lib/engine.sh
source scripts/lib/engine.sh
# shellcheck source=scripts/lib/operations.sh
source scripts/lib/operations.sh
# shellcheck source=scripts/lib/tools.sh
source scripts/lib/tools.sh
# shellcheck source=scripts/lib/sbom.sh
source scripts/lib/sbom.sh
# shellcheck source=scripts/lib/tls.sh
source scripts/lib/tls.sh

home=$(realpath -m "${FLOWFORGE_RELEASE_HOME:-.run/release}")
registry_port=${FLOWFORGE_RELEASE_REGISTRY_PORT:-5443}
external_registry=${FLOWFORGE_RELEASE_REGISTRY:-}
# Registries want repository names in lower case (GitHub owners may have capitals).
registry=${external_registry,,}
registry=${registry:-localhost:$registry_port}
registry_container=flowforge-release-registry
# The services a release replaces one container at a time; the others (the database,
# Redis, the proxy, monitoring) are recreated only when their image's content changed.
rolling=(api worker web)

# A release's files: its compose.yaml, the image of every service by digest, SBOMs.
release_dir() { echo "$home/releases/$1"; }

# Compose for an environment, with the release's own files (set by use_env). Paths in the
# file resolve against this checkout, where the build contexts are.
compose() { docker compose --project-directory "$repo" "$@"; }
# The local registry's credentials stay in a Docker client configuration of their own;
# another registry's are where `login` put them.
registry_docker() {
    if [ -n "$external_registry" ]; then docker "$@"; else DOCKER_CONFIG=$home/docker docker "$@"; fi
}

# use_env ENV SHA: Compose's settings for ENV running release SHA.
use_env() {
    local dir
    [[ $2 =~ ^[0-9a-f]{40}$ ]] || { echo "not a commit SHA: '$2'" >&2; exit 2; }
    dir=$(release_dir "$2")
    [ -s "$dir/images.yaml" ] || { echo "release $2 is not published (scripts/release.sh publish)" >&2; exit 1; }
    known_env "$1"
    case "$1" in
    staging) set_ports "${FLOWFORGE_STAGING_HTTPS_PORT:-8543}" "${FLOWFORGE_STAGING_HTTP_PORT:-8180}" 5614 ;;
    production) set_ports "${FLOWFORGE_PRODUCTION_HTTPS_PORT:-8643}" "${FLOWFORGE_PRODUCTION_HTTP_PORT:-8280}" 5714 ;;
    esac
    export COMPOSE_PROJECT_NAME=flowforge-$1 COMPOSE_FILE=$dir/compose.yaml:$dir/images.yaml
    secrets=$home/$1/secrets
    export FLOWFORGE_SECRETS=$secrets
}

known_env() { [[ $1 =~ ^(staging|production)$ ]] || { echo "no environment '$1': staging or production" >&2; exit 2; }; }

set_ports() { export FLOWFORGE_HTTPS_PORT=$1 FLOWFORGE_HTTP_PORT=$2 FLOWFORGE_LOG_PORT=$3; }

url_of() { echo "https://localhost:$FLOWFORGE_HTTPS_PORT"; }

# The release an environment runs, and the one before it ("" when none).
current() { cat "$home/$1/current" 2>/dev/null || true; }
previous() { cat "$home/$1/previous" 2>/dev/null || true; }

# asks_for_login CA: the registry answers anonymous requests with 401, over TLS from CA.
asks_for_login() {
    [ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$1" "https://$registry/v2/")" = 401 ]
}

# The registry: TLS with a certificate from a CA of its own (which this machine's Docker
# trusts for that address only), and one user whose password is a file here.
start_registry() {
    [ -z "$external_registry" ] || return 0
    local dir=$home/registry
    mkdir -p "$dir" && chmod 700 "$dir"
    if [ ! -s "$dir/registry.pem" ]; then
        log "the registry's CA, certificate and password (in $dir)"
        # A registry started with other files would refuse the new password.
        docker rm -f "$registry_container" >/dev/null 2>&1 || true
        (
            umask 077
            cd "$dir"
            make_ca "FlowForge release registry CA"
            sign_cert registry localhost "DNS:localhost,IP:127.0.0.1"
            openssl rand -hex 24 >password
            htpasswd -niB release <password >users.htpasswd
            # Read by the registry's own user in its container.
            chown 10004 registry.key users.htpasswd
            chmod 644 ca.pem registry.pem
        )
    fi
    mkdir -p "/etc/docker/certs.d/$registry"
    cp "$dir/ca.pem" "/etc/docker/certs.d/$registry/ca.crt"
    run_registry "$registry_container" "$registry_port" \
        -v "$dir/registry.pem:/certs/registry.pem:ro" -v "$dir/registry.key:/certs/registry.key:ro" \
        -v "$dir/users.htpasswd:/auth/htpasswd:ro" \
        -e REGISTRY_HTTP_TLS_CERTIFICATE=/certs/registry.pem -e REGISTRY_HTTP_TLS_KEY=/certs/registry.key \
        -e REGISTRY_AUTH=htpasswd -e REGISTRY_AUTH_HTPASSWD_REALM=flowforge \
        -e REGISTRY_AUTH_HTPASSWD_PATH=/auth/htpasswd
    # 401 without credentials: up, and asking for them.
    wait_until 30 "the registry" asks_for_login "$dir/ca.pem" || exit 1
    mkdir -p "$home/docker" && chmod 700 "$home/docker"
    registry_docker login -u release --password-stdin "$registry" <"$dir/password" >/dev/null
}

# publish: this commit's images, tagged by its SHA (and version), pushed; the release
# record maps every service to its image by digest.
publish() {
    git diff --quiet HEAD -- || { echo "the checkout has uncommitted changes: a release is a commit" >&2; exit 1; }
    local sha version started=$SECONDS dir image reference digest
    sha=$(git rev-parse HEAD)
    version=$(git describe --exact-match --tags --match 'v*' 2>/dev/null || true)
    dir=$(release_dir "$sha")
    ensure_engine
    start_registry
    base_images
    FLOWFORGE_TAG=$sha build
    mkdir -p "$dir/sbom"
    binary_sboms "$dir/sbom/binaries"
    cp compose.yaml "$dir/compose.yaml"
    : >"$dir/digests"
    for image in $(docker image ls --format '{{.Repository}}' --filter "reference=flowforge-*:$sha" | sort); do
        for tag in "$sha" ${version:+"$version"}; do
            docker tag "$image:$sha" "$registry/$image:$tag"
            registry_docker push -q "$registry/$image:$tag" >/dev/null
        done
        reference=$(docker image inspect -f '{{range .RepoDigests}}{{println .}}{{end}}' "$registry/$image:$sha" |
            grep "^$registry/$image@" | head -n 1)
        digest=${reference#*@}
        echo "$image $reference" >>"$dir/digests"
        python3 scripts/lib/image_sbom.py "$reference" "$dir/sbom/binaries" >"$dir/sbom/$image.cdx.json"
        log "pushed $image@${digest:0:19}… (SBOM: $(jq '.components | length' "$dir/sbom/$image.cdx.json") components)"
    done
    # Compose override: each service that runs one of these images, by digest.
    COMPOSE_FILE=compose.yaml FLOWFORGE_TAG=$sha docker compose config --format json |
        jq -r --rawfile digests "$dir/digests" '
            ($digests | split("\n") | map(select(length > 0) | split(" ") | {(.[0]): .[1]}) | add) as $by_image
            | "services:", (.services | to_entries[] | select(.value.image | test("^flowforge-"))
              | (.value.image | split(":")[0]) as $image | select($by_image[$image])
              | "  \(.key):\n    image: \($by_image[$image])")' >"$dir/images.yaml"
    echo "$sha${version:+ $version}" >"$dir/release"
    log "release $sha published in $((SECONDS - started)) s: $(wc -l <"$dir/digests") images, $dir"
}

# login: to the registry FLOWFORGE_RELEASE_REGISTRY names, the password from the
# environment to the Docker CLI's standard input (never on a command line).
login() {
    [ -n "$external_registry" ] || { echo "FLOWFORGE_RELEASE_REGISTRY is not set: the local registry needs no login" >&2; exit 2; }
    printf '%s' "${FLOWFORGE_REGISTRY_PASSWORD:?}" |
        docker login -u "${FLOWFORGE_REGISTRY_USER:?}" --password-stdin "${registry%%/*}" >/dev/null
}

# sign SHA: a keyless cosign signature on each image of the release, and its SBOM
# attached as a signed CycloneDX attestation (the identity is CI's OIDC token).
sign() {
    command -v cosign >/dev/null || { echo "cosign is not installed" >&2; exit 1; }
    local dir image reference
    dir=$(release_dir "$1")
    while read -r image reference; do
        cosign sign --yes "$reference"
        cosign attest --yes --type cyclonedx --predicate "$dir/sbom/$image.cdx.json" "$reference"
    done <"$dir/digests"
}

# Every image of release SHA present here, pulled from the registry by digest.
pull_release() {
    local image reference
    while read -r image reference; do
        docker image inspect "$reference" >/dev/null 2>&1 || registry_docker pull -q "$reference" >/dev/null
    done <"$(release_dir "$1")/digests"
}

# What a container image does, without its labels: equal for two builds of the same
# content at different commits.
content() {
    docker image inspect -f '{{json .RootFS.Layers}}{{json .Config.Entrypoint}}{{json .Config.Cmd}}{{json .Config.Env}}{{json .Config.User}}{{json .Config.Healthcheck}}' "$1"
}

# deploy_to ENV SHA [--canary]: ENV runs release SHA. A first deployment starts the whole
# stack; after that: migrations; with --canary, one api and one worker of the release,
# watched; the infrastructure whose content changed; then the rolling services, one
# container of each at a time.
deploy_to() {
    local env=$1 sha=$2 canary=${3:-} started=$SECONDS service c reference
    use_env "$env" "$sha"
    pull_release "$sha"
    deploy/compose/init-secrets.sh "$secrets" >/dev/null
    if [ -z "$(compose ps -q api)" ]; then
        log "$env: starting release ${sha:0:12} (first deployment)"
        compose create --no-build --remove-orphans >/dev/null
        isolate_internal_networks
        compose up -d --no-build --wait --wait-timeout 240 >/dev/null || return 1
    else
        log "$env: migrating to release ${sha:0:12}"
        job migrate >/dev/null || return 1
        # A rejected canary leaves the environment as it was (migrations only add).
        if [ "$canary" = --canary ]; then
            canary "$env" || return 1
        fi
        local -A image=()
        while read -r service reference; do image[$service]=$reference; done < <(service_images)
        for service in $(compose ps --services --status running); do
            [[ " ${rolling[*]} " == *" $service "* ]] && continue
            c=$(compose ps -q "$service" | head -n 1)
            [ "$(content "$(docker inspect -f '{{.Image}}' "$c")")" = "$(content "${image[$service]}")" ] && continue
            log "$env: $service's image changed: recreating it (a short interruption of $service)"
            compose up -d --no-deps --no-build --wait "$service" >/dev/null || return 1
        done
        # The three services side by side: each keeps its own replica count up.
        local pids=() pid failed=0
        for service in "${rolling[@]}"; do
            rolling_update "$service" --keep-current &
            pids+=($!)
        done
        for pid in "${pids[@]}"; do
            wait "$pid" || failed=1
        done
        [ "$failed" -eq 0 ] || return 1
    fi
    log "$env: release ${sha:0:12} deployed in $((SECONDS - started)) s"
}

# The smoke test: health, readiness and a task end to end (`flowforge check` from the
# release's own CLI image, as a user of the stack).
smoke() {
    local env=$1 token=$home/$1/smoke-token
    [ -s "$token" ] || (umask 077 && job migrate token create --user release-smoke --role admin >"$token")
    log "$env: smoke test"
    docker run --rm --network host --user 0:0 --cap-drop ALL --read-only \
        -v "$token:/smoke/token:ro" -v "$secrets/ca.pem:/smoke/ca.pem:ro" "$(service_image migrate)" \
        check --url "$(url_of)" --token-file /smoke/token --ca-cert /smoke/ca.pem --timeout-secs 60 >&2
}

# canary ENV: one api and one worker container of the new release beside the old ones,
# taking their share of the traffic; Prometheus watches the api's answers for
# FLOWFORGE_CANARY_SECONDS. Good: one old container of each goes. Not: the canaries go.
canary() {
    local env=$1 seconds=${FLOWFORGE_CANARY_SECONDS:-60} api worker instances verdict
    api=$(start_replica api) || return 1
    worker=$(start_replica worker) || { retire "$api"; return 1; }
    instances=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}:8080|{{end}}' "$api")
    log "$env: canary api ${api:0:12} and worker ${worker:0:12} serving; watching them for $seconds s"
    sleep "$seconds"
    if verdict=$(canary_verdict "${instances%|}" "$seconds"); then
        log "$env: canary good ($verdict): the rest follows"
        retire "$(compose ps -q api | grep -v "^$api" | head -n 1)"
        retire "$(compose ps -q worker | grep -v "^$worker" | head -n 1)"
    else
        log "$env: canary bad ($verdict): removing it; the previous release keeps serving"
        retire "$api"
        retire "$worker"
        return 1
    fi
}

# canary_verdict INSTANCES SECONDS: the canary api's requests, 5xx share and p99 latency
# over the window, from Prometheus through the proxy (as an operator); fails when it
# served fewer than FLOWFORGE_CANARY_MIN_REQUESTS, or its 5xx share or p99 exceed
# FLOWFORGE_CANARY_MAX_ERROR_RATIO and FLOWFORGE_CANARY_MAX_P99_MS.
canary_verdict() {
    # Clients' requests only: not the probes' and Prometheus' own.
    local selector="job=\"api\",instance=~\"$1\",route!~\"/health|/ready|/metrics\"" window="$2s" requests errors p99
    # The last scrape of the window must be in.
    sleep 6
    requests=$(promql "sum(increase(http_requests_total{$selector}[$window]))")
    errors=$(promql "sum(increase(http_requests_total{$selector,status=~\"5..\"}[$window])) or vector(0)")
    p99=$(promql "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{$selector}[$window]))) * 1000")
    printf '%.0f requests, %.0f × 5xx, p99 %.0f ms' "${requests:-0}" "${errors:-0}" "${p99:-0}"
    awk -v n="${requests:-0}" -v e="${errors:-0}" -v p="${p99:-NaN}" \
        -v min="${FLOWFORGE_CANARY_MIN_REQUESTS:-20}" -v ratio="${FLOWFORGE_CANARY_MAX_ERROR_RATIO:-0.01}" \
        -v slow="${FLOWFORGE_CANARY_MAX_P99_MS:-500}" \
        'BEGIN { exit !(n >= min && e <= ratio * n && p == p + 0 && p <= slow) }'
}

# promql QUERY: the first value of an instant query (empty when there is none).
promql() {
    curl -fsS --cacert "$secrets/ca.pem" -K <(printf 'user = "operator:%s"\n' "$(cat "$secrets/operator_password")") \
        --data-urlencode "query=$1" "$(url_of)/prometheus/api/v1/query" | jq -r '.data.result[0].value[1] // empty'
}

# release_to ENV SHA [--canary]: deploy and smoke-test; on failure, back to the release
# ENV ran before (if any), checked the same way.
release_to() {
    local env=$1 sha=$2 before
    before=$(current "$env")
    if deploy_to "$env" "$sha" "${3:-}" && smoke "$env"; then
        if [ "$before" != "$sha" ]; then
            echo "$before" >"$home/$env/previous"
            echo "$sha" >"$home/$env/current"
        fi
        # What promote asks for, carried with the release's record to production's host.
        [ "$env" != staging ] || date -u +"passed staging %Y-%m-%dT%H:%M:%SZ on $(hostname)" >"$(release_dir "$sha")/staged"
        log "$env runs release ${sha:0:12}"
        return 0
    fi
    if [ -n "$before" ]; then
        log "$env: release ${sha:0:12} failed; rolling back to ${before:0:12}"
        deploy_to "$env" "$before" && smoke "$env" && log "$env: rolled back to ${before:0:12}"
    else
        log "$env: release ${sha:0:12} failed, and there is no earlier release to go back to"
    fi
    return 1
}

status() {
    local env
    for env in staging production; do
        printf '%-11s %s (previous: %s)\n' "$env" "$(current "$env" | cut -c1-12)" "$(previous "$env" | cut -c1-12)"
    done
}

# down [ENV]: ENV's containers and volumes (both environments', and the registry, without
# ENV). Release records and secrets stay.
take_down_envs() {
    local envs=("$@") env sha
    [ $# -gt 0 ] || envs=(staging production)
    for env in "${envs[@]}"; do
        known_env "$env"
        sha=$(current "$env")
        [ -n "$sha" ] || continue
        use_env "$env" "$sha"
        take_down --purge
        rm -f "$home/$env/current" "$home/$env/previous" "$home/$env/smoke-token"
    done
    if [ $# -eq 0 ]; then
        docker rm -f "$registry_container" >/dev/null 2>&1 || true
        docker volume rm "$registry_container" >/dev/null 2>&1 || true
    fi
}

# What the steps call besides Docker: Debian's packages, where missing.
need_tools() {
    local missing=()
    command -v jq >/dev/null || missing+=(jq)
    command -v curl >/dev/null || missing+=(curl)
    command -v htpasswd >/dev/null || missing+=(apache2-utils)
    [ ${#missing[@]} -eq 0 ] && return
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

mkdir -p "$home" && chmod 700 "$home"
need_tools
command=${1:-}
shift || true
case "$command" in
publish) publish ;;
deploy)
    ensure_engine && start_registry
    mkdir -p "$home/staging"
    release_to staging "${1:-$(git rev-parse HEAD)}"
    ;;
promote)
    ensure_engine && start_registry
    sha=${1:-$(current staging)}
    [ -n "$sha" ] || { echo "staging runs no release: scripts/release.sh deploy first" >&2; exit 1; }
    [ -s "$(release_dir "$sha")/staged" ] || { echo "release $sha has not passed staging" >&2; exit 1; }
    mkdir -p "$home/production"
    release_to production "$sha" --canary
    ;;
rollback)
    env=${1:?usage: scripts/release.sh rollback ENV [SHA]}
    known_env "$env"
    sha=${2:-$(previous "$env")}
    [ -n "$sha" ] || { echo "$env has no previous release" >&2; exit 1; }
    ensure_engine && start_registry
    release_to "$env" "$sha"
    ;;
login) login ;;
sign) sign "${1:-$(git rev-parse HEAD)}" ;;
status) status ;;
token)
    known_env "${1:?usage: scripts/release.sh token ENV}"
    use_env "$1" "$(current "$1")" && job migrate token create --user admin --role admin
    ;;
compose)
    known_env "${1:?usage: scripts/release.sh compose ENV ARGS...}"
    use_env "$1" "$(current "$1")"
    shift && compose "$@"
    ;;
down) take_down_envs "$@" ;;
*) sed -n '2,/^[^#]/{/^#/p}' "$0" >&2; exit 2 ;;
esac
