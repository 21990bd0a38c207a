#!/usr/bin/env bash
# System test of the container stack (issue 3), against the real engine on this machine:
# brings the stack up with scripts/stack.sh, breaks it on purpose, checks what a user and
# an operator would check, and tears it down. Every wait is bounded; all traffic stays on
# this machine (loopback and the stack's own networks).
set -euo pipefail
cd "$(dirname "$0")/../.."
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-ffsystest}
export FLOWFORGE_HTTP_PORT=${FLOWFORGE_HTTP_PORT:-18080} FLOWFORGE_HTTPS_PORT=${FLOWFORGE_HTTPS_PORT:-18443}
base="https://localhost:$FLOWFORGE_HTTPS_PORT"
passed=0
failed=0

ok() { printf 'ok   %s\n' "$*"; passed=$((passed + 1)); }
fail() { printf 'FAIL %s\n' "$*"; failed=$((failed + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else fail "$what"; fi; }

cleanup() {
    scripts/stack.sh down --purge >/dev/null 2>&1 || true
}
trap cleanup EXIT

api() { curl -sS --max-time 10 --cacert secrets/ca.pem -H "Authorization: Bearer $TOKEN" "$@"; }
container() { docker ps -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" \
    --filter "label=com.docker.compose.service=$1" | head -n "${2:-1}" | tail -n 1; }
status_of() { api "$base/tasks/$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["status"])'; }
# wait_for SECONDS COMMAND...: true once COMMAND succeeds, false after SECONDS.
wait_for() {
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do [ $SECONDS -lt $deadline ] || return 1; sleep 0.5; done
}

started=$SECONDS
scripts/stack.sh up >/tmp/ffsystest-up.log 2>&1 || { cat /tmp/ffsystest-up.log; exit 1; }
ok "stack up and healthy in $((SECONDS - started)) s"
TOKEN=$(scripts/stack.sh token 2>/dev/null | tail -n 1)

# --- every container: non-root, read-only root, no capabilities --------------------
hardened() {
    local c user ro caps uids
    for c in $(docker ps -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME"); do
        user=$(docker inspect -f '{{.Config.User}}' "$c")
        ro=$(docker inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$c")
        caps=$(docker inspect -f '{{.HostConfig.CapDrop}}' "$c")
        case "$user" in ""|0|0:*|root|root:*) echo "  $(docker inspect -f '{{.Name}}' "$c") runs as root"; return 1 ;; esac
        [ "$ro" = true ] || { echo "  $c root filesystem is writable"; return 1; }
        [ "$caps" = "[ALL]" ] || { echo "  $c keeps capabilities: $caps"; return 1; }
        # The processes themselves, not just the configuration.
        uids=$(docker top "$c" -o pid,uid | awk 'NR > 1 { print $2 }')
        [ -n "$uids" ] || { echo "  $c: no processes listed"; return 1; }
        if grep -qx 0 <<<"$uids"; then echo "  $c has a root process"; return 1; fi
    done
}
check "every container non-root, read-only, all capabilities dropped" hardened

# --- a task over HTTPS through the proxy, completed by a worker ----------------------
redirect=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "http://localhost:$FLOWFORGE_HTTP_PORT/tasks")
check "HTTP redirects to HTTPS ($redirect)" [ "$redirect" = "301 https://localhost:$FLOWFORGE_HTTPS_PORT/tasks" ]
id=$(api -H 'Content-Type: application/json' -d '{"title":"system test","kind":"echo","payload":{"hello":"stack"}}' \
    "$base/tasks" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["id"])')
completed() { [ "$(status_of "$id")" = completed ]; }
check "task $id created over HTTPS is completed by a worker" wait_for 30 completed
check "metrics are not exposed through the proxy" [ "$(curl -s -o /dev/null -w '%{http_code}' --cacert secrets/ca.pem "$base/metrics")" = 404 ]

# --- kill -9 an api replica during a stream of requests ------------------------------
victim=$(container api 1)
codes=$(mktemp)
(for i in $(seq 300); do
    api -o /dev/null -w '%{http_code}\n' -H 'Content-Type: application/json' -H "Idempotency-Key: systest-$i-$RANDOM" \
        -d '{"title":"stream","kind":"noop"}' "$base/tasks" || echo 000
done >"$codes") &
stream=$!
sleep 1
kill -9 "$(docker inspect -f '{{.State.Pid}}' "$victim")"
wait "$stream"
failures=$(grep -vc '^201$' "$codes" || true)
check "kill -9 of an api replica during 300 requests: $failures failed" [ "$failures" -eq 0 ]
back() { [ "$(docker inspect -f '{{.State.Health.Status}} {{.RestartCount}}' "$victim")" = "healthy 1" ]; }
check "the killed api replica came back by itself" wait_for 60 back

# --- kill -9 a worker mid-task -------------------------------------------------------
ids=()
for i in 1 2 3 4 5 6; do
    ids+=("$(api -H 'Content-Type: application/json' -d '{"title":"long","kind":"sleep","payload":{"duration_ms":3000}}' \
        "$base/tasks" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["id"])')")
done
# Whichever worker claimed them (one may take all six in a single batch) is the victim.
holder=
find_holder() {
    local t leased
    for t in "${ids[@]}"; do
        leased=$(api "$base/tasks/$t" | python3 -c \
            'import json,sys; d=json.load(sys.stdin)["data"]; print(d["leased_by"] if d["status"] == "running" else "")')
        [ -n "$leased" ] && { holder=${leased%%-*}; return 0; }
    done
    return 1
}
check "a worker holds a running task" wait_for 20 find_holder
worker=
for c in $(docker ps -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" \
    --filter "label=com.docker.compose.service=worker"); do
    if [ "$(docker inspect -f '{{.Config.Hostname}}' "$c")" = "$holder" ]; then worker=$c; fi
done
check "found the worker container holding it ($holder)" [ -n "$worker" ]
kill -9 "$(docker inspect -f '{{.State.Pid}}' "$worker")"
all_done() { local t; for t in "${ids[@]}"; do [ "$(status_of "$t")" = completed ] || return 1; done; }
check "every task completed after kill -9 of its worker (lease rescue)" wait_for 90 all_done

# --- the data network has no way out -------------------------------------------------
# `internal` networks get no forwarding: nothing on another network (nor beyond the host)
# is reachable. The probe: the proxy's HTTP port on the edge network, from a throwaway
# container on each network. (The host's own addresses are a host-firewall matter.)
proxy_ip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"${COMPOSE_PROJECT_NAME}_edge\").IPAddress}}" "$(container proxy)")
reach() { docker run --rm --network "${COMPOSE_PROJECT_NAME}_$1" debian:bookworm-slim \
    timeout 3 bash -c "exec 3<>/dev/tcp/$proxy_ip/8080" >/dev/null 2>&1; }
check "from the edge network the proxy answers (control)" reach edge
data_blocked() { ! reach data; }
check "from the data network nothing on another network answers" data_blocked

# --- teardown ------------------------------------------------------------------------
scripts/stack.sh down --purge >/dev/null 2>&1
leftovers=$(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" | wc -l)
leftovers=$((leftovers + $(docker network ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" | wc -l)))
leftovers=$((leftovers + $(docker volume ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" | wc -l)))
check "teardown leaves no container, network or volume ($leftovers left)" [ "$leftovers" -eq 0 ]

echo "system: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
