# Client load for the stack-level scenarios (sourced): `flowforge load` from the CLI image,
# on the host's network, through the proxy like any client. Each run writes the ids the
# API acknowledged and a JSON summary of what the client saw into $load_dir.

# shellcheck shell=bash disable=SC2154
load_dir=$(mktemp -d /tmp/ffsystest-load.XXXX)
chmod 0777 "$load_dir"
printf '%s' "$TOKEN" >"$load_dir/token"
cp "$FLOWFORGE_SECRETS/ca.pem" "$load_dir/ca.pem"
chmod a+r "$load_dir"/*

# load NAME SECONDS RATE KIND PAYLOAD. Keep RATE under the per-user rate limit
# (FLOWFORGE_RATE_LIMIT_PER_MINUTE, 1200/min = 20/s).
load() {
    docker run --rm --network host -v "$load_dir:/load" "flowforge-cli:${FLOWFORGE_TAG:-dev}" load \
        --url "$base" --token-file /load/token --ca-file /load/ca.pem --duration "$2s" --rate "$3" \
        --kind "$4" --payload "$5" --ids-out "/load/$1.ids" >"$load_dir/$1.json"
}
# load_field NAME KEY: a number from the run's summary.
load_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$load_dir/$1.json" "$2"; }
acknowledged() { wc -l <"$load_dir/$1.ids"; }
# in_status NAME STATUS: how many of the run's acknowledged tasks are in STATUS.
in_status() {
    local ids
    ids=$(paste -sd, "$load_dir/$1.ids")
    psql_super -c "SELECT count(*) FROM tasks WHERE id = ANY('{${ids:-0}}'::bigint[]) AND status = '$2'"
}
all_completed() { [ "$(in_status "$1" completed)" = "$(acknowledged "$1")" ]; }

# stack_step LOG ARGS...: scripts/stack.sh ARGS, its output kept in LOG; shows the last
# line, or the last 20 when it fails (a failed check, not an aborted test).
stack_step() {
    local log=$1
    shift
    if scripts/stack.sh "$@" >"$log" 2>&1; then
        tail -n 1 "$log"
    else
        tail -n 20 "$log"
        return 1
    fi
}

# no_failures_no_losses NAME WHAT: waits (bounded) for the run's tasks, prints what the
# client saw, and checks that no request failed (a 503 counts) and no task was lost.
no_failures_no_losses() {
    local sent failures lost
    wait_for 120 all_completed "$1" || true
    sent=$(load_field "$1" sent)
    failures=$(($(load_field "$1" failed) + $(load_field "$1" told_to_retry)))
    lost=$(($(acknowledged "$1") - $(in_status "$1" completed)))
    echo "$2: $sent requests, $failures failed, $(acknowledged "$1") tasks acknowledged, $lost lost"
    check "$2: 0 of $sent requests failed" [ "$failures" -eq 0 ]
    check "$2: 0 of $(acknowledged "$1") tasks lost" [ "$lost" -eq 0 ]
}
