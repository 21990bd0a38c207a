#!/usr/bin/env bash
# The Swarm stack under load (scripts/swarm.sh, three nodes on this machine). Each test
# runs `flowforge load` through the manager node's proxy while it changes the cluster,
# then counts what happened to every acknowledged task in the database:
#   1. rolling update to new images (a new digest for api, worker and web);
#   2. a broken image (its health check fails): Swarm rolls back by itself;
#   3. a node drained, then made active again;
#   4. a node that runs api and worker replicas killed (`docker kill` of the node).
# Before them, what operators watch, on every node: every Prometheus target up, the first
# backup in Prometheus, and one request's trace in the nodes' log stores; during test 1,
# an exporter stopped on purpose: its alert reaches the receiver, then its resolution.
# Prints one line per check and the figures; exits non-zero when a check fails.
# FLOWFORGE_SWARM_KEEP=1 leaves the swarm up afterwards; FLOWFORGE_SWARM_REUSE=1 tests
# the swarm that is up already, as it is.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
swarm=scripts/swarm.sh
work=$(realpath -m "${FLOWFORGE_SWARM_WORK:-.run/swarm/work}")
secrets=$(realpath -m "${FLOWFORGE_SWARM_SECRETS:-.run/swarm/secrets}")
url=https://localhost:${FLOWFORGE_SWARM_HTTPS_PORT:-9443}
registry=127.0.0.1:${FLOWFORGE_SWARM_REGISTRY_PORT:-5000}
# shellcheck source=tests/lib/checks.sh
source tests/lib/checks.sh
# shellcheck source=scripts/lib/engine.sh
source scripts/lib/engine.sh

on_manager() { $swarm docker "$@"; }

# verdict NAME: waits for the load, then what became of its tasks (JSON), counted by
# `flowforge drill verdict` on the stack's database.
verdict() {
    $swarm job drill verdict --ids "/work/$1.ids" --summary "/work/$1.json" --json "${@:2}" 2>/dev/null | tail -1
}

# update_state SERVICE: Swarm's account of the service's last update.
update_state() { on_manager service inspect "flowforge_$1" -f '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}'; }

# wait_updates STATE SECONDS SERVICE...: until each service's update is in STATE.
wait_updates() {
    local state=$1 deadline=$((SECONDS + $2)) service
    shift 2
    for service in "$@"; do
        until [ "$(update_state "$service")" = "$state" ]; do
            [ $SECONDS -lt "$deadline" ] || return 1
            sleep 1
        done
    done
}

# derive TAG [DOCKERFILE LINE]: api, worker and web images with a new digest (a label,
# or the given line), pushed as TAG.
derive() {
    local tag=$1 extra=${2:-} image
    for image in api worker web; do
        printf 'FROM flowforge-%s:dev\nLABEL org.flowforge.test-rollout="%s"\n%s\n' "$image" "$tag" "$extra" |
            docker build -q -t "$registry/flowforge-$image:$tag" - >/dev/null 2>&1
        docker push -q "$registry/flowforge-$image:$tag" >/dev/null
    done
}

# whole: every replicated service has as many running tasks on live nodes as it wants
# (Swarm's own count goes on including a dead node's tasks for a while).
whole() {
    local ready service want running
    ready=$(on_manager node ls --format '{{.Hostname}} {{.Status}}' | awk '$2 == "Ready" { print $1 }')
    for service in api worker web redis postgres; do
        want=$(on_manager service inspect "flowforge_$service" -f '{{.Spec.Mode.Replicated.Replicas}}')
        running=$(on_manager service ps "flowforge_$service" -f desired-state=running --format '{{.Node}} {{.CurrentState}}' |
            awk -v ready="$ready" 'BEGIN { split(ready, r, "\n"); for (i in r) ok[r[i]] = 1 } $2 == "Running" && ok[$1] { n++ } END { print n + 0 }')
        [ "$running" -ge "$want" ] || return 1
    done
}

# promql QUERY: the query's first value, from Prometheus through the manager's proxy, as
# the operator.
promql() {
    curl -fsS --cacert "$work/ca.pem" -u "operator:$(cat "$secrets/operator_password")" \
        --data-urlencode "query=$1" "$url/prometheus/api/v1/query" | jq -r '.data.result[0].value[1] // empty'
}

# all_targets_up: every target Prometheus scrapes answers (at least 15: 2 api, 2 worker,
# a proxy and a node exporter per node, PostgreSQL, Redis, backup, Prometheus, Alertmanager).
all_targets_up() {
    targets=$(promql 'count(up == 1)')/$(promql 'count(up)')
    [ "${targets%/*}" = "${targets#*/}" ] && [ "${targets#*/}" -ge 15 ] 2>/dev/null
}

has_backup() { [ -n "$(promql 'max(backup_last_success_timestamp_seconds)')" ]; }

# notified STATUS ALERT JOB: the alert receiver recorded that notification (asked from
# the manager's proxy, which is on the monitoring network).
notified() {
    local proxy
    proxy=$(on_manager ps -q -f label=com.docker.swarm.service.name=flowforge_proxy | head -1)
    on_manager exec "$proxy" curl -fsS --max-time 5 http://alert-receiver:9095/alerts |
        jq -e --arg s "$1" --arg a "$2" --arg j "$3" \
            'any(.[].alerts[]; .status == $s and .labels.alertname == $a and .labels.job == $j)' >/dev/null
}

# traced REQUEST_ID: the trace of that request, found in the log stores from the proxy and
# from the worker that ran its task (wherever each runs); sets trace and trace_nodes.
traced() {
    local lines
    trace=$($swarm search "$1" 2>/dev/null | grep -o 'trace_id=[0-9a-f]\{32\}' | head -1 | cut -d= -f2)
    [ -n "$trace" ] || return 1
    lines=$($swarm search "$trace" 2>/dev/null)
    grep -q '"service":"flowforge_proxy\.' <<<"$lines" &&
        grep '"service":"flowforge_worker\.' <<<"$lines" | grep -q 'attempt finished' || return 1
    trace_nodes=$(cut -d' ' -f1 <<<"$lines" | sort -u | paste -sd' ')
}

observability() {
    local started=$SECONDS request=swarm-trace-$$-$RANDOM ok
    ok=false && wait_until 120 "every target up" all_targets_up && ok=true
    check "monitoring: Prometheus scrapes every target on every node: $targets up" "$ok"
    ok=false && wait_until 180 "a backup in Prometheus" has_backup && ok=true
    check "backup: a full backup beside PostgreSQL, its time in Prometheus (after $((SECONDS - started)) s)" "$ok"
    curl -fsS -o /dev/null --cacert "$work/ca.pem" -H "Authorization: Bearer $(cat "$work/token")" \
        -H "X-Request-Id: $request" -H 'Content-Type: application/json' \
        -d '{"title": "traced", "kind": "fail", "payload": {"fail_attempts": 1}}' "$url/tasks"
    ok=false && wait_until 60 "the trace" traced "$request" && ok=true
    check "logs: one request's trace in the nodes' log stores, from the proxy and the worker (found on: ${trace_nodes:-none})" "$ok"
    echo "     trace ${trace:-none}, request $request"
}

run_tests() {
    cp "$secrets/ca.pem" "$work/ca.pem"
    $swarm token >"$work/token" 2>/dev/null
    chmod 644 "$work/ca.pem" "$work/token"
    $swarm job drill counter install >/dev/null 2>&1
    local v started node trace="" trace_nodes="" targets=""
    observability

    # Beside test 1: an exporter stopped on purpose, so its target goes down.
    on_manager service scale --detach flowforge_redis-exporter=0 >/dev/null
    local alerted=$SECONDS

    # 1. Rolling update to new images.
    load update 60
    sleep 5
    started=$SECONDS
    derive "rollout-$$"
    $swarm roll "rollout-$$" 2>/dev/null
    wait_updates completed 240 api worker web
    check "rolling update: api, worker and web updated (in $((SECONDS - started)) s)" \
        "$([ "$(update_state api)$(update_state worker)$(update_state web)" = completedcompletedcompleted ] && echo true)"
    wait
    report "rolling update" "$(verdict update)"
    v=false && wait_until 90 "the alert" notified firing TargetDown redis && v=true
    check "alert: redis-exporter stopped: TargetDown reached the receiver through Alertmanager (by $((SECONDS - alerted)) s)" "$v"
    on_manager service scale --detach flowforge_redis-exporter=1 >/dev/null

    # 2. A broken image: its health check never passes, so Swarm rolls back by itself.
    load broken 60
    sleep 5
    started=$SECONDS
    derive "broken-$$" 'HEALTHCHECK --interval=2s --timeout=2s --start-period=2s --retries=2 CMD ["/usr/local/bin/api", "no-such-command"]'
    on_manager service update --detach --image "registry:5000/flowforge-api:broken-$$" flowforge_api >/dev/null
    wait_updates rollback_completed 240 api
    check "broken image: Swarm rolled the api back by itself (in $((SECONDS - started)) s)" \
        "$([ "$(update_state api)" = rollback_completed ] && echo true)"
    check "broken image: the api runs the previous image again" \
        "$(on_manager service inspect flowforge_api -f '{{.Spec.TaskTemplate.ContainerSpec.Image}}' | grep -q "rollout-$$" && echo true)"
    wait
    report "broken image" "$(verdict broken)"
    v=false && wait_until 90 "the resolution" notified resolved TargetDown redis && v=true
    check "alert: redis-exporter back: the resolution reached the receiver" "$v"

    # 3. A node drained, then active again.
    node=$(on_manager service ps flowforge_api -f desired-state=running --format '{{.Node}}' | grep -v node1 | head -1)
    load drain 90
    sleep 5
    started=$SECONDS
    on_manager node update --availability drain "$node" >/dev/null
    local moved=false
    while [ $((SECONDS - started)) -lt 120 ]; do
        if ! on_manager node ps "$node" -f desired-state=running -q | grep -q . && whole; then
            moved=true
            break
        fi
        sleep 1
    done
    check "drain: $node's tasks moved to the other nodes in $((SECONDS - started)) s" "$moved"
    sleep 10
    on_manager node update --availability active "$node" >/dev/null
    # Swarm doesn't move tasks back by itself: a forced update (one task at a time, as any
    # update) spreads api and worker over the three nodes again.
    on_manager service update --force --quiet flowforge_api >/dev/null
    on_manager service update --force --quiet flowforge_worker >/dev/null
    wait
    report "drain and reactivate" "$(verdict drain)"

    # 4. A node that runs api and worker replicas killed.
    node=$(comm -12 <(on_manager service ps flowforge_api -f desired-state=running --format '{{.Node}}' | sort -u) \
        <(on_manager service ps flowforge_worker -f desired-state=running --format '{{.Node}}' | sort -u) | grep -v node1 | head -1)
    load kill 60
    sleep 5
    started=$SECONDS
    local recovered=false
    if [ -n "$node" ]; then
        docker kill "ffswarm-$node" >/dev/null
        # Swarm notices a silent node once its heartbeats stop, then reschedules its
        # tasks; the node must be seen down first, or its tasks still count as running.
        while [ $((SECONDS - started)) -lt 180 ]; do
            if [ "$(on_manager node inspect "$node" -f '{{.Status.State}}')" = down ] && whole; then
                recovered=true
                break
            fi
            sleep 1
        done
    fi
    check "node loss: ${node:-no node} (api and worker) killed; the services whole again after $((SECONDS - started)) s" \
        "$recovered"
    wait
    # Requests in flight to the dead node's replicas may fail: not counted against it.
    v=$(verdict kill)
    figures "node loss" "$v"
    check "node loss: every task acknowledged completed exactly once" \
        "$(jq '.acknowledged > 0 and .lost == 0 and .completed_twice == 0' <<<"$v")"
    [ -n "$node" ] && docker start "ffswarm-$node" >/dev/null
}

# The loads of successive tests fall within one rate-limit minute of the same user.
export FLOWFORGE_RATE_LIMIT_PER_MINUTE=${FLOWFORGE_RATE_LIMIT_PER_MINUTE:-100000}
started=$SECONDS
if [ "${FLOWFORGE_SWARM_REUSE:-0}" = 1 ] || $swarm up; then
    echo "     swarm up in $((SECONDS - started)) s"
    run_tests
else
    check "the swarm comes up" false
fi
[ "${FLOWFORGE_SWARM_KEEP:-0}" = 1 ] || $swarm down
echo "swarm: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
