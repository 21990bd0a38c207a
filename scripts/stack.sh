#!/usr/bin/env bash
# The whole FlowForge stack in containers, on one host.
#   scripts/stack.sh up       install/start the engine if needed, build, start, wait until healthy
#   scripts/stack.sh build    only build the images (base images too, if missing)
#   scripts/stack.sh dev      the same as up, with the Rust services running binaries built on this host
#   scripts/stack.sh reload   after a code change (dev): rebuild those binaries, restart their containers
#   scripts/stack.sh down     stop and remove the containers (data and backup volumes kept; --purge drops them)
#   scripts/stack.sh status   what runs, and its health
#   scripts/stack.sh logs [SERVICE]
#   scripts/stack.sh search ID  every stored log line, of every service, with this request or trace id
#   scripts/stack.sh token    create an admin API token (printed once)
#   scripts/stack.sh backup [--type full|diff|incr]   take a backup now (default full)
#   scripts/stack.sh update   rolling update of api, worker and web to the images FLOWFORGE_TAG names (also: rollback)
#   scripts/stack.sh restore [--to TIME]   restore the database (to an RFC 3339 moment, else all archived WAL)
#   scripts/stack.sh rotate database|webhook-key|retire-webhook-key   rotate a secret with no downtime
#   scripts/stack.sh psql ARGS...          psql (-XAtq) as the database superuser on the flowforge database
#   scripts/stack.sh compose ARGS...       any Compose command, on this stack's project and files
#   scripts/stack.sh docker-build ARGS...  docker build with BuildKit (the CLI that has it)
set -euo pipefail
cd "$(dirname "$0")/.."
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-flowforge}
# Where the stack's secrets live (compose.yaml reads the same variable).
secrets=${FLOWFORGE_SECRETS:-secrets}

log() { printf '==> %s\n' "$*" >&2; }

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

# Docker's internal networks stop forwarding, but a container on one can still connect to
# the host's own addresses (and so to anything listening there, published ports
# included). Drop everything that enters the host from the project's internal bridges.
isolate_internal_networks() {
    if [ "$(id -u)" -ne 0 ] || ! command -v iptables >/dev/null; then
        log "warning: not root or no iptables: internal networks can still reach this host"
        return
    fi
    release_isolation
    local net id
    for net in $(docker network ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME"); do
        [ "$(docker network inspect -f '{{.Internal}}' "$net")" = true ] || continue
        id=$(docker network inspect -f '{{.Id}}' "$net")
        iptables -I INPUT -i "br-${id:0:12}" -m comment --comment "flowforge:$COMPOSE_PROJECT_NAME" -j DROP
    done
}

release_isolation() {
    command -v iptables >/dev/null && [ "$(id -u)" -eq 0 ] || return 0
    local rule
    { iptables -S INPUT | grep -E -- "--comment \"?flowforge:$COMPOSE_PROJECT_NAME\"? " || true; } |
        sed 's/^-A /-D /; s/"//g' | while read -r -a rule; do iptables "${rule[@]}"; done
}

# Waits until every running container of the project is healthy and the one-shot jobs
# have exited 0.
wait_healthy() {
    local deadline=$((SECONDS + ${1:-180})) pending
    while [ $SECONDS -lt $deadline ]; do
        pending=$(docker ps -a --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" \
            --format '{{.Names}} {{.Status}}' | grep -vE '\(healthy\)|Exited \(0\)' || true)
        [ -z "$pending" ] && return 0
        sleep 1
    done
    echo "not healthy after ${1:-180}s:" >&2
    echo "$pending" >&2
    return 1
}

# Replaces SERVICE's containers with ones on the image FLOWFORGE_TAG names, one at a
# time: start a new container, wait until it is healthy, then stop an old one (SIGTERM:
# the api reports not-ready and drains; a worker finishes or releases its tasks). The
# service never runs fewer healthy replicas than it had.
rolling_update() {
    local service=$1 old known c new fresh state deadline
    mapfile -t old < <(compose ps -q "$service")
    known=" ${old[*]} "
    for c in "${old[@]}"; do
        compose up -d --no-deps --no-recreate --scale "$service=$((${#old[@]} + 1))" "$service" >/dev/null
        new=""
        for fresh in $(compose ps -q "$service"); do
            [[ $known == *" $fresh "* ]] || new=$fresh
        done
        [ -n "$new" ] || { echo "no new $service container started" >&2; return 1; }
        known+="$new "
        deadline=$((SECONDS + 120))
        until [ "$(docker inspect -f '{{.State.Health.Status}}' "$new")" = healthy ]; do
            state=$(docker inspect -f '{{.State.Status}}' "$new")
            if [ $SECONDS -ge $deadline ] || [ "$state" = exited ]; then
                echo "the new $service container $new did not become healthy ($state); the old ones still serve" >&2
                docker rm -f "$new" >/dev/null
                return 1
            fi
            sleep 1
        done
        docker stop -t 30 "$c" >/dev/null
        docker rm "$c" >/dev/null
        log "$service: $(docker inspect -f '{{.Name}}' "$new" | tr -d /) replaced ${c:0:12}"
    done
}

# psql as the database superuser, over the server's socket (peer authentication: no
# password anywhere), with bare values out.
db_psql() { compose exec -T postgres psql -h /run/postgresql -U postgres -d flowforge -XAtq "$@"; }
# SQL from standard input, stopping at the first error (so no password ever appears on a
# command line).
superuser_psql() { db_psql --set=ON_ERROR_STOP=1; }

# The role and password a connection string in ./secrets names (generated passwords are hex).
url_role() { sed -E 's|^postgres://([^:]+):.*|\1|' "$secrets/$1"; }
url_password() { sed -E 's|^postgres://[^:]+:([^@]+)@.*|\1|' "$secrets/$1"; }

# login_role ROLE PASSWORD: ROLE may log in, with PASSWORD. The app's second login role is
# created on first use: a member of flowforge_app, so it has exactly its privileges. The
# statement holds the password, so this session never logs statements, even failed ones.
login_role() {
    { printf '\\set role %s\n\\set pw %s\n' "$1" "$2"; cat <<'SQL'; } | superuser_psql >/dev/null
SET log_statement = 'none';
SET log_min_error_statement = 'panic';
SET password_encryption = 'scram-sha-256';
SELECT format('CREATE ROLE %I IN ROLE flowforge_app', :'role')
    WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" LOGIN PASSWORD :'pw';
SQL
}

# Rewrites a secret file in place (same inode: bind mounts of it stay valid), readable by
# the containers' non-root users like every file init-secrets.sh writes. Builtins only:
# no secret on any process's command line.
write_secret() { printf '%s' "$2" >"$secrets/$1" && chmod 644 "$secrets/$1"; }

# The other of the app's two login roles.
other_app_role() { if [ "$1" = flowforge_app ]; then echo flowforge_app_alt; else echo flowforge_app; fi; }

# no_login ROLE: ROLE (if it exists) may no longer log in, and its sessions end.
no_login() {
    { printf '\\set role %s\n' "$1"; cat <<'SQL'; } | superuser_psql >/dev/null
SELECT format('ALTER ROLE %I NOLOGIN PASSWORD NULL', rolname) FROM pg_roles WHERE rolname = :'role' \gexec
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = :'role';
SQL
}

# Rolling updates during a rotation keep the images the stack runs now, whatever
# FLOWFORGE_TAG says in this shell.
running_tag() {
    local c
    c=$(compose ps -q api | head -n 1)
    [ -n "$c" ] || { echo "the stack is not running" >&2; return 1; }
    docker inspect -f '{{.Config.Image}}' "$c" | sed 's/.*://'
}
# with_login URL_SECRET ROLE PASSWORD: that connection string, logging in as ROLE.
with_login() { local url; url=$(<"$secrets/$1"); printf 'postgres://%s:%s@%s' "$2" "$3" "${url#*@}"; }

# The database password, with no downtime: the app has two login roles with the same
# privileges, and uses one at a time. The idle one gets a new password, the services are
# replaced one by one with the new connection string, then the old role loses its login.
rotate_database() {
    local current next password
    current=$(url_role database_url_app)
    next=$(other_app_role "$current")
    password=$(openssl rand -hex 32)
    log "database: $next gets a new password; api and worker still connect as $current"
    login_role "$next" "$password"
    write_secret database_url_app "$(with_login database_url_app "$next" "$password")"
    rolling_update api
    rolling_update worker
    log "database: api and worker connect as $next; $current may no longer log in"
    no_login "$current"
    # The owner role only runs migrations (a one-shot job): a new password is enough. The
    # files first: if the change is interrupted, running rotate again sets them both anew.
    password=$(openssl rand -hex 32)
    write_secret database_url_owner "$(with_login database_url_owner flowforge_owner "$password")"
    write_secret postgres_owner_password "$password"
    login_role flowforge_owner "$password"
    log "database: the owner role (migrations) has a new password"
}

# The deployment's webhook key, which seals every user's signing secret: the current key
# becomes the previous one, every secret is resealed with the new key, and the services
# restart with both (a secret an old replica seals meanwhile is resealed at retirement).
rotate_webhook_key() {
    if [ -s "$secrets/webhook_secrets_key_previous" ]; then
        echo "a webhook key rotation is under way: retire-webhook-key first" >&2
        return 1
    fi
    write_secret webhook_secrets_key_previous "$(cat "$secrets/webhook_secrets_key")"
    write_secret webhook_secrets_key "$(openssl rand -hex 32)"
    compose run --rm -T migrate reseal-webhook-secrets
    rolling_update api
    rolling_update worker
    log "webhooks: secrets sealed with the new key; retire-webhook-key drops the previous one"
}

# Refused while any secret is still sealed with a key other than the current one.
retire_webhook_key() {
    compose run --rm -T migrate reseal-webhook-secrets
    write_secret webhook_secrets_key_previous ""
    rolling_update api
    rolling_update worker
    log "webhooks: the previous deployment key is gone"
}

up_and_wait() {
    local started=$SECONDS
    ensure_engine
    build
    [ "${1:-}" = dev ] && dev_build
    deploy/compose/init-secrets.sh "$secrets" >/dev/null
    log "starting the stack"
    compose up -d --no-build --remove-orphans
    isolate_internal_networks
    wait_healthy 180
    log "all services healthy in $((SECONDS - started)) s"
}

case "${1:-}" in
# The dev stack runs development builds and settings: reachable from this machine only.
dev | reload) export COMPOSE_FILE=compose.yaml:compose.dev.yaml FLOWFORGE_PUBLISH_ADDR=${FLOWFORGE_PUBLISH_ADDR:-127.0.0.1} ;;
esac
case "${1:-}" in
up | dev)
    up_and_wait "$1"
    cat <<MSG

FlowForge is up: https://localhost:${FLOWFORGE_HTTPS_PORT:-8443}
  (self-signed: trust $secrets/ca.pem, e.g. curl --cacert $secrets/ca.pem)
Create an admin token:  scripts/stack.sh token
Prometheus / Alertmanager: https://localhost:${FLOWFORGE_HTTPS_PORT:-8443}/prometheus/ and /alertmanager/
  (user operator, password in $secrets/operator_password)
Status / logs / stop:    scripts/stack.sh status | logs [service] | down
MSG
    ;;
build)
    ensure_engine
    build
    ;;
reload)
    dev_build
    compose restart migrate api worker web
    wait_healthy 120
    log "reloaded"
    ;;
down)
    purge=false
    [ "${2:-}" = --purge ] && purge=true
    args=(down --remove-orphans)
    $purge && args+=(--volumes)
    # Docker 20.10 sometimes keeps a stale endpoint on a network after its containers are
    # gone (moby/moby#43286): the network then can't be removed until dockerd restarts.
    # Retry, then say so; the containers, volumes and firewall rules still go.
    for _ in 1 2 3; do
        compose "${args[@]}" && break
        sleep 2
    done
    project=label=com.docker.compose.project=$COMPOSE_PROJECT_NAME
    if $purge; then
        docker volume ls -q --filter "$project" | xargs -r docker volume rm >/dev/null
    fi
    for net in $(docker network ls -q --filter "$project"); do
        if [ -n "$(docker network inspect -f '{{range .Containers}}{{.Name}} {{end}}' "$net")" ]; then
            echo "network $net still has containers attached" >&2
            exit 1
        fi
        log "warning: Docker kept network $(docker network inspect -f '{{.Name}}' "$net") with a stale endpoint" \
            "(moby/moby#43286); the next 'up' reuses it, a dockerd restart removes it"
    done
    release_isolation
    ;;
status) compose ps ;;
logs) shift; compose logs -f --tail=100 "$@" ;;
search)
    [ -n "${2:-}" ] || { echo "usage: scripts/stack.sh search REQUEST_OR_TRACE_ID" >&2; exit 2; }
    # Day files in date order, so the lines come out in time order. ($1 expands in the
    # container's shell, not here.)
    # shellcheck disable=SC2016
    compose exec -T log-collector sh -c 'grep -hF -- "$1" /var/log/flowforge/*.jsonl' search "$2"
    ;;
token) compose run --rm -T migrate token create --user admin --role admin ;;
psql) shift; db_psql "$@" ;;
compose) shift; compose "$@" ;;
backup) shift; compose exec -T backup flowforge backup run "$@" ;;
update)
    started=$SECONDS
    build
    # A new version may read secrets the previous one did not have.
    deploy/compose/init-secrets.sh "$secrets" >/dev/null
    log "migrating to ${FLOWFORGE_TAG:-dev} (migrations only add: the running version keeps working)"
    compose run --rm -T migrate >/dev/null
    for service in api worker web; do
        rolling_update "$service"
    done
    log "updated to ${FLOWFORGE_TAG:-dev} in $((SECONDS - started)) s"
    ;;
restore)
    shift
    started=$SECONDS
    log "stopping the database and every client of it"
    compose stop api worker backup postgres-exporter >/dev/null
    compose stop postgres >/dev/null
    compose run --rm -T restore restore "$@"
    log "starting the database: it replays WAL to the target, then opens for writes"
    compose up -d --no-deps postgres >/dev/null
    recovered() {
        [ "$(db_psql -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]
    }
    deadline=$((SECONDS + 300))
    until recovered; do
        [ $SECONDS -lt $deadline ] || { echo "the database did not finish recovery in 300 s" >&2; exit 1; }
        sleep 1
    done
    # PostgreSQL 15 plans its checkpointer's next wake-up during recovery, when
    # archive_timeout does not apply, and then sleeps until checkpoint_timeout (5 min):
    # writes in those minutes would wait for a full segment to be archived. A checkpoint
    # now wakes it, and archive_timeout holds from the first write.
    echo CHECKPOINT | superuser_psql
    # A restore to a moment before a password rotation brings the old passwords back:
    # the roles get the ones the services hold now.
    login_role "$(url_role database_url_app)" "$(url_password database_url_app)"
    no_login "$(other_app_role "$(url_role database_url_app)")"
    login_role flowforge_owner "$(url_password database_url_owner)"
    # The cache may hold tasks the restore took back: Redis keeps nothing on disk, so a
    # restart empties it.
    compose restart redis >/dev/null
    compose up -d --no-deps backup api worker postgres-exporter >/dev/null
    wait_healthy 180
    log "restored and serving in $((SECONDS - started)) s"
    ;;
rotate)
    deploy/compose/init-secrets.sh "$secrets" >/dev/null
    FLOWFORGE_TAG=$(running_tag)
    export FLOWFORGE_TAG
    case "${2:-}" in
    database) rotate_database ;;
    webhook-key) rotate_webhook_key ;;
    retire-webhook-key) retire_webhook_key ;;
    *) echo "usage: scripts/stack.sh rotate database|webhook-key|retire-webhook-key" >&2; exit 2 ;;
    esac
    ;;
docker-build) shift; DOCKER_BUILDKIT=1 "$(buildkit_docker)" build "$@" ;;
*)
    sed -n '2,/^[^#]/{/^#/p}' "$0" >&2
    exit 2
    ;;
esac
