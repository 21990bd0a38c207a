#!/usr/bin/env bash
# The PostgreSQL cluster (deploy/compose/ha.yaml: three Patroni members, etcd, HAProxy in
# front) under load from `flowforge load`, a Compose project of its own on this machine:
#   1. the leader's container killed (SIGKILL): a replica is promoted;
#   2. the old leader started again, still under load: it rejoins as a replica by itself
#      (pg_rewind);
#   3. a planned switchover (patronictl);
#   4. a replica killed: writes go on;
#   5. the leader cut off from the network: it stops taking writes before another member
#      is promoted (no split brain), and rejoins as a replica once reconnected;
#   6. an etcd member killed: clients see nothing; then two killed, so etcd has no quorum:
#      the leader keeps leading (Patroni's failsafe mode) and clients still see nothing;
#   7. both standbys killed: a creation is refused (503) rather than acknowledged on one
#      server (FLOWFORGE_SYNC_STRICT's default).
#   8. the whole host lost (every container and volume of the stack): a new cluster from
#      the backup repository alone, and every task acknowledged before is there.
# The backup repository is S3 (deploy/compose/backup-s3.yaml, ha-backup-s3.yaml): moto's
# S3 server (PyPI) in a container outside the stack, on a network of its own, with a
# certificate the members and the backup service are given to trust (tests/ha/objects.yaml).
# Backups: the backup service's first full one, then an incremental one with the cluster
# whole and another after the failover, each copied from a standby (pgBackRest also waits
# for the leader of the time to archive the WAL it needs).
# Each reports requests, failed, told to retry (503 + Retry-After), acknowledged, lost,
# completed twice, and the longest time without an acknowledged write.
# FLOWFORGE_HA_KEEP=1 leaves the stack up afterwards.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
export COMPOSE_PROJECT_NAME=flowforge-ha \
    COMPOSE_FILE=compose.yaml:deploy/compose/ha.yaml:deploy/compose/backup-s3.yaml:deploy/compose/ha-backup-s3.yaml:tests/ha/objects.yaml
FLOWFORGE_SECRETS=$(realpath -m "${FLOWFORGE_HA_SECRETS:-.run/ha/secrets}")
export FLOWFORGE_SECRETS FLOWFORGE_HTTPS_PORT=${FLOWFORGE_HA_HTTPS_PORT:-8743} \
    FLOWFORGE_HTTP_PORT=${FLOWFORGE_HA_HTTP_PORT:-8380} FLOWFORGE_LOG_PORT=${FLOWFORGE_HA_LOG_PORT:-5814}
# The loads of successive tests fall within one rate-limit minute of the same user.
export FLOWFORGE_RATE_LIMIT_PER_MINUTE=${FLOWFORGE_RATE_LIMIT_PER_MINUTE:-100000}
work=$(realpath -m "${FLOWFORGE_HA_WORK:-.run/ha/work}")
# The S3 server: its network and certificate (tests/ha/objects.yaml), and the bucket.
objects=flowforge-ha-objects
moto=$(realpath -m .run/ha/moto)
export FLOWFORGE_HA_OBJECTS_NETWORK=$objects FLOWFORGE_HA_OBJECTS_CA=$work/objects/objects.pem \
    FLOWFORGE_BACKUP_S3_BUCKET=flowforge-ha FLOWFORGE_BACKUP_S3_ENDPOINT=objects \
    FLOWFORGE_BACKUP_S3_REGION=us-east-1 FLOWFORGE_BACKUP_S3_URI_STYLE=path
cli_image=flowforge-cli:${FLOWFORGE_TAG:-dev}
url=https://localhost:$FLOWFORGE_HTTPS_PORT
stack=scripts/stack.sh
mkdir -p "$work"
# shellcheck source=tests/lib/checks.sh
source tests/lib/checks.sh
# shellcheck source=scripts/lib/engine.sh
source scripts/lib/engine.sh
# shellcheck source=scripts/lib/operations.sh
source scripts/lib/operations.sh

# cluster_status, cluster_whole, db_server (the leader): scripts/lib/operations.sh.
# role ROLE: the members in that role (Leader, Sync Standby, Replica), one per line.
role() { cluster_status | jq -r --arg r "$1" '.[] | select(.Role == $r) | .Member'; }
leader() { db_server 2>/dev/null; }
leader_timeline() { cluster_status | jq -r '.[] | select(.Role == "Leader") | .TL'; }
show_cluster() { cluster_status | jq -r '.[] | "     \(.Member): \(.Role), \(.State), timeline \(.TL)"'; }

verdict() {
    $stack compose run --rm --no-deps -T -v "$work:/load:ro" migrate drill verdict --ids "/load/$1.ids" \
        --summary "/load/$1.json" --json 2>/dev/null | tail -1
}

# outage NAME: the longest time the load went without an acknowledged write, in seconds.
outage() { jq -r '.longest_write_gap.seconds // "none" | if type == "number" then (. * 10 | round / 10) else . end' "$work/$1.json"; }

# under_load NAME WHAT COMMAND...: COMMAND 5 s into a 60 s load, then the load's figures
# and checks: no request failed (503s with Retry-After aside), every acknowledged task
# completed once.
under_load() {
    local name=$1 what=$2
    shift 2
    load "$name" 60
    sleep 5
    "$@"
    wait
    v=$(verdict "$name")
    report "$what" "$v"
    echo "     $what: longest time without an acknowledged write: $(outage "$name") s"
}

kill_leader() {
    old_leader=$(leader)
    kill_service "$old_leader"
    wait_until 60 "a new leader" new_leader
}

# kill_leader_and_restart: the leader killed, then, once another leads, started again
# (still under load): Patroni rewinds it into a replica of the new leader.
kill_leader_and_restart() {
    kill_leader || return
    start_service "$old_leader"
    local started=$SECONDS
    rejoined=false
    wait_until 120 "the old leader to rejoin" cluster_whole && rejoined=true
    rejoin_seconds=$((SECONDS - started))
}
new_leader() { local l; l=$(leader) && [ -n "$l" ] && [ "$l" != "$old_leader" ]; }
compose_container() { $stack compose ps -a -q "$1"; }
switchover() {
    $stack compose exec -T "$1" patronictl -c /tmp/patroni.yml switchover --leader "$1" --candidate "$2" --force \
        >"$work/switchover.log" 2>&1
}
# kill_service SERVICE...: each one's container killed (SIGKILL); start_service starts them again.
kill_service() {
    local service
    for service in "$@"; do docker kill -s KILL "$(compose_container "$service")" >/dev/null; done
}
start_service() {
    local service
    for service in "$@"; do docker start "$(compose_container "$service")" >/dev/null; done
}

# partition_leader: the leader's container disconnected from its network; when another
# member has been promoted, whether the old leader had already stopped taking writes
# (read-only, or its server stopped), asked over its own socket.
partition_leader() {
    old_leader=$(leader)
    docker network disconnect "${COMPOSE_PROJECT_NAME}_data" "$(compose_container "$old_leader")"
    wait_until 60 "a new leader" new_leader
    old_read_only=$($stack compose exec -T "$old_leader" psql -XAtq -h /run/postgresql -U postgres -d flowforge \
        -c "SELECT pg_is_in_recovery()" 2>/dev/null) || old_read_only=$(server_state "$old_leader")
}
# server_state MEMBER: "stopped" when pg_isready finds no server on the member's socket.
server_state() {
    $stack compose exec -T "$1" pg_isready -q -h /run/postgresql
    case $? in 2) echo stopped ;; 0) echo accepting ;; 1) echo starting ;; *) echo unknown ;; esac
}

first_backup() {
    $stack compose exec -T backup pgbackrest info --output=json 2>/dev/null | jq -e '.[0].backup | length > 0' >/dev/null
}

# backup_from_standby: true when an incremental backup succeeds and pgBackRest copied the
# files from a standby (its log says it waited for the standby's replay).
backup_from_standby() {
    local log
    log=$work/backup-$((++backups)).log
    $stack compose exec -T backup pgbackrest --log-level-console=info backup --type=incr >"$log" 2>&1 \
        && grep -q "replay on the standby reached" "$log" && echo true
}
backups=0

run_tests() {
    local v old_leader replica started ok
    $stack token >"$work/token" 2>/dev/null
    cp "$FLOWFORGE_SECRETS/ca.pem" "$work/ca.pem"
    chmod 644 "$work/ca.pem" "$work/token"
    $stack compose run --rm --no-deps -T migrate drill counter install >/dev/null 2>&1
    show_cluster
    ok=false && wait_until 60 "Prometheus scraping the members and etcd" all_scraped && ok=true
    check "monitoring: Prometheus scrapes the 3 members' Patroni and the 3 etcd members" "$ok"
    local status
    status=$(patroni_post "$(leader)" /restart)
    check "patroni: a restart asked from outside the members is refused (HTTP $status)" \
        "$([ "$status" = 403 ] && echo true)"
    ok=false && wait_until 180 "the backup service's first full backup" first_backup && ok=true
    check "backup: the backup service took its first full backup of the cluster" "$ok"
    check "backup: an incremental one, the files read from a standby" "$(backup_from_standby)"

    # 1. The leader killed; 2. started again: Patroni rewinds it into a replica.
    local rejoined rejoin_seconds
    under_load leader-kill "leader killed" kill_leader_and_restart
    check "leader killed: $old_leader killed, $(leader) promoted" "$(new_leader && echo true)"
    check "leader killed: writes worked again within 15 s" "$(jq '.longest_write_gap.seconds < 15' "$work/leader-kill.json")"
    check "old leader back: $old_leader rejoined as a replica by itself in $rejoin_seconds s" "$rejoined"
    ok=false && wait_until 60 "the leader-change alert" firing PostgresLeaderChanged && ok=true
    check "monitoring: the leader change is alerted (PostgresLeaderChanged)" "$ok"
    show_cluster
    check "backup after the failover: an incremental one from a standby, $(leader) archiving" "$(backup_from_standby)"

    # 3. A planned switchover.
    old_leader=$(leader)
    replica=$(role "Sync Standby" | head -1)
    under_load switchover "switchover" \
        switchover "$old_leader" "$replica"
    check "switchover: $replica leads" "$([ "$(leader)" = "$replica" ] && echo true)"
    check "switchover: writes stopped for under 5 s" "$(jq '.longest_write_gap.seconds < 5' "$work/switchover.json")"
    wait_until 120 "the cluster whole again" cluster_whole

    # 4. A replica killed.
    replica=$(role "Sync Standby" | head -1)
    under_load replica-kill "replica killed" kill_service "$replica"
    start_service "$replica"
    ok=false && wait_until 120 "the replica back" cluster_whole && ok=true
    check "replica killed: $replica back as a replica" "$ok"

    # 5. The leader cut off: Patroni demotes it once it can't renew its lock in etcd, before
    # the lock expires and another member is promoted, and the router (which can't reach
    # its API either) sends no client to it, so nothing acknowledged can be lost with it.
    local old_read_only
    under_load partition "leader cut off" partition_leader
    check "leader cut off: $old_leader cut off, $(leader) promoted" "$(new_leader && echo true)"
    # t: a read-only standby; stopped or starting: no server taking connections.
    check "leader cut off: $old_leader had stopped taking writes by then (in recovery: $old_read_only)" \
        "$(case $old_read_only in t | stopped | starting) echo true ;; esac)"
    started=$SECONDS
    docker network connect --alias "$old_leader" "${COMPOSE_PROJECT_NAME}_data" "$(compose_container "$old_leader")"
    ok=false && wait_until 120 "the old leader to rejoin" cluster_whole && ok=true
    check "leader cut off: $old_leader reconnected, rejoined as a replica in $((SECONDS - started)) s" "$ok"

    # 6. An etcd member lost: the other two keep a quorum.
    old_leader=$(leader)
    under_load etcd-kill "etcd member killed" kill_service etcd1
    check "etcd member killed: $old_leader still leads" "$([ "$(leader)" = "$old_leader" ] && echo true)"
    check "etcd member killed: no write waited over 2 s" "$(jq '.longest_write_gap.seconds < 2' "$work/etcd-kill.json")"
    start_service etcd1
    ok=false && wait_until 60 "etcd whole again" etcd_whole && ok=true
    check "etcd member killed: back, the etcd cluster is whole" "$ok"

    # Two etcd members lost: no quorum, so no lock can be renewed or taken. The leader
    # stays while it reaches both other members over their REST APIs (failsafe mode), and
    # no member is promoted; etcd stays short of a quorum for the load's last 55 s. Until
    # Patroni has given up on etcd and turned to the members (its requests to the dead
    # etcd members time out one by one) its API may call the leader's lock lapsed, and the
    # router then holds writes for a few seconds; without failsafe mode the leader would
    # demote itself and writes stop until etcd is back.
    old_leader=$(leader)
    local timeline
    timeline=$(leader_timeline)
    under_load etcd-quorum "etcd quorum lost" kill_service etcd1 etcd2
    start_service etcd1 etcd2
    ok=false && wait_until 60 "etcd whole again" etcd_whole && ok=true
    check "etcd quorum lost for 55 s: back, the etcd cluster is whole" "$ok"
    check "etcd quorum lost: $old_leader still leads on timeline $timeline, never demoted, nothing promoted" \
        "$([ "$(leader)" = "$old_leader" ] && [ "$(leader_timeline)" = "$timeline" ] && echo true)"
    check "etcd quorum lost: writes never stopped for 10 s" "$(jq '.longest_write_gap.seconds < 10' "$work/etcd-quorum.json")"

    # 7. Both standbys gone: with FLOWFORGE_SYNC_STRICT (the default) a commit waits for a
    # standby rather than be acknowledged on one server, so a creation is answered 503.
    local standbys
    standbys=$(cluster_status | jq -r '.[] | select(.Role != "Leader") | .Member')
    # shellcheck disable=SC2086 # one member per word
    kill_service $standbys
    sleep 5
    status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 60 --cacert "$work/ca.pem" \
        -H "Authorization: Bearer $(cat "$work/token")" -H 'Content-Type: application/json' \
        -d '{"title": "on one server only", "kind": "noop"}' "$url/tasks")
    check "standbys both gone: a creation is not acknowledged on the leader alone (answered $status)" \
        "$([ "$status" = 503 ] && echo true)"
    # shellcheck disable=SC2086
    start_service $standbys
    ok=false && wait_until 120 "the standbys back" cluster_whole && ok=true
    check "standbys both back: the cluster is whole again" "$ok"

    # 8. The whole host lost: every container and volume of the stack gone; the S3
    # repository and the secrets kept elsewhere, as an operator keeps them. A new cluster
    # from the repository alone, to the end of its archive.
    load restore 30
    wait
    sleep 5 # the last tasks completed
    local segment
    segment=$($stack psql -c "SELECT pg_walfile_name(pg_switch_wal())")
    ok=false && wait_until 60 "WAL through $segment archived" archived "$segment" && ok=true
    check "restore: the load's WAL archived in S3 (through $segment)" "$ok"
    $stack down --purge >/dev/null
    check "host lost: no container or volume of the stack left" \
        "$([ -z "$(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")$(docker volume ls -q \
            --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")" ] && echo true)"
    started=$SECONDS
    ok=false && $stack restore >"$work/restore.log" 2>&1 && ok=true
    local serving
    serving=$(grep -o 'restored and serving in [0-9]* s' "$work/restore.log" | grep -o '[0-9][0-9]*')
    check "restore: a new cluster from S3 alone, serving after ${serving:-?} s ($((SECONDS - started)) s with the members rolled)" "$ok"
    v=$(verdict restore)
    check "restore: every task acknowledged before it is there, completed" \
        "$(jq '.acknowledged > 0 and .lost == 0 and .completed_twice == 0' <<<"$v")"
    show_cluster
}
# prom_count QUERY: how many series Prometheus answers QUERY with (through the proxy).
prom_count() {
    curl -s --cacert "$work/ca.pem" -u "operator:$(cat "$FLOWFORGE_SECRETS/operator_password")" \
        --data-urlencode "query=$1" "$url/prometheus/api/v1/query" | jq -r '.data.result | length'
}
firing() { [ "$(prom_count "ALERTS{alertname=\"$1\",alertstate=\"firing\"}")" -gt 0 ]; }
all_scraped() { [ "$(prom_count 'up{job=~"patroni|etcd"} == 1')" = 6 ]; }

# patroni_post MEMBER PATH: the HTTP status of a POST to a member's Patroni API from a
# container on the data network that is not a member (as the api or a worker would).
patroni_post() {
    docker run --rm --network "${COMPOSE_PROJECT_NAME}_data" --entrypoint python3 "flowforge-postgres:${FLOWFORGE_TAG:-dev}" -c "
import urllib.request, urllib.error
request = urllib.request.Request('http://$1:8008$2', data=b'{}', method='POST')
try:
    print(urllib.request.urlopen(request, timeout=5).status)
except urllib.error.HTTPError as e:
    print(e.code)" 2>/dev/null
}

# start_objects: the S3 server: moto's (pinned, installed once in 25 s) on plain HTTP in
# the postgres image's Python, behind HAProxy (the proxy image) answering HTTPS as
# `objects` with a certificate of its own (werkzeug's own TLS drops kept-alive
# connections without a word, and pgBackRest then gives up mid-request); both read-only,
# as this user, on a network of their own. Then the bucket, and the key the stack's
# secrets hold for it (moto takes any).
start_objects() {
    local dir=$work/objects
    mkdir -p "$dir" "$FLOWFORGE_SECRETS"
    if [ ! -f "$moto/moto/server.py" ]; then
        echo "     installing moto's S3 server (PyPI)"
        # Its S3 server alone: moto's other services' packages would triple the download.
        pip install -q --disable-pip-version-check --target "$moto" "moto[s3]==5.1.22" flask==3.1.3 flask-cors==6.0.5 \
            >"$work/moto-install.log" 2>&1 ||
            { tail -5 "$work/moto-install.log"; return 1; }
    fi
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=objects \
        -addext subjectAltName=DNS:objects -keyout "$dir/objects.key" -out "$dir/objects.pem" 2>/dev/null
    cat "$dir/objects.pem" "$dir/objects.key" >"$dir/objects.bundle"
    chmod 644 "$dir/objects.pem" "$dir/objects.bundle"
    cat >"$dir/tls.cfg" <<'CFG'
global
    log stdout format raw local0 notice
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    option http-server-close
frontend objects
    bind :443 ssl crt /objects/objects.bundle
    default_backend moto
backend moto
    server moto moto:5000
CFG
    for key in backup_s3_key backup_s3_key_secret; do
        [ -f "$FLOWFORGE_SECRETS/$key" ] || (umask 077 && openssl rand -hex 20 >"$FLOWFORGE_SECRETS/$key")
    done
    stop_objects
    docker network create --internal "$objects" >/dev/null
    local hardened=(-d --no-healthcheck --network "$objects" --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges
        --user "$(id -u):$(id -g)" -v "$dir:/objects:ro")
    docker run "${hardened[@]}" --name "$objects-moto" --network-alias moto -v "$moto:/opt/moto:ro" \
        -e PYTHONPATH=/opt/moto --entrypoint python3 "flowforge-postgres:${FLOWFORGE_TAG:-dev}" \
        -m moto.server -H 0.0.0.0 -p 5000 >/dev/null
    docker run "${hardened[@]}" --name "$objects" --network-alias objects --entrypoint haproxy \
        "flowforge-proxy:${FLOWFORGE_TAG:-dev}" -W -db -f /objects/tls.cfg >/dev/null
    wait_until 60 "the S3 server and its bucket" docker exec "$objects-moto" python3 -c "
import ssl, urllib.request
request = urllib.request.Request('https://objects/$FLOWFORGE_BACKUP_S3_BUCKET', method='PUT')
urllib.request.urlopen(request, timeout=5, context=ssl.create_default_context(cafile='/objects/objects.pem'))"
}
stop_objects() {
    docker rm -f "$objects" "$objects-moto" >/dev/null 2>&1
    docker network rm "$objects" >/dev/null 2>&1
    return 0
}

etcd_whole() { $stack compose exec -T etcd2 etcdctl endpoint health --cluster >/dev/null 2>&1; }
archived() { [ "$($stack psql -c "SELECT last_archived_wal >= '$1' FROM pg_stat_archiver")" = t ]; }

started=$SECONDS
if ! start_objects; then
    check "the S3 server for the backup repository starts" false
elif $stack up; then
    echo "     cluster stack up in $((SECONDS - started)) s"
    run_tests
else
    check "the cluster stack comes up" false
fi
[ "${FLOWFORGE_HA_KEEP:-0}" = 1 ] || { $stack down --purge >/dev/null; stop_objects; }
echo "ha: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
