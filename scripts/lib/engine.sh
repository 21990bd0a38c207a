# The Docker engine, Compose and the stack's images (sourced by scripts/stack.sh).
# shellcheck shell=bash

# A Docker engine, installed from Debian's packages and started here if none answers.
ensure_engine() {
    if docker info >/dev/null 2>&1; then return; fi
    if ! command -v dockerd >/dev/null 2>&1; then
        if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
            echo "no Docker engine: install Docker and start it" >&2
            exit 1
        fi
        log "installing Docker from Debian's packages"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-compose debootstrap >/dev/null
    fi
    log "starting dockerd"
    # Published ports by NAT in the kernel rather than through docker-proxy, a userland
    # process copying every byte (an eighth of a core at 1,500 requests/s through the proxy).
    (nohup dockerd --userland-proxy=false >/var/log/flowforge-dockerd.log 2>&1 &)
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && return; sleep 1; done
    echo "dockerd did not start; see /var/log/flowforge-dockerd.log" >&2
    exit 1
}

# Dev mode: binaries built on this host (compose.dev.yaml); the same build `cargo test`
# uses, so it is usually incremental.
dev_build() {
    log "building the Rust services on this host (debug)"
    cargo build --locked -p flowforge-api -p flowforge-worker -p flowforge-web -p flowforge-cli --bins
}

compose() {
    if docker compose version >/dev/null 2>&1; then docker compose "$@"; else docker-compose "$@"; fi
}

# A docker CLI that builds with BuildKit: one with buildx, or Debian's 20.10 CLI which has
# BuildKit built in.
buildkit_docker() {
    if docker buildx version >/dev/null 2>&1; then
        echo docker
    elif [ -x /usr/bin/docker ]; then
        echo /usr/bin/docker
    else
        echo docker
    fi
}

build() {
    local docker tag=${FLOWFORGE_TAG:-dev} revision
    docker=$(buildkit_docker)
    revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    export DOCKER_BUILDKIT=1 DOCKER_BUILD_CLI="$docker"
    deploy/images/base-images.sh >/dev/null
    log "compiling the Rust services (cached after the first time)"
    "$docker" build -q --secret id=host_ca,src="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" \
        -f deploy/images/build/Dockerfile -t flowforge-build:latest . >/dev/null
    "$docker" build -q -t flowforge-runtime:latest deploy/images/runtime >/dev/null
    for image in api worker web cli; do
        "$docker" build -q --build-arg VERSION="$tag" --build-arg REVISION="$revision" \
            -f "deploy/images/$image/Dockerfile" -t "flowforge-$image:$tag" . >/dev/null
    done
    for image in postgres redis proxy prometheus alertmanager postgres-exporter redis-exporter node-exporter \
        log-collector; do
        "$docker" build -q --build-arg VERSION="$tag" --build-arg REVISION="$revision" \
            -t "flowforge-$image:$tag" "deploy/images/$image" >/dev/null
    done
    "$docker" build -q --build-arg VERSION="$tag" --build-arg REVISION="$revision" \
        --build-arg POSTGRES_IMAGE="flowforge-postgres:$tag" \
        -f deploy/images/backup/Dockerfile -t "flowforge-backup:$tag" . >/dev/null
    docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' | grep -E "^flowforge-[a-z-]+:$tag" | sort >&2
}
