#!/usr/bin/env bash
# FlowForge on a Docker Swarm of three nodes, all on this machine: each node is a
# Docker-in-Docker container; images are served to them by a local registry.
#   scripts/swarm.sh up       build, push by commit, start the nodes, form the swarm, deploy, wait
#   scripts/swarm.sh update   build again and roll api, worker and web to this commit's images
#   scripts/swarm.sh roll TAG        roll api, worker and web to images already pushed as TAG
#   scripts/swarm.sh status   the nodes, the services and their tasks
#   scripts/swarm.sh token    create an admin API token (printed once)
#   scripts/swarm.sh job ARGS...     a one-off `flowforge ARGS` as the schema owner, on the data
#                             network (the manager's /work is $work on this machine)
#   scripts/swarm.sh search ID       every stored log line with this request or trace id, from
#                             every node's log store
#   scripts/swarm.sh down     remove the nodes, the registry and their volumes
#   scripts/swarm.sh docker ARGS...  the docker CLI on the manager node
# The stack is deploy/swarm/stack.yaml; docs/swarm.md says what differs from Compose.
# Entry point: https://localhost:${FLOWFORGE_SWARM_HTTPS_PORT:-9443} (the manager node's proxy).
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '==> %s\n' "$*" >&2; }
# shellcheck source=scripts/lib/engine.sh
source scripts/lib/engine.sh

prefix=${FLOWFORGE_SWARM_PREFIX:-ffswarm}
nodes=("$prefix-node1" "$prefix-node2" "$prefix-node3")
manager=${nodes[0]}
network=$prefix
subnet=${FLOWFORGE_SWARM_SUBNET:-10.213.60}
registry_port=${FLOWFORGE_SWARM_REGISTRY_PORT:-5000}
https_port=${FLOWFORGE_SWARM_HTTPS_PORT:-9443}
secrets=$(realpath -m "${FLOWFORGE_SWARM_SECRETS:-.run/swarm/secrets}")
work=$(realpath -m "${FLOWFORGE_SWARM_WORK:-.run/swarm/work}")
# The services the stack runs, from the images compose.yaml builds.
images=(postgres redis cli api worker web proxy log-collector prometheus alertmanager postgres-exporter
    redis-exporter node-exporter backup)

# The commit the images are built from; a checkout with changes gets a suffix of its own.
commit_tag() {
    local sha
    sha=$(git rev-parse HEAD)
    if git diff --quiet HEAD -- 2>/dev/null; then echo "$sha"; else echo "$sha-changed"; fi
}

on_manager() { docker exec "$manager" docker "$@"; }

build_images() {
    log "building the images (scripts/stack.sh build) and the node image"
    scripts/stack.sh build
    docker build -q --build-arg "REVISION=$(git rev-parse HEAD)" -t flowforge-swarm-node:dev deploy/swarm/node >/dev/null
}

# push TAG: every stack image into the registry, under the commit's tag.
push_images() {
    local tag=$1 image
    log "pushing ${images[*]} as :$tag to the registry"
    for image in "${images[@]}"; do
        docker tag "flowforge-$image:dev" "127.0.0.1:$registry_port/flowforge-$image:$tag"
        docker push -q "127.0.0.1:$registry_port/flowforge-$image:$tag" >/dev/null
        docker rmi "127.0.0.1:$registry_port/flowforge-$image:$tag" >/dev/null
    done
}

start_registry() {
    docker network inspect "$network" >/dev/null 2>&1 ||
        docker network create --subnet "$subnet.0/24" "$network" >/dev/null
    # The host pushes to it on loopback (Docker trusts plain HTTP there); the nodes pull
    # from `registry` on their own network.
    run_registry "$prefix-registry" "$registry_port" --network "$network" --network-alias registry
    wait_until 30 "the registry" curl -fsS -o /dev/null "http://127.0.0.1:$registry_port/v2/"
}

# The loosened settings a Docker daemon needs to run inside a container. For these test
# nodes only, never for a product container; --privileged itself fails on this kind of
# host (no CAP_SYS_RESOURCE to hand out).
start_nodes() {
    local i node extra
    for i in 0 1 2; do
        node=${nodes[$i]}
        docker container inspect "$node" >/dev/null 2>&1 && continue
        extra=()
        if [ "$i" -eq 0 ]; then
            # The manager deploys the stack: it reads the stack file and the secrets, and
            # publishes its proxy on this machine's loopback.
            extra=(-v "$PWD/deploy/swarm:/stack:ro" -v "$secrets:/secrets:ro" -v "$work:/work"
                -p "127.0.0.1:$https_port:8443")
        fi
        docker run -d --name "$node" --hostname "node$((i + 1))" --network "$network" \
            --ip "$subnet.$((i + 11))" \
            --cap-add ALL --cap-drop SYS_RESOURCE \
            --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
            -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run -v "$node:/var/lib/docker" \
            -e REGISTRY=registry:5000 "${extra[@]}" flowforge-swarm-node:dev >/dev/null
    done
    for node in "${nodes[@]}"; do
        wait_until 60 "dockerd in $node" docker exec "$node" docker version
    done
    log "the nodes' engines store images with $(docker exec "${nodes[0]}" docker info -f '{{.Driver}}')"
}

form_swarm() {
    if [ "$(on_manager info -f '{{.Swarm.LocalNodeState}}')" != active ]; then
        log "forming the swarm: node1 manages, node2 and node3 work"
        on_manager swarm init --advertise-addr "$subnet.11" >/dev/null
    fi
    local token node
    token=$(on_manager swarm join-token -q worker)
    for node in "${nodes[@]:1}"; do
        [ "$(docker exec "$node" docker info -f '{{.Swarm.LocalNodeState}}')" = active ] ||
            docker exec "$node" docker swarm join --token "$token" "$subnet.11:2377" >/dev/null
    done
    # PostgreSQL lives where its volume is.
    on_manager node update --label-add flowforge.postgres=true node1 >/dev/null
}

# Whether the kernel can encrypt overlay traffic (ESP with AES-GCM, what Docker asks for):
# tried on a throwaway state in a node's own network namespace.
kernel_has_ipsec() {
    docker exec "$manager" sh -c "ip xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x1 mode transport \
        aead 'rfc4106(gcm(aes))' 0x0102030405060708090a0b0c0d0e0f1011121314 64 && ip xfrm state flush" >/dev/null 2>&1
}

# deploy TAG: the stack at the commit's images (digests resolved from the registry).
deploy() {
    local files=(-c /stack/stack.yaml)
    if kernel_has_ipsec; then
        files+=(-c /stack/encrypted-networks.yaml)
    else
        log "this kernel has no ESP with AES-GCM: the overlays carry TLS only, without IPsec between nodes"
    fi
    log "deploying the stack at :$1"
    docker exec -e REGISTRY=registry:5000 -e FLOWFORGE_TAG="$1" -e FLOWFORGE_SECRETS=/secrets \
        -e FLOWFORGE_HTTPS_PORT="$https_port" \
        -e FLOWFORGE_RATE_LIMIT_PER_MINUTE -e FLOWFORGE_PROXY_MAX_CONNECTIONS_PER_SOURCE \
        "$manager" docker stack deploy --prune "${files[@]}" flowforge >/dev/null
}

# short_services: the services running fewer tasks than they want (the migration, a
# one-off job, aside).
short_services() {
    on_manager service ls --format '{{.Name}} {{.Replicas}}' | sed 's/ (.*//' |
        awk '$1 != "flowforge_migrate" { split($2, r, "/"); if (r[1] != r[2]) print $1 }'
}

# Every replicated service at its replica count, the global proxy on every node, the
# migration done, and the entry point ready.
converged() {
    [ -z "$(short_services)" ] &&
        on_manager service ps flowforge_migrate --format '{{.CurrentState}}' | grep -q '^Complete' &&
        curl -fsS -o /dev/null --cacert "$secrets/ca.pem" "https://localhost:$https_port/ready"
}

# What a stack that did not converge was doing: each short service's tasks (and the
# migration's) with their errors, and the room each node had left.
convergence_report() {
    local name node
    on_manager service ls --format '{{.Name}} {{.Replicas}}' >&2
    for name in $(short_services) flowforge_migrate; do
        on_manager service ps --no-trunc --format '  {{.Name}} on {{.Node}}: {{.DesiredState}}, {{.CurrentState}} {{.Error}}' "$name" | head -8 >&2
    done
    for node in "${nodes[@]}"; do
        echo "  $node: $(docker exec "$node" df -h --output=avail,pcent /var/lib/docker | tail -1)" >&2
    done
    curl -sS -o /dev/null -w '  /ready: %{http_code}\n' --cacert "$secrets/ca.pem" "https://localhost:$https_port/ready" >&2 || true
}

up() {
    ensure_engine
    command -v curl >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null; }
    local started=$SECONDS tag
    tag=$(commit_tag)
    mkdir -p "$secrets" "$work"
    deploy/compose/init-secrets.sh "$secrets" >/dev/null
    # Swarm refuses an empty secret; a lone newline reads as unset all the same.
    [ -s "$secrets/webhook_secrets_key_previous" ] || echo >"$secrets/webhook_secrets_key_previous"
    build_images
    start_registry
    push_images "$tag"
    start_nodes
    form_swarm
    deploy "$tag"
    wait_until 600 "the stack to converge" converged || { convergence_report; return 1; }
    log "FlowForge on three Swarm nodes at :$tag, ready after $((SECONDS - started)) s: https://localhost:$https_port"
}

# roll TAG: api, worker and web to the images pushed as TAG, one task at a time (the
# stack's update_config). Only these: a new tag on the others' unchanged images would
# restart PostgreSQL, Redis and the proxies for nothing.
roll() {
    local service
    for service in api worker web; do
        on_manager service update --detach --image "registry:5000/flowforge-$service:$1" "flowforge_$service" >/dev/null
    done
    log "rolling api, worker and web to :$1 (scripts/swarm.sh status shows the progress)"
}

update() {
    local tag
    tag=$(commit_tag)
    build_images
    push_images "$tag"
    roll "$tag"
}

# job ARGS...: `flowforge ARGS` once, like Compose's `run --rm migrate`: on the manager, on
# the stack's data network, with the owner's URL. Swarm gives secrets to services only,
# so this one reads them from the manager's copy, as root in a container with no
# capabilities.
job() {
    local tag
    tag=$(on_manager service inspect flowforge_migrate -f '{{.Spec.TaskTemplate.ContainerSpec.Image}}')
    # shellcheck disable=SC2016 # expanded by the manager's shell
    docker exec "$manager" sh -c 'exec docker run --rm -i --network flowforge_data --user 0:0 --cap-drop ALL \
        --read-only -v /secrets/ca.pem:/run/secrets/ca.pem:ro -v /work:/work \
        -e FLOWFORGE_PROFILE=prod -e FLOWFORGE_LOG_FORMAT=json \
        -e FLOWFORGE_DATABASE_URL="$(cat /secrets/database_url_owner)" "$0" "$@"' "$tag" "$@"
}

# search ID: every stored log line with this request or trace id, from every node's log
# store, each prefixed with its node. A node that is down is said so, and skipped.
search() {
    local node collector
    for node in "${nodes[@]}"; do
        collector=$(docker exec "$node" docker ps -q -f label=com.docker.swarm.service.name=flowforge_log-collector 2>/dev/null || true)
        if [ -z "$collector" ]; then
            log "${node#"$prefix"-}: no log store reachable"
            continue
        fi
        docker exec "$node" docker exec "$collector" sh -c 'grep -hF -- "$1" /var/log/flowforge/*.jsonl' search "$1" |
            sed "s/^/${node#"$prefix"-} /" || true
    done
}

down() {
    docker rm -f "${nodes[@]}" "$prefix-registry" >/dev/null 2>&1 || true
    docker volume rm "${nodes[@]}" "$prefix-registry" >/dev/null 2>&1 || true
    docker network rm "$network" >/dev/null 2>&1 || true
    log "swarm removed (secrets kept in $secrets)"
}

case "${1:-}" in
up) up ;;
update) update ;;
roll) roll "${2:?usage: scripts/swarm.sh roll TAG}" ;;
status) on_manager node ls && on_manager service ls ;;
token) job token create --user admin --role admin ;;
job) shift && job "$@" ;;
search) [ -n "${2:-}" ] || { echo "usage: scripts/swarm.sh search REQUEST_OR_TRACE_ID" >&2; exit 2; }; search "$2" ;;
down) down ;;
docker) shift && on_manager "$@" ;;
*) sed -n '2,/^[^#]/{/^#/p}' "$0" >&2; exit 2 ;;
esac
