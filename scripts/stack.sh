#!/usr/bin/env bash
# The whole FlowForge stack in containers, on one host.
#   scripts/stack.sh up       install/start the engine if needed, build, start, wait until healthy
#   scripts/stack.sh prepare  what a bare `docker compose build` and `up` need: the engine, Compose v5,
#                             the base images and ./secrets
#   scripts/stack.sh build    only build the images (base images too, if missing)
#   scripts/stack.sh dev      the same as up, with the Rust services running binaries built on this host
#   scripts/stack.sh watch    (dev) restart a Rust service whenever `cargo build` changes its binary
#   scripts/stack.sh down     stop and remove the containers (data and backup volumes kept; --purge drops them)
#   scripts/stack.sh status   what runs, and its health
#   scripts/stack.sh cluster  the PostgreSQL cluster's members, roles, states and lag (deploy/compose/ha.yaml)
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
# shellcheck source=scripts/lib/engine.sh
source scripts/lib/engine.sh
# shellcheck source=scripts/lib/operations.sh
source scripts/lib/operations.sh

case "${1:-}" in
# The dev stack runs development builds and settings: reachable from this machine only.
# The override goes after the files already chosen (the S3 backup file, say).
dev | watch) export COMPOSE_FILE=${COMPOSE_FILE:-compose.yaml}:compose.dev.yaml FLOWFORGE_PUBLISH_ADDR=${FLOWFORGE_PUBLISH_ADDR:-127.0.0.1} ;;
esac
command=${1:-}
shift || true
case "$command" in
up | dev)
    up_and_wait "$command"
    cat <<MSG

FlowForge is up: https://localhost:${FLOWFORGE_HTTPS_PORT:-8443}
  (self-signed: trust $secrets/ca.pem, e.g. curl --cacert $secrets/ca.pem)
Create an admin token:  scripts/stack.sh token
Prometheus / Alertmanager: https://localhost:${FLOWFORGE_HTTPS_PORT:-8443}/prometheus/ and /alertmanager/
  (user operator, password in $secrets/operator_password)
Status / logs / stop:    scripts/stack.sh status | logs [service] | down
MSG
    ;;
prepare) prepare ;;
build) ensure_engine && base_images && build ;;
watch) log "watching target/debug: run cargo build after a change (Ctrl-C stops watching)" && compose watch --no-up ;;
down) take_down "$@" ;;
status) compose ps ;;
cluster) cluster_status | jq -r '.[] | "\(.Member)\t\(.Role)\t\(.State)\ttimeline \(.TL)\tlag \(.["Lag in MB"] // 0) MB"' ;;
logs) compose logs -f --tail=100 "$@" ;;
search) [ -n "${1:-}" ] || { echo "usage: scripts/stack.sh search REQUEST_OR_TRACE_ID" >&2; exit 2; }; search_logs "$1" ;;
token) job migrate token create --user admin --role admin ;;
psql) db_psql "$@" ;;
compose) compose "$@" ;;
backup) compose exec -T backup flowforge backup run "$@" ;;
update) update_services ;;
restore) restore_database "$@" ;;
rotate) rotate "$@" ;;
docker-build) DOCKER_BUILDKIT=1 "$(buildkit_docker)" build "$@" ;;
*) sed -n '2,/^[^#]/{/^#/p}' "$0" >&2; exit 2 ;;
esac
