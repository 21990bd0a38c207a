#!/usr/bin/env bash
# Runs FlowForge on this machine without containers: a private PostgreSQL and Redis
# (data kept in .run/), migrations, an admin token, the api on :8080 and two workers.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/services.sh
source scripts/lib/services.sh

run_dir="$PWD/.run"
mkdir -p "$run_dir/logs"
cargo build --release --locked -p flowforge-api -p flowforge-worker -p flowforge-cli
bin=target/release

pids=()
cleanup() {
    [ ${#pids[@]} -gt 0 ] && kill -TERM "${pids[@]}" 2>/dev/null && wait "${pids[@]}" 2>/dev/null
    stop_services
}
trap cleanup EXIT
start_services "$run_dir/services"
admin_url=$FLOWFORGE_TEST_DATABASE_URL
if [ "$(psql "$admin_url" -tAc "SELECT 1 FROM pg_database WHERE datname = 'flowforge'")" != 1 ]; then
    psql "$admin_url" -qc "CREATE DATABASE flowforge"
fi

export FLOWFORGE_PROFILE=dev
export FLOWFORGE_LOG_FORMAT=json   # one JSON object per line: grep the logs by request_id
export FLOWFORGE_DATABASE_URL="${admin_url%/postgres}/flowforge"
export FLOWFORGE_REDIS_URL="$FLOWFORGE_TEST_REDIS_URL"
export FLOWFORGE_API_ADDR="${FLOWFORGE_API_ADDR:-127.0.0.1:8080}"
"$bin/flowforge" migrate
"$bin/flowforge" token create --user admin --role admin --name run.sh >"$run_dir/admin-token"
chmod 600 "$run_dir/admin-token"

"$bin/api" >"$run_dir/logs/api.log" 2>&1 &
pids+=($!)
for i in 1 2; do
    FLOWFORGE_WORKER_ID="worker-$i" FLOWFORGE_METRICS_ADDR="127.0.0.1:$((9090 + i))" \
        "$bin/worker" >"$run_dir/logs/worker-$i.log" 2>&1 &
    pids+=($!)
done
for _ in $(seq 100); do
    curl -fsS "http://$FLOWFORGE_API_ADDR/ready" >/dev/null 2>&1 && break
    sleep 0.1
done

cat <<MSG

FlowForge is running: http://$FLOWFORGE_API_ADDR  (OpenAPI: /openapi.json)
Admin token in .run/admin-token. Try:
  curl -H "Authorization: Bearer \$(cat .run/admin-token)" -H 'Content-Type: application/json' \\
       -d '{"title":"hello","kind":"sleep","payload":{"duration_ms":500}}' http://$FLOWFORGE_API_ADDR/tasks
Logs in .run/logs/. Ctrl-C stops everything.
MSG
wait "${pids[@]}"
