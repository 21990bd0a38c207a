#!/usr/bin/env bash
# The API under load, as docs/benchmarks.md reports it, in one run on this machine:
#   1. the database's own ceiling: pgbench -S and tpcb-like on a private PostgreSQL 15
#      (durable commits), with the stack stopped so nothing else runs;
#   2. the stack (scripts/stack.sh up, workers running, the rate limit raised out of the
#      way, every other setting as shipped), loaded through its proxy over HTTPS by wrk:
#      each route at 1, 4, 16, 64 and 256 connections, 15 s each;
#   3. flowforge bench api: a spike (10x a steady 51 creations/s for 30 s: the same
#      absolute load in every run, so runs compare) and the breaking point, open loop;
#   4. idle RSS of the api and worker processes, before the load and a minute after it.
# Every figure lands in OUT_DIR (default artifacts/loadtest/<UTC time>). About 15 minutes.
#   scripts/loadtest.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/services.sh
source scripts/lib/services.sh

out=${1:-artifacts/loadtest/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
# The CLI container (a non-root user) writes its results there too.
chmod 0777 "$out"
secrets=${FLOWFORGE_SECRETS:-secrets}
step() { printf '\n==> %s\n' "$*"; }
if ! command -v wrk >/dev/null || ! command -v pgbench >/dev/null || ! command -v jq >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk postgresql-client-15 jq >/dev/null
fi

step "database ceiling: pgbench on a private PostgreSQL, stack stopped"
scripts/stack.sh down >/dev/null 2>&1 || true
services_dir="${TMPDIR:-/tmp}/flowforge-loadtest-$$"
trap 'stop_services; rm -rf "$services_dir"' EXIT
start_services "$services_dir" >/dev/null
pg=$FLOWFORGE_TEST_DATABASE_URL
pgbench -q -i -s 10 "$pg" >/dev/null 2>&1
for mode in select-only tpcb-like; do
    pgbench -b "$mode" -c 64 -j 2 -T 15 "$pg" 2>/dev/null | awk -v m="$mode" '/^tps/ { printf "pgbench %s: %.0f tps\n", m, $3 }' |
        tee -a "$out/pgbench.txt"
done
stop_services

# Resident memory of each api and worker process, one line each, into rss.txt.
idle_rss() {
    for service in api worker; do
        for c in $(docker ps -q --filter "label=com.docker.compose.project=${COMPOSE_PROJECT_NAME:-flowforge}" \
            --filter "label=com.docker.compose.service=$service"); do
            pid=$(docker inspect -f '{{.State.Pid}}' "$c")
            awk -v s="$service" -v when="$1" '/VmRSS/ { printf "%s idle RSS (%s): %.1f MB\n", s, when, $2 / 1024 }' \
                "/proc/$pid/status"
        done
    done | tee -a "$out/rss.txt"
}

step "the stack, rate limit out of the way"
FLOWFORGE_RATE_LIMIT_PER_MINUTE=1000000000 FLOWFORGE_PROXY_MAX_CONNECTIONS_PER_SOURCE=100000 \
    scripts/stack.sh up >"$out/stack-up.log" 2>&1
sleep 10
idle_rss "started, before any load"
token_file="$out/token"
scripts/stack.sh token 2>/dev/null | tail -n 1 >"$token_file"
token=$(cat "$token_file")
base=https://localhost:${FLOWFORGE_HTTPS_PORT:-8443}
id=$(curl -sf --cacert "$secrets/ca.pem" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d '{"title":"read me","kind":"noop","payload":{}}' "$base/tasks" | jq -r .data.id)
post_lua="$out/post.lua"
cat >"$post_lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"title":"load","kind":"noop","payload":{}}'
wrk.headers["Content-Type"] = "application/json"
LUA
sleep 2

step "wrk through the proxy: route, connections, requests/s, p50/p90/p99"
# shellcheck disable=SC2016  # $1 and the like are awk's
summarize='/Requests\/sec/ { rps = $2 } /^ +50%/ { p50 = $2 } /^ +90%/ { p90 = $2 } /^ +99%/ { p99 = $2 }
    /Non-2xx/ { bad = $NF } /Socket errors/ { err = $0 }
    END { printf "%-22s %4d conn %9.0f req/s  p50 %9s  p90 %9s  p99 %9s  non-2xx %s %s\n", route, c, rps, p50, p90, p99, bad + 0, err }'
for route in "GET /tasks/{id}" "POST /tasks" "GET /tasks?limit=50"; do
    case $route in
        "GET /tasks/{id}") args=("$base/tasks/$id") ;;
        "POST /tasks") args=(-s "$post_lua" "$base/tasks") ;;
        *) args=("$base/tasks?limit=50") ;;
    esac
    for c in 1 4 16 64 256; do
        # wrk needs at least a connection per thread.
        wrk -t"$((c < 2 ? c : 2))" -c"$c" -d15s --latency -H "Authorization: Bearer $token" "${args[@]}" 2>&1 |
            awk -v route="$route" -v c="$c" "$summarize" | tee -a "$out/wrk.txt"
    done
done

step "spike and breaking point (flowforge bench api, open loop)"
chmod a+r "$token_file"
docker run --rm --network host -v "$out:/out" -v "$(cd "$secrets" && pwd)/ca.pem:/ca.pem:ro" \
    "flowforge-cli:${FLOWFORGE_TAG:-dev}" bench api --url "$base" --token-file /out/token --ca-file /ca.pem \
    --routes create --connections 64 --duration 15s --steady-rate 51 --out /out/api.jsonl | tee "$out/spike.txt"

step "idle RSS, a minute after the load"
sleep 60
idle_rss "a minute after the load"
echo "results in $out"
