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

# Runs a build with BuildKit's plain progress, and prints of it what says how far it has
# got: each step as it starts, and cargo's crates as they compile. A failing build prints
# its last 40 lines.
build_with_progress() {
    local output status=0
    output=$(mktemp)
    "$DOCKER_BUILD_CLI" build --progress=plain "$@" 2>&1 | tee "$output" |
        sed -nuE 's/^#[0-9]+ (\[[^]]* [0-9]+\/[0-9]+\] .*)/    \1/p
            s/^#[0-9]+ [0-9.]+ +(Compiling [^ ]+ [^ ]+|Finished .*)/      \1/p' |
        sed -uE 's/^(.{117}).+/\1.../' >&2 || status=$?
    [ "$status" -eq 0 ] || tail -40 "$output" >&2
    rm -f "$output"
    return "$status"
}

# build_image NAME ARGS...: one image, built quietly (each takes seconds once the Rust builder
# is done), with a line saying which.
build_image() {
    local name=$1 started=$SECONDS
    shift
    "$DOCKER_BUILD_CLI" build -q -t "$name" "$@" >/dev/null
    log "  $name ($((SECONDS - started)) s)"
}

build() {
    local tag=${FLOWFORGE_TAG:-dev} started=$SECONDS labels
    # What the images' OCI labels say.
    labels=(--build-arg VERSION="$tag" --build-arg REVISION="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)")
    DOCKER_BUILD_CLI=$(buildkit_docker)
    export DOCKER_BUILDKIT=1 DOCKER_BUILD_CLI
    log "base images (built from Debian's packages where no registry answers: about a minute, once)"
    deploy/images/base-images.sh | sed 's/^/    /' >&2
    log "compiling the Rust services, release (several minutes on a fresh machine, cached after)"
    build_with_progress --secret id=host_ca,src="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" \
        -f deploy/images/build/Dockerfile -t flowforge-build:latest .
    log "images, tagged $tag"
    build_image flowforge-runtime:latest deploy/images/runtime
    for name in api worker web cli; do
        build_image "flowforge-$name:$tag" "${labels[@]}" -f "deploy/images/$name/Dockerfile" .
    done
    for name in postgres redis proxy prometheus alertmanager postgres-exporter redis-exporter node-exporter \
        log-collector; do
        build_image "flowforge-$name:$tag" "${labels[@]}" "deploy/images/$name"
    done
    build_image "flowforge-backup:$tag" "${labels[@]}" --build-arg POSTGRES_IMAGE="flowforge-postgres:$tag" -f deploy/images/backup/Dockerfile .
    log "built in $((SECONDS - started)) s"
    docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' | grep -E "^flowforge-[a-z-]+:$tag" | sort >&2
}
