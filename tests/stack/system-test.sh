#!/usr/bin/env bash
# System test of the container stack (issues 3-6), against the real engine on this machine:
# brings the stack up with scripts/stack.sh, breaks it on purpose, checks what a user and
# an operator would check, and tears it down. Every wait is bounded; all traffic stays on
# this machine (loopback and the stack's own networks).
set -euo pipefail
cd "$(dirname "$0")/../.."
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-ffsystest}
export FLOWFORGE_HTTP_PORT=${FLOWFORGE_HTTP_PORT:-18080} FLOWFORGE_HTTPS_PORT=${FLOWFORGE_HTTPS_PORT:-18443}
export FLOWFORGE_LOG_PORT=${FLOWFORGE_LOG_PORT:-15514}
# Secrets of its own: the test rotates them, and must never touch a developer's ./secrets.
FLOWFORGE_SECRETS=$(mktemp -d /tmp/ffsystest-secrets.XXXX)
export FLOWFORGE_SECRETS
base="https://localhost:$FLOWFORGE_HTTPS_PORT"
# Named so that no sourced scenario's own "failed" or "passed" can clobber them.
checks_passed=0
checks_failed=0

ok() { printf 'ok   %s\n' "$*"; checks_passed=$((checks_passed + 1)); }
fail() { printf 'FAIL %s\n' "$*"; checks_failed=$((checks_failed + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else fail "$what"; fi; }

cleanup() {
    scripts/stack.sh down --purge >/dev/null 2>&1 || true
    rm -rf "${drill:-/nonexistent}" "${drill_dir:-/nonexistent}" "${abuse_dir:-/nonexistent}" "${load_dir:-/nonexistent}" "$FLOWFORGE_SECRETS"
}
trap cleanup EXIT

api() { curl -sS --max-time 10 --cacert "$FLOWFORGE_SECRETS/ca.pem" -H "Authorization: Bearer $TOKEN" "$@"; }
container() { docker ps -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" \
    --filter "label=com.docker.compose.service=$1" | head -n "${2:-1}" | tail -n 1; }
psql_super() { scripts/stack.sh psql "$@"; }
status_of() { api "$base/tasks/$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["status"])'; }
# wait_for SECONDS COMMAND...: true once COMMAND succeeds, false after SECONDS.
wait_for() {
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do [ $SECONDS -lt $deadline ] || return 1; sleep 0.5; done
}

# Alert thresholds shortened through configuration, for the alert drill below: the real
# QueueBacklog rule (over 100 due tasks for 15 minutes) becomes over 5 for 10 seconds.
drill=$(mktemp -d /tmp/ffsystest-drill.XXXX)
sed -e 's/flowforge:queue_depth:max > 100/flowforge:queue_depth:max > 5/' -e 's/for: 15m/for: 10s/' \
    deploy/images/prometheus/rules/queue.yml >"$drill/queue.yml"
# The chaos suite's kinds (panic, fill_scratch): accepted by the api, run by the workers.
cat >"$drill/compose.system-test.yaml" <<YAML
services:
  prometheus:
    volumes: ["$drill/queue.yml:/etc/prometheus/rules/queue.yml:ro"]
  worker:
    environment:
      FLOWFORGE_CHAOS_HANDLERS: "true"
  api:
    environment:
      FLOWFORGE_AUTH_FAILURES_PER_MINUTE: "10"
      FLOWFORGE_CHAOS_HANDLERS: "true"
YAML
chmod -R a+rX "$drill"
export COMPOSE_FILE="compose.yaml:$drill/compose.system-test.yaml"

started=$SECONDS
scripts/stack.sh up >/tmp/ffsystest-up.log 2>&1 || { cat /tmp/ffsystest-up.log; exit 1; }
ok "stack up and healthy in $((SECONDS - started)) s"
TOKEN=$(scripts/stack.sh token 2>/dev/null | tail -n 1)
OPERATOR="operator:$(cat "$FLOWFORGE_SECRETS/operator_password")"

# --- the images ------------------------------------------------------------------------
images=$(docker image ls --format '{{.Repository}}:{{.Tag}}' | grep -E "^flowforge-[a-z-]+:${FLOWFORGE_TAG:-dev}$" | sort)
echo "images:"
for image in $images; do
    printf '  %-36s %6.1f MB\n' "$image" "$(docker image inspect -f '{{.Size}}' "$image" | awk '{ print $1 / 1e6 }')"
done
small_rust_images() {
    local image size
    for image in api worker web cli; do
        size=$(docker image inspect -f '{{.Size}}' "flowforge-$image:${FLOWFORGE_TAG:-dev}")
        [ "$size" -lt 20000000 ] || { echo "  flowforge-$image is $size bytes"; return 1; }
    done
}
check "Rust service images under 20 MB" small_rust_images
labelled() {
    local image
    for image in $images; do
        [ -n "$(docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.title"}}' "$image")" ] ||
            { echo "  $image has no OCI title label"; return 1; }
    done
}
check "every image carries OCI labels" labelled
# No generated secret appears in any image layer or container configuration.
secrets_leak() {
    local value image c values f
    # One value per file (rotated files have no final newline), and the passwords inside
    # the connection strings.
    values=()
    for f in "$FLOWFORGE_SECRETS"/*password* "$FLOWFORGE_SECRETS"/webhook_secrets_key* "$FLOWFORGE_SECRETS"/backup_cipher_pass; do
        value=$(<"$f")
        [ -n "$value" ] && values+=("$value")
    done
    for f in "$FLOWFORGE_SECRETS"/database_url_*; do
        values+=("$(sed -E 's|^postgres://[^:]+:([^@]+)@.*|\1|' "$f")")
    done
    for value in "${values[@]}"; do
        for image in $images; do
            docker history --no-trunc "$image" | grep -qF "$value" && { echo "  secret in $image history"; return 0; }
        done
        for c in $(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME"); do
            docker inspect -f '{{.Config.Env}} {{.Config.Cmd}}' "$c" | grep -qF "$value" &&
                { echo "  secret in the environment of $c"; return 0; }
        done
    done
    return 1
}
no_secret_leaks() { ! secrets_leak; }
check "no secret in any image history or container environment" no_secret_leaks
# The Rust and Go images have no shell and no package manager: nothing to exec into.
shell_free() {
    local image c files
    for image in api worker web cli prometheus alertmanager postgres-exporter redis-exporter node-exporter; do
        c=$(docker create "flowforge-$image:${FLOWFORGE_TAG:-dev}")
        files=$(docker export "$c" | tar -t)
        docker rm "$c" >/dev/null
        if grep -qE '^(usr/)?bin/(sh|bash|dash|busybox)$|^(usr/)?bin/(apt|apt-get|dpkg)$' <<<"$files"; then
            echo "  flowforge-$image has a shell or package manager"
            return 1
        fi
    done
}
check "no shell or package manager in the Rust and Go images" shell_free
# A bad configuration stops a service at once, with every problem named (prod profile:
# the database URL must ask for TLS; the worker count must be a number).
fail_fast() {
    local out code=0
    out=$(docker run --rm -e FLOWFORGE_DATABASE_URL=postgres://u:p@db/x -e FLOWFORGE_WORKER_CONCURRENCY=many \
        "flowforge-worker:${FLOWFORGE_TAG:-dev}" 2>&1) || code=$?
    [ "$code" -eq 2 ] && grep -q sslmode <<<"$out" && grep -q FLOWFORGE_WORKER_CONCURRENCY <<<"$out"
}
check "a misconfigured service exits 2 at start, naming every problem" fail_fast

# --- every container: non-root, read-only root, no capabilities --------------------
hardened() {
    local c user ro caps uids
    for c in $(docker ps -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME"); do
        [ "$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$c")" = healthy ] ||
            { echo "  $(docker inspect -f '{{.Name}}' "$c") has no passing health check"; return 1; }
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
check "every container healthy, non-root, read-only, all capabilities dropped" hardened

# --- a task over HTTPS through the proxy, completed by a worker ----------------------
redirect=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "http://localhost:$FLOWFORGE_HTTP_PORT/tasks")
check "HTTP redirects to HTTPS ($redirect)" [ "$redirect" = "301 https://localhost:$FLOWFORGE_HTTPS_PORT/tasks" ]
# handshake ARGS...: true if a TLS handshake with the proxy succeeds with these openssl options.
handshake() { openssl s_client -connect "localhost:$FLOWFORGE_HTTPS_PORT" "$@" </dev/null >/dev/null 2>&1; }
tls_pinned() {
    handshake -tls1_3 && handshake -tls1_2 -cipher ECDHE-RSA-AES128-GCM-SHA256 &&
        ! handshake -tls1_2 -cipher AES256-SHA256 && ! handshake -tls1_2 -cipher ECDHE-RSA-AES128-SHA &&
        ! handshake -tls1_1
}
check "TLS: 1.3, and 1.2 with forward-secret AEAD ciphers only (no CBC, no RSA key exchange, no 1.1)" tls_pinned
id=$(api -H 'Content-Type: application/json' -d '{"title":"system test","kind":"echo","payload":{"hello":"stack"}}' \
    "$base/tasks" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["id"])')
completed() { [ "$(status_of "$id")" = completed ]; }
check "task $id created over HTTPS is completed by a worker" wait_for 30 completed
unknown_kind=$(api -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
    -d '{"title":"typo","kind":"no-such-kind"}' "$base/tasks")
check "a task of a kind no worker runs is refused at the door ($unknown_kind)" [ "$unknown_kind" = 422 ]

# --- one trace through proxy, api and worker ----------------------------------------
# No traceparent sent: the proxy starts the trace; the api keeps its id with the task and
# the worker logs it with the attempt.
request_id="systest-trace-$RANDOM$RANDOM"
traced=$(api -H 'Content-Type: application/json' -H "X-Request-Id: $request_id" \
    -d '{"title":"traced","kind":"noop"}' "$base/tasks" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["id"])')
trace_id=
traced_everywhere() {
    local lines
    trace_id=$(scripts/stack.sh search "$request_id" | grep -o "trace_id=[0-9a-f]*" | head -n 1 | cut -d= -f2)
    [ ${#trace_id} -eq 32 ] || return 1
    # The documented search, in the log store: every service's lines with that trace id.
    lines=$(scripts/stack.sh search "$trace_id")
    grep -Eq '"service":"[^"]*[-_]proxy[-_]' <<<"$lines" && grep -Eq '"service":"[^"]*[-_]api[-_]' <<<"$lines" &&
        grep -E '"service":"[^"]*[-_]worker[-_]' <<<"$lines" | grep -q "attempt finished"
}
check "task $traced: the trace the proxy started is in the log store from proxy, api and worker" wait_for 30 traced_everywhere
echo "     trace $trace_id, request $request_id"
check "metrics are not exposed through the proxy" [ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$FLOWFORGE_SECRETS/ca.pem" "$base/metrics")" = 404 ]
web_page() {
    local headers
    headers=$(curl -sS --max-time 10 --cacert "$FLOWFORGE_SECRETS/ca.pem" -D - -o /tmp/ffsystest-page.html "$base/")
    grep -qi '^content-security-policy: default-src' <<<"$headers" && grep -qi '^strict-transport-security' <<<"$headers" &&
        grep -q '<title>FlowForge</title>' /tmp/ffsystest-page.html
}
check "the web UI is served at / with CSP and HSTS" web_page
promql() {
    curl -sS --max-time 10 --cacert "$FLOWFORGE_SECRETS/ca.pem" -u "$OPERATOR" "$base/prometheus/api/v1/query" \
        --data-urlencode "query=$1" | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")'
}
check "Prometheus asks for the operator password" \
    [ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$FLOWFORGE_SECRETS/ca.pem" "$base/prometheus/graph")" = 401 ]
completed_in_prometheus() { [ "$(promql 'sum(tasks_completed_total{kind="echo"})')" = 1 ]; }
check "Prometheus shows the completed task (tasks_completed_total{kind=\"echo\"} = 1)" wait_for 30 completed_in_prometheus
all_targets_up() { [ "$(promql 'count(up == 1)')" = "$(promql 'count(up)')" ] && [ "$(promql 'count(up)')" -ge 10 ]; }
check "Prometheus scrapes every target: $(promql 'count(up == 1)') of $(promql 'count(up)') up" wait_for 30 all_targets_up

# --- the web UI in headless Chromium (issue 5) -------------------------------------------
# Screenshots of every main screen are kept in artifacts/e2e/ as CI artifacts.
e2e_log=/tmp/ffsystest-e2e.log
FLOWFORGE_E2E_URL=$base FLOWFORGE_E2E_TOKEN=$TOKEN FLOWFORGE_E2E_ARTIFACTS="$PWD/artifacts/e2e" \
    tests/e2e/run.sh >"$e2e_log" 2>&1 || true
cat "$e2e_log"
summary=$(grep -aE '^e2e: [0-9]+ passed, [0-9]+ failed' "$e2e_log" | tail -n 1 || true)
read -r _ browser_passed _ browser_failed _ <<<"${summary:-e2e: 0 passed, 1 failed}"
echo "browser: $browser_passed passed, $browser_failed failed"
browser_green() { [ "$browser_failed" -eq 0 ] && [ "$browser_passed" -ge 10 ]; }
check "browser tests through the proxy: $browser_passed passed, $browser_failed failed" browser_green
screenshots=$(find artifacts/e2e -name '*.png' 2>/dev/null | wc -l)
check "screenshots saved as artifacts ($screenshots in artifacts/e2e)" [ "$screenshots" -ge 5 ]

# --- every alert rule is unit-tested ------------------------------------------------
# promtool from the Prometheus image's build stage runs deploy/images/prometheus/tests;
# every alert in the rules must appear there.
rules_tested() {
    local alert names missing=0
    scripts/stack.sh docker-build -q --target pkg -t ffsystest-promtool:latest deploy/images/prometheus >/dev/null
    docker run --rm -v "$PWD/deploy/images/prometheus:/p:ro" -w /p/tests --entrypoint promtool \
        ffsystest-promtool:latest test rules alerts.test.yml | tail -n 2
    mapfile -t names < <(grep -ho 'alert: [A-Za-z]*' deploy/images/prometheus/rules/*.yml | cut -d' ' -f2)
    for alert in "${names[@]}"; do
        grep -q "alertname: $alert\$" deploy/images/prometheus/tests/alerts.test.yml || { echo "  $alert has no test"; missing=1; }
    done
    return $missing
}
alerts=$(grep -ho 'alert: [A-Za-z]*' deploy/images/prometheus/rules/*.yml | wc -l)
check "all $alerts alert rules pass their promtool unit tests" rules_tested

# --- every dashboard panel's query returns data ---------------------------------------
# A task that fails once, is retried, fails again and is dead-lettered; a completed task
# read twice (the second read is a cache hit): the series the queue and cache panels show.
api -o /dev/null -H 'Content-Type: application/json' \
    -d '{"title":"doomed","kind":"fail","max_attempts":2,"payload":{"message":"drill"}}' "$base/tasks"
api -o /dev/null "$base/tasks/$id"
api -o /dev/null "$base/tasks/$id"
empty_panels() {
    local uid title expr
    empty=()
    while IFS=$'\t' read -r uid title expr; do
        [ -n "$(promql "$expr")" ] || empty+=("$uid: $title")
    done < <(python3 deploy/grafana/generate.py --check --queries)
    [ ${#empty[@]} -eq 0 ]
}
panels=$(python3 deploy/grafana/generate.py --check --queries | wc -l)
if wait_for 90 empty_panels; then ok "all $panels dashboard panel queries return series"
else fail "dashboard queries without series: ${empty[*]}"; fi

# --- an alert end to end: workers stopped, backlog grows, Alertmanager notifies -------
compose() { scripts/stack.sh compose "$@"; }
# What the stack's receiver got, as "status alertname" lines (curl from the proxy, which
# shares the monitoring network with it).
notifications() {
    docker exec "$(container proxy)" curl -s --max-time 5 http://alert-receiver:9095/alerts |
        python3 -c 'import json,sys; [print(a["status"], a["labels"]["alertname"]) for n in json.load(sys.stdin) for a in n["alerts"]]'
}
compose stop worker >/dev/null 2>&1
for i in $(seq 10); do
    api -o /dev/null -H 'Content-Type: application/json' -d "{\"title\":\"backlog $i\",\"kind\":\"noop\"}" "$base/tasks"
done
started=$SECONDS
backlog_notified() { notifications | grep -qx 'firing QueueBacklog'; }
check "workers stopped, 10 tasks waiting: QueueBacklog reached the receiver" wait_for 120 backlog_notified
echo "     notified $((SECONDS - started)) s after the backlog formed"
compose start worker >/dev/null 2>&1
started=$SECONDS
backlog_resolved() { notifications | grep -qx 'resolved QueueBacklog'; }
check "workers started: the resolution reached the receiver" wait_for 180 backlog_resolved
echo "     resolved $((SECONDS - started)) s after the workers came back"

# Client load and stack steps for the scenarios below (issue 6).
# shellcheck source=tests/stack/load-lib.sh
source tests/stack/load-lib.sh

# --- footprint, and the API load command (issue 12) ------------------------------------
rss_mb() { awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$(docker inspect -f '{{.State.Pid}}' "$1")/status"; }
rss="" small=true
for service in api worker; do
    for n in 1 2; do
        mb=$(rss_mb "$(container "$service" "$n")")
        rss+=" $service-$n $mb MB,"
        awk -v mb="$mb" 'BEGIN { exit !(mb < 30) }' || small=false
    done
done
check "resident memory of the api and worker processes under 30 MB:${rss%,}" $small
# Its own user, so its requests count against a rate limit of their own.
api -H 'Content-Type: application/json' -d '{"name":"loadtest"}' "$base/api/v1/users" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["token"]["token"], end="")' >"$load_dir/loadtest-token"
chmod a+r "$load_dir/loadtest-token"
docker run --rm --network host -v "$load_dir:/load" "flowforge-cli:${FLOWFORGE_TAG:-dev}" bench api --url "$base" \
    --token-file /load/loadtest-token --ca-file /load/ca.pem --routes get,create,list --connections 1,4 \
    --duration 2s --closed-loop-only --out /load/api.jsonl >"$load_dir/api.txt" 2>&1 || cat "$load_dir/api.txt"
load_command_works() {
    python3 - "$load_dir/api.jsonl" <<'PY'
import json, sys
steps = [json.loads(line) for line in open(sys.argv[1])]
routes = {s["route"] for s in steps}
assert routes == {"GET /tasks/{id}", "POST /tasks", "GET /tasks?limit=50"}, routes
# The user's rate limit (1200/min) may answer some with 429, counted apart from errors.
assert len(steps) == 6, steps
assert all(s["errors"] == 0 and s["ok"] + s["rate_limited"] == s["requests"] > 0 for s in steps), steps
assert steps[0]["ok"] > 0 and steps[0]["p99_ms"] > 0, steps
PY
}
check "flowforge bench api: 3 routes at 1 and 4 connections through the proxy, no errors" load_command_works
sed 's/^/     /' "$load_dir/api.txt"

# --- backups: point-in-time restore of a destroyed database (issue 6) ------------------
# shellcheck source=tests/stack/restore-drill.sh
source tests/stack/restore-drill.sh

# --- secret rotation under load, then a restore to before it (issue 6) -----------------
# shellcheck source=tests/stack/rotation.sh
source tests/stack/rotation.sh

# --- zero-downtime rolling update and rollback under load (issue 6) --------------------
# shellcheck source=tests/stack/update.sh
source tests/stack/update.sh

# --- the chaos suite: crashes and outages under load (issue 6) -------------------------
# shellcheck source=tests/stack/chaos.sh
source tests/stack/chaos.sh

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
# The host itself: its main address and the data network's own gateway, at the published
# HTTPS port. Reachable from the edge network (control); dropped from the data network.
host_ip=$(ip -4 route get 1.1.1.1 | awk '{ for (i = 1; i < NF; i++) if ($i == "src") print $(i + 1) }')
gateway=$(docker network inspect -f '{{(index .IPAM.Config 0).Gateway}}' "${COMPOSE_PROJECT_NAME}_data")
reach_host() { docker run --rm --network "${COMPOSE_PROJECT_NAME}_$1" debian:bookworm-slim \
    timeout 3 bash -c "exec 3<>/dev/tcp/$2/$FLOWFORGE_HTTPS_PORT" >/dev/null 2>&1; }
check "from the edge network the host's published port answers (control)" reach_host edge "$host_ip"
host_blocked() { ! reach_host data "$host_ip" && ! reach_host data "$gateway"; }
check "from the data network the host ($host_ip, gateway $gateway) does not answer" host_blocked

# --- abuse from one address ----------------------------------------------------------
# shellcheck source=tests/stack/abuse.sh
source tests/stack/abuse.sh

# --- the dev override: host-built binaries, reload after a change ---------------------
scripts/stack.sh down --purge >/dev/null 2>&1
dev_up() { scripts/stack.sh dev >/tmp/ffsystest-dev.log 2>&1 || { tail -20 /tmp/ffsystest-dev.log; return 1; }; }
check "dev override: the stack comes up healthy (a new cluster, from the rotated secrets)" dev_up
api_container=$(container api 1)
check "dev override: the api runs the host-built binary" \
    [ "$(docker inspect -f '{{.Path}}' "$api_container")" = /opt/flowforge/api ]
before=$(docker inspect -f '{{.State.StartedAt}}' "$api_container")
touch crates/api/src/lib.rs
started=$SECONDS
reloaded() {
    scripts/stack.sh reload >/tmp/ffsystest-reload.log 2>&1 || { tail -20 /tmp/ffsystest-reload.log; return 1; }
    [ "$(docker inspect -f '{{.State.StartedAt}}' "$api_container")" != "$before" ]
}
check "dev override: reload rebuilds and restarts the api" reloaded
echo "     reload took $((SECONDS - started)) s"
TOKEN=$(scripts/stack.sh token 2>/dev/null | tail -n 1)
id=$(api -H 'Content-Type: application/json' -d '{"title":"dev","kind":"noop"}' "$base/tasks" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["id"])')
check "dev override: a task through HTTPS is completed after the reload" wait_for 30 completed

# --- teardown ------------------------------------------------------------------------
scripts/stack.sh down --purge >/dev/null 2>&1
leftovers=$(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" | wc -l)
# A network with nothing attached that Docker refuses to remove is moby/moby#43286 (a stale
# endpoint only a dockerd restart clears): reported, not counted. Anything attached counts.
for net in $(docker network ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME"); do
    if [ -n "$(docker network inspect -f '{{range .Containers}}{{.Name}} {{end}}' "$net")" ]; then
        leftovers=$((leftovers + 1))
    else
        echo "     note: Docker kept network $(docker network inspect -f '{{.Name}}' "$net") (stale endpoint, moby/moby#43286)"
    fi
done
leftovers=$((leftovers + $(docker volume ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" | wc -l)))
leftovers=$((leftovers + $(iptables -S INPUT | grep -c "flowforge:$COMPOSE_PROJECT_NAME" || true)))
check "teardown leaves no container, network, volume or firewall rule ($leftovers left)" [ "$leftovers" -eq 0 ]

echo "system: $checks_passed passed, $checks_failed failed"
[ "$checks_failed" -eq 0 ]
