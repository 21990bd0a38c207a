# Zero-downtime rolling update and rollback (issue 6), sourced by system-test.sh: under
# steady client load, api, worker and web move to a new image (tag v2) one container at a
# time, then back to the previous one the same way. No request may fail, no task be lost.

# shellcheck shell=bash disable=SC2154
previous=${FLOWFORGE_TAG:-dev}
load update 150 15 sleep '{"duration_ms": 200}' &
loader=$!
sleep 5
started=$SECONDS
FLOWFORGE_TAG=v2 stack_step "$load_dir/update.log" update || true
on_tag() { # every api, worker and web container runs TAG
    local c
    for c in $(docker ps -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME"); do
        case $(docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}} {{.Config.Image}}' "$c") in
        api\ * | worker\ * | web\ *) [[ $(docker inspect -f '{{.Config.Image}}' "$c") == *":$1" ]] || return 1 ;;
        esac
    done
}
check "rolling update: api, worker and web all run the v2 images ($((SECONDS - started)) s)" on_tag v2
started=$SECONDS
FLOWFORGE_TAG=$previous stack_step "$load_dir/rollback.log" update || true
check "rollback: all back on the $previous images ($((SECONDS - started)) s)" on_tag "$previous"
wait "$loader" || true
no_failures_no_losses update "update and rollback under load"
