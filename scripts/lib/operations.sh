# What scripts/stack.sh does to the stack (sourced by it, after engine.sh). Every wait
# is bounded.
# shellcheck shell=bash disable=SC2154

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

# rolling_update SERVICE [--keep-current]: replaces SERVICE's containers with ones on the
# image the Compose files name (its tag is FLOWFORGE_TAG), one at a time: start a new
# container, wait until it is healthy, then retire an old one. With --keep-current, those
# already on that image stay (a rotation replaces them all: they read secrets at start).
# The service never runs fewer healthy replicas than it had.
rolling_update() {
    local service=$1 old c new wanted=""
    [ "${2:-}" = --keep-current ] && wanted=$(docker image inspect -f '{{.Id}}' "$(service_image "$service")")
    mapfile -t old < <(compose ps -q "$service")
    for c in "${old[@]}"; do
        [ "$(docker inspect -f '{{.Image}}' "$c")" = "$wanted" ] && continue
        new=$(start_replica "$service") || return 1
        retire "$c"
        log "$service: $(docker inspect -f '{{.Name}}' "$new" | tr -d /) replaced ${c:0:12}"
    done
}

# The image the Compose files name for SERVICE.
service_image() { service_images | awk -v service="$1" '$1 == service { print $2 }'; }

# service_images: "SERVICE IMAGE" for every service, from one rendering of the Compose files.
service_images() {
    compose config --format json |
        python3 -c $'import json, sys\nfor name, service in json.load(sys.stdin)["services"].items(): print(name, service["image"])'
}

# start_replica SERVICE: one more container of SERVICE, on the image the Compose files
# name now; prints its id once it is healthy. One that does not become healthy is removed
# (the others still serve) and the call fails.
start_replica() {
    local service=$1 before new="" fresh state deadline
    mapfile -t before < <(compose ps -q "$service")
    compose up -d --no-deps --no-recreate --scale "$service=$((${#before[@]} + 1))" "$service" >/dev/null
    for fresh in $(compose ps -q "$service"); do
        [[ " ${before[*]} " == *" $fresh "* ]] || new=$fresh
    done
    [ -n "$new" ] || { echo "no new $service container started" >&2; return 1; }
    deadline=$((SECONDS + 120))
    until [ "$(docker inspect -f '{{.State.Health.Status}}' "$new")" = healthy ]; do
        state=$(docker inspect -f '{{.State.Status}} {{.State.Health.Status}}' "$new")
        if [ $SECONDS -ge $deadline ] || [[ $state == exited* || $state == *unhealthy ]]; then
            echo "the new $service container $new did not become healthy ($state); the old ones still serve" >&2
            docker rm -f "$new" >/dev/null
            return 1
        fi
        sleep 1
    done
    echo "$new"
}

# retire CONTAINER: SIGTERM, then gone (the api reports not-ready and drains; a worker
# finishes or releases its tasks).
retire() {
    docker stop -t 30 "$1" >/dev/null
    docker rm "$1" >/dev/null
}

# psql as the database superuser, over the server's socket (peer authentication: no
# password anywhere), with bare values out.
db_psql() { compose exec -T "$(db_server)" psql -h /run/postgresql -U postgres -d flowforge -XAtq "$@"; }

# The PostgreSQL cluster's members (deploy/compose/ha.yaml), one per line; none for the
# single server.
cluster_members() { compose config --services | grep -E '^pg[0-9]+$' || true; }

# cluster_status: Patroni's view of the members (JSON), from the first member that answers
# (one cut off from etcd is given 10 s).
cluster_status() {
    local member
    for member in $(cluster_members); do
        timeout 10 docker compose exec -T "$member" patronictl -c /tmp/patroni.yml list -f json 2>/dev/null && return
    done
    echo "no member of the cluster answers" >&2
    return 1
}

# The container that takes the database's writes: the cluster's leader, or the server.
db_server() {
    if [ -z "$(cluster_members)" ]; then
        echo postgres
    else
        cluster_status | jq -r '.[] | select(.Role == "Leader") | .Member' | grep .
    fi
}

# cluster_whole: a leader and every other member streaming from it, on its timeline.
cluster_whole() {
    cluster_status | jq -e --argjson n "$(cluster_members | wc -l)" 'length == $n
        and (map(select(.Role == "Leader")) | length == 1)
        and all(.[]; .State == "running" or .State == "streaming")
        and (map(.TL) | unique | length == 1)' >/dev/null
}

# Rewrites a secret file in place (same inode: bind mounts of it stay valid), readable by
# the containers' non-root users like every file init-secrets.sh writes. Builtins only:
# no secret on any process's command line.
write_secret() { printf '%s' "$2" >"$secrets/$1" && chmod 644 "$secrets/$1"; }

# with_login URL_SECRET ROLE PASSWORD: that connection string, logging in as ROLE.
with_login() { local url; url=$(<"$secrets/$1"); printf 'postgres://%s:%s@%s' "$2" "$3" "${url#*@}"; }

# A one-shot job on the running stack. --no-deps: Compose v2 and later first bring every
# dependency up to date, so a job run under a new FLOWFORGE_TAG recreated the database
# beneath the serving replicas.
job() { compose run --rm --no-deps -T "$@"; }

# flowforge in the one-shot roles container: the database superuser over its socket only.
roles_job() { job roles "$@"; }

# Rolling updates during a rotation keep the images the stack runs now, whatever
# FLOWFORGE_TAG says in this shell.
running_tag() {
    local c
    c=$(compose ps -q api | head -n 1)
    [ -n "$c" ] || { echo "the stack is not running" >&2; return 1; }
    docker inspect -f '{{.Config.Image}}' "$c" | sed 's/.*://'
}

# The database password, with no downtime: the app has two login roles with the same
# privileges, and uses one at a time. The idle one gets a new password, the services are
# replaced one by one with the new connection string, then the old role loses its login.
# The files first: if the change is interrupted, running rotate again sets them anew.
rotate_database() {
    local next=flowforge_app password
    grep -q '^postgres://flowforge_app:' "$secrets/database_url_app" && next=flowforge_app_alt
    log "database: $next gets a new password"
    write_secret database_url_app "$(with_login database_url_app "$next" "$(openssl rand -hex 32)")"
    roles_job roles sync --keep-other-app-role
    rolling_update api
    rolling_update worker
    # The owner role only runs migrations (a one-shot job): a new password is enough.
    password=$(openssl rand -hex 32)
    write_secret database_url_owner "$(with_login database_url_owner flowforge_owner "$password")"
    write_secret postgres_owner_password "$password"
    roles_job roles sync
    log "database: api and worker connect as $next; the owner role (migrations) has a new password"
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
    job migrate reseal-webhook-secrets
    rolling_update api
    rolling_update worker
    log "webhooks: secrets sealed with the new key; retire-webhook-key drops the previous one"
}

# Refused while any secret is still sealed with a key other than the current one.
retire_webhook_key() {
    job migrate reseal-webhook-secrets
    write_secret webhook_secrets_key_previous ""
    rolling_update api
    rolling_update worker
    log "webhooks: the previous deployment key is gone"
}

# Everything `docker compose build` and `docker compose up` need that Compose can't make:
# the engine and Compose itself, the base images the Dockerfiles start FROM, and secrets.
prepare() {
    ensure_engine
    base_images
    deploy/compose/init-secrets.sh "$secrets" >/dev/null
}

up_and_wait() {
    local started=$SECONDS
    prepare
    build
    [ "${1:-}" = dev ] && dev_build
    log "starting the stack"
    # Created first, so the internal networks are closed to the host before anything runs.
    compose create --no-build --remove-orphans >/dev/null
    isolate_internal_networks
    compose up -d --no-build --wait --wait-timeout 180
    log "all services healthy in $((SECONDS - started)) s"
}

# Stops and removes the containers; with --purge the data and backup volumes too.
# Docker 20.10 sometimes keeps a stale endpoint on a network after its containers are
# gone (moby/moby#43286): the network then can't be removed until dockerd restarts.
# Retry, then say so; the containers, volumes and firewall rules still go.
take_down() {
    local args=(down --remove-orphans) project=label=com.docker.compose.project=$COMPOSE_PROJECT_NAME net
    [ "${1:-}" = --purge ] && args+=(--volumes)
    for _ in 1 2 3; do
        compose "${args[@]}" && break
        sleep 2
    done
    if [ "${1:-}" = --purge ]; then
        docker volume ls -q --filter "$project" | xargs -r docker volume rm >/dev/null
    fi
    for net in $(docker network ls -q --filter "$project"); do
        if [ -n "$(docker network inspect -f '{{range .Containers}}{{.Name}} {{end}}' "$net")" ]; then
            echo "network $net still has containers attached" >&2
            return 1
        fi
        log "warning: Docker kept network $(docker network inspect -f '{{.Name}}' "$net") with a stale endpoint" \
            "(moby/moby#43286); the next 'up' reuses it, a dockerd restart removes it"
    done
    release_isolation
}

# Rolling update of api, worker and web to the images FLOWFORGE_TAG names, after the
# migrations (which only add: the running version keeps working).
update_services() {
    local started=$SECONDS service
    build
    # A new version may read secrets the previous one did not have.
    deploy/compose/init-secrets.sh "$secrets" >/dev/null
    log "migrating to ${FLOWFORGE_TAG:-dev}"
    job migrate >/dev/null
    for service in api worker web; do
        rolling_update "$service"
    done
    log "updated to ${FLOWFORGE_TAG:-dev} in $((SECONDS - started)) s"
}

# restore_database [--to TIME]: the database files from the backups, with every client
# stopped; the database replays WAL to the target when it starts.
restore_database() {
    local started=$SECONDS
    [ -z "$(cluster_members)" ] || { restore_cluster "$@"; return; }
    log "stopping the database and every client of it"
    compose stop api worker backup postgres-exporter >/dev/null
    compose stop postgres >/dev/null
    job restore restore "$@"
    log "starting the database: it replays WAL to the target, then opens for writes"
    compose up -d --no-deps postgres >/dev/null
    # Then a checkpoint, and the login roles: a restore to a moment before a password
    # rotation brings the old passwords back.
    roles_job finish-restore
    # The cache may hold tasks the restore took back: Redis keeps nothing on disk, so a
    # restart empties it.
    compose restart redis >/dev/null
    compose up -d --no-deps backup api worker postgres-exporter >/dev/null
    wait_healthy 180
    log "restored and serving in $((SECONDS - started)) s"
}

# restore_cluster [--to TIME]: a new cluster from the backup repository. With every client
# stopped, the members are removed with their data and etcd forgets the old cluster; they
# start again with FLOWFORGE_BOOTSTRAP=restore: the first to take the lead restores the
# newest backup and replays WAL to the target, the others copy it. Then each member is
# recreated with the usual settings, one at a time, so that none keeps the restore's.
restore_cluster() {
    local started=$SECONDS members member volume leader
    case "${1:-}" in
    "") ;;
    --to)
        export FLOWFORGE_RESTORE_TO=${2:?usage: scripts/stack.sh restore [--to TIME]}
        [ "$(date -d "$FLOWFORGE_RESTORE_TO" +%s)" -le "$(date +%s)" ] ||
            { echo "--to $FLOWFORGE_RESTORE_TO is in the future" >&2; return 2; }
        ;;
    *) echo "usage: scripts/stack.sh restore [--to TIME]" >&2; return 2 ;;
    esac
    members=$(cluster_members)
    if [ -z "$(compose ps -q etcd1 2>/dev/null)" ]; then
        # A host without the stack (one that replaces a lost host): with the secrets put
        # back and the repository elsewhere (S3), the stack is created but not started,
        # the internal networks closed first as `up` does, and a new etcd started.
        log "no cluster on this host: creating the stack, starting etcd"
        compose create --no-build --remove-orphans >/dev/null
        isolate_internal_networks
        compose up -d --no-deps --wait etcd1 etcd2 etcd3 >/dev/null
    fi
    log "stopping the cluster and every client of it"
    compose stop api worker postgres-exporter >/dev/null
    # The backup service goes too: even stopped, it holds the members' data volumes.
    # shellcheck disable=SC2086 # one member per word
    compose rm -f -s backup $members >/dev/null
    log "removing the old cluster: its state in etcd, every member's data"
    compose exec -T etcd1 etcdctl del --prefix /service/flowforge/ >/dev/null
    for member in $members; do
        volume=$(docker volume ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" \
            --filter "label=com.docker.compose.volume=pgdata${member#pg}")
        [ -z "$volume" ] || docker volume rm "$volume" >/dev/null
    done
    log "starting the members: one restores the newest backup and replays WAL, the others copy it"
    # shellcheck disable=SC2086
    FLOWFORGE_BOOTSTRAP=restore compose up -d --no-deps $members >/dev/null
    wait_until 600 "a leader with the restored data" db_server
    leader=$(db_server)
    # A checkpoint, and the login roles: a restore to a moment before a password rotation
    # brings the old passwords back. As the superuser, over the leader's socket.
    job -e "FLOWFORGE_DATABASE_URL=postgres:///flowforge?host=/run/postgresql/$leader&user=postgres" roles finish-restore
    wait_until 300 "the other members copying the leader" cluster_whole
    unset FLOWFORGE_RESTORE_TO
    compose restart redis >/dev/null
    # The clients stopped above, and on a new host everything else too; the members as
    # they run now (roll_members recreates them).
    compose up -d --no-recreate >/dev/null
    wait_healthy 180
    log "restored and serving in $((SECONDS - started)) s"
    # Then, while serving, the members lose the restore's settings: a rolling restart
    # whose switchover stops writes for a few seconds (503 with Retry-After).
    roll_members
    log "members recreated with their usual settings after $((SECONDS - started)) s"
}

# roll_members: each member recreated from the current configuration, one at a time: the
# replicas, then the leader once a switchover has handed its role to a synchronous standby.
roll_members() {
    local member leader standby
    leader=$(db_server)
    for member in $(cluster_members); do
        [ "$member" != "$leader" ] || continue
        log "recreating $member"
        compose up -d --no-deps --force-recreate "$member" >/dev/null
        wait_until 300 "$member back as a replica" cluster_whole
    done
    standby=$(cluster_status | jq -r '[.[] | select(.Role == "Sync Standby") | .Member][0] // empty')
    log "switching over from $leader to $standby, then recreating $leader"
    compose exec -T "$leader" patronictl -c /tmp/patroni.yml switchover --leader "$leader" --candidate "$standby" --force >/dev/null
    wait_until 60 "$standby leading" leads "$standby"
    compose up -d --no-deps --force-recreate "$leader" >/dev/null
    wait_until 300 "$leader back as a replica" cluster_whole
}
leads() { [ "$(db_server)" = "$1" ]; }

# Every stored log line with this id: day files in date order, so in time order. ($1
# expands in the container's shell, not here.)
search_logs() {
    # shellcheck disable=SC2016
    compose exec -T log-collector sh -c 'grep -hF -- "$1" /var/log/flowforge/*.jsonl' search "$1"
}

# rotate database|webhook-key|retire-webhook-key, keeping the images the stack runs now.
rotate() {
    deploy/compose/init-secrets.sh "$secrets" >/dev/null
    FLOWFORGE_TAG=$(running_tag)
    export FLOWFORGE_TAG
    case "${1:-}" in
    database) rotate_database ;;
    webhook-key) rotate_webhook_key ;;
    retire-webhook-key) retire_webhook_key ;;
    *) echo "usage: scripts/stack.sh rotate database|webhook-key|retire-webhook-key" >&2; return 2 ;;
    esac
}
