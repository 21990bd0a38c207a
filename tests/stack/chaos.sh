# The chaos suite (issue 6), sourced by system-test.sh after load-lib.sh, against its
# running stack. Each scenario breaks the stack on purpose while `flowforge load` creates
# tasks through the proxy, then reports what a client and an operator would count:
#   lost           acknowledged (201) by the API, never completed;
#   completed twice  a completion recorded more than once for one task (counted by a
#                  trigger this script installs: every transition into `completed`);
#   ran again      completed on a later attempt, because the worker running it died
#                  (at-least-once execution; not an error, but a number to know);
#   failed         requests answered with anything but 201 or, where the scenario allows
#                  it, 503 or 429 with Retry-After; timeouts (10 s) count as failed;
#   recovered      how long until the stack served (or finished the work) again.
# Every loop is bounded in count and time.

# shellcheck shell=bash disable=SC2154
psql_super -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
CREATE TABLE chaos_completions (task_id bigint NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE FUNCTION chaos_count_completion() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
    INSERT INTO chaos_completions (task_id) VALUES (NEW.id);
    RETURN NULL;
END
$$;
-- Every write that sets `completed`, a stale rewrite of a completed task included.
CREATE TRIGGER chaos_count_completion AFTER UPDATE OF status ON tasks FOR EACH ROW
    WHEN (NEW.status = 'completed') EXECUTE FUNCTION chaos_count_completion();
SQL

run_ids() { paste -sd, "$load_dir/$1.ids"; }
completions_counted() {
    psql_super -c "SELECT count(DISTINCT task_id) FROM chaos_completions WHERE task_id = ANY('{$(run_ids "$1")}'::bigint[])"
}
completed_twice() {
    psql_super -c "SELECT count(*) FROM (SELECT task_id FROM chaos_completions
        WHERE task_id = ANY('{$(run_ids "$1")}'::bigint[]) GROUP BY task_id HAVING count(*) > 1) twice"
}
ran_again() {
    psql_super -c "SELECT count(*) FROM tasks WHERE id = ANY('{$(run_ids "$1")}'::bigint[])
        AND status = 'completed' AND attempts > 1"
}
restarts() { # SERVICE...: restarts of their containers, summed
    local service c total=0
    for service in "$@"; do
        for c in $(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" \
            --filter "label=com.docker.compose.service=$service"); do
            total=$((total + $(docker inspect -f '{{.RestartCount}}' "$c")))
        done
    done
    echo "$total"
}
# no_restart_since WHAT: the api and worker containers have restarted no more since $before was counted.
no_restart_since() {
    check "chaos: $1: api and workers recovered without a restart" [ "$(restarts api worker)" -eq "$before" ]
}
since() { python3 -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.1f}')" "$1"; }
# until_served SECONDS: seconds (0.1 s) until a task creation is acknowledged again.
until_served() {
    local start deadline=$((SECONDS + $1))
    start=$(date +%s.%N)
    until [ "$(api -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
        -d '{"title":"chaos probe","kind":"noop"}' "$base/tasks")" = 201 ]; do
        [ $SECONDS -lt $deadline ] || { echo "never (over $1 s)"; return 1; }
        sleep 0.25
    done
    since "$start"
}
# kill9 CONTAINER: SIGKILL to its process from the host, like a crash (`docker kill`
# would count as a manual stop, and the restart policy would leave it down).
# A restarting container has no process (pid 0, and `kill -9 0` would hit this script).
kill9() {
    local pid
    pid=$(docker inspect -f '{{.State.Pid}}' "$1" 2>/dev/null) || return 1
    [ "${pid:-0}" -gt 0 ] && kill -9 "$pid"
}
slowest() { python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["latency_ms"]["max"] or 0))' "$load_dir/$1.json"; }

# verdict NAME WHAT RECOVERY [503-allowed]: waits (bounded) for the run's tasks, prints the
# scenario's line and checks 0 lost, 0 completed twice and 0 failed requests.
verdict() {
    local name=$1 what=$2 recovery=$3 allow_503=${4:-} acked lost twice again errors told_to_retry slowest counted
    wait_for 120 all_completed "$name" || true
    acked=$(acknowledged "$name")
    lost=$((acked - $(in_status "$name" completed)))
    twice=$(completed_twice "$name")
    again=$(ran_again "$name")
    errors=$(load_field "$name" failed)
    told_to_retry=$(load_field "$name" told_to_retry)
    slowest=$(slowest "$name")
    echo "chaos | $what | $(load_field "$name" sent) requests: $errors failed, $told_to_retry told to retry (503/429 + Retry-After)," \
        "slowest $slowest ms | $acked tasks: $lost lost, $twice completed twice, $again ran again | recovered: $recovery"
    [ "$errors" -eq 0 ] || echo "     failures: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["failure_kinds"])' "$load_dir/$name.json")"
    check "chaos: $what: 0 of $acked tasks lost" [ "$lost" -eq 0 ]
    # The counter must have seen every completion for its 0 to mean anything.
    counted=$(completions_counted "$name")
    once_each() { [ "$twice" -eq 0 ] && [ "$counted" -eq $((acked - lost)) ]; }
    check "chaos: $what: 0 tasks completed twice ($counted completions counted)" once_each
    if [ -n "$allow_503" ]; then
        check "chaos: $what: no request failed or hung ($told_to_retry told to retry with 503/429 + Retry-After)" [ "$errors" -eq 0 ]
    else
        check "chaos: $what: 0 failed requests" [ $((errors + told_to_retry)) -eq 0 ]
    fi
}

# --- 1. kill -9 a worker mid-task, repeatedly, while tasks flow ------------------------
# Tasks that take 1 s, so each worker always holds several. Its leases expire (15 s) and
# the rescue gives them to another worker: those are the tasks that "ran again".
load workers 45 12 sleep '{"duration_ms": 1000}' &
loader=$!
kills=0 before=$(restarts worker)
for _ in 1 2 3 4 5; do
    sleep 7
    kill9 "$(container worker "$((RANDOM % 2 + 1))")" && kills=$((kills + 1))
    last_kill=$(date +%s.%N)
done
wait "$loader" || true
wait_for 120 all_completed workers || true
check "chaos: 5 kills of a worker under load ($kills done)" [ "$kills" -eq 5 ]
verdict workers "kill -9 of a worker x$kills" "every task completed $(since "$last_kill") s after the last kill"
hit_mid_task() { [ "$(ran_again workers)" -ge "$kills" ]; }
check "chaos: the kills caught tasks mid-run ($(ran_again workers) rescued and run again)" hit_mid_task
workers_restarted() { [ "$(restarts worker)" -eq $((before + kills)) ]; }
check "chaos: the killed workers restarted by themselves" wait_for 60 workers_restarted

# --- 2. kill -9 each api replica under load -----------------------------------------
load api 30 12 noop '{}' &
loader=$!
back_in=()
replicas=("$(container api 1)" "$(container api 2)")
for victim in "${replicas[@]}"; do
    sleep 6
    before=$(docker inspect -f '{{.RestartCount}}' "$victim")
    killed=$(date +%s.%N)
    kill9 "$victim" || continue
    healthy_again() { [ "$(docker inspect -f '{{.State.Health.Status}} {{.RestartCount}}' "$victim")" = "healthy $((before + 1))" ]; }
    wait_for 60 healthy_again && back_in+=("$(since "$killed") s")
done
wait "$loader" || true
verdict api "kill -9 of each api replica" "replicas healthy again after ${back_in[*]}"
two_replicas_back() { [ "${#back_in[@]}" -eq 2 ] && [ "${replicas[0]}" != "${replicas[1]}" ]; }
check "chaos: both api replicas, killed in turn, came back by themselves" two_replicas_back

# --- 3. PostgreSQL stopped and started under load ------------------------------------
# While it is down the API must answer at once: 503 with Retry-After, never a 500 and
# never a hang; when it is back, everything recovers by itself.
load postgres 40 10 noop '{}' &
loader=$!
sleep 8
before=$(restarts api worker)
stopped=$(date +%s.%N)
scripts/stack.sh compose stop postgres >/dev/null 2>&1
outage=$(mktemp)
sleep 2
for _ in 1 2 3 4 5; do
    api -o /dev/null -D - -w 'status %{http_code} in %{time_total} s\n' -H 'Content-Type: application/json' \
        -d '{"title":"during the outage","kind":"noop"}' "$base/tasks" >>"$outage" || echo "status 000" >>"$outage"
    sleep 1
done
told_to_retry() {
    [ "$(grep -c '^status 503 ' "$outage")" -eq 5 ] && [ "$(grep -ci '^retry-after: ' "$outage")" -eq 5 ] &&
        [ "$(grep -ci '^strict-transport-security: ' "$outage")" -eq 5 ] && [ "$(grep -ci '^x-request-id: ' "$outage")" -eq 5 ]
}
check "chaos: PostgreSQL down: the API answers 503 with Retry-After, HSTS and its request id ($(grep '^status' "$outage" | awk '{ print $4 }' | sort -n | tail -n 1) s at most)" \
    told_to_retry
down_for=$(since "$stopped")
scripts/stack.sh compose start postgres >/dev/null 2>&1
served_after=$(until_served 120) || true
wait "$loader" || true
verdict postgres "PostgreSQL stopped for $down_for s under load" "tasks accepted again $served_after s after it started" 503-allowed
# The pool's acquire timeout (3 s) bounds the wait for an answer, with room for the machine.
check "chaos: PostgreSQL down: no client waited over 5 s for its answer ($(slowest postgres) ms at most)" \
    [ "$(slowest postgres)" -lt 5000 ]
no_restart_since "PostgreSQL back"
rm -f "$outage"

# --- 4. every database connection terminated; then the pools exhausted ----------------
load backends 30 12 noop '{}' &
loader=$!
before=$(restarts api worker)
terminated=0
for _ in 1 2 3; do
    sleep 6
    terminated=$((terminated + $(psql_super -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
        WHERE datname = 'flowforge' AND usename LIKE 'flowforge_app%'")))
done
served_after=$(until_served 60) || true
wait "$loader" || true
check "chaos: app connections were there to terminate ($terminated)" [ "$terminated" -gt 0 ]
verdict backends "pg_terminate_backend of all $terminated app connections, 3 times" \
    "tasks accepted $served_after s after the last termination" 503-allowed
no_restart_since "terminated connections"

# A lock that blocks every query on tasks for 8 s (a migration gone wrong): each request
# holds a pooled connection while it waits, until every pool is exhausted.
load pool 30 12 noop '{}' &
loader=$!
sleep 5
psql_super -c "BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(8); COMMIT" >/dev/null
served_after=$(until_served 60) || true
wait "$loader" || true
verdict pool "every pool exhausted by an 8 s table lock" "tasks accepted $served_after s after the lock went" 503-allowed
check "chaos: the pools were exhausted: $(load_field pool told_to_retry) requests told to retry (503/429 + Retry-After)" \
    [ "$(load_field pool told_to_retry)" -gt 0 ]
no_restart_since "exhausted pools"

# --- 5. Redis stopped under load: the API keeps answering correctly --------------------
load redis 30 12 noop '{}' &
loader=$!
sleep 5
stopped=$(date +%s.%N)
scripts/stack.sh compose stop redis >/dev/null 2>&1
redis_state() { api "$base/ready" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["status"], d["redis"])'; }
redis_down() { [ "$(redis_state)" = "ready unavailable" ]; }
check "chaos: Redis stopped: the api reports it unavailable and stays ready" wait_for 20 redis_down
read_back=$(api -o /dev/null -w '%{http_code}' "$base/tasks/$(tail -n 1 "$load_dir/api.ids")") || true
check "chaos: Redis stopped: tasks are still read (from PostgreSQL): $read_back" [ "$read_back" = 200 ]
sleep 10
down_for=$(since "$stopped")
started=$(date +%s.%N)
scripts/stack.sh compose start redis >/dev/null 2>&1
redis_up() { [ "$(redis_state)" = "ready connected" ]; }
wait_for 60 redis_up && reconnected="the api reconnected $(since "$started") s after Redis started" || reconnected="never"
wait "$loader" || true
verdict redis "Redis stopped for $down_for s under load" "$reconnected"

# --- 6. a full scratch space and a panicking handler: the task fails, the worker lives --
workers_started=$(for c in $(docker ps -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" \
    --filter "label=com.docker.compose.service=worker"); do docker inspect -f '{{.State.StartedAt}}' "$c"; done | sort)
load handlers 20 10 noop '{}' &
loader=$!
create() { api -H 'Content-Type: application/json' -d "$1" "$base/tasks" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["id"])'; }
task_field() { api "$base/tasks/$1" | python3 -c 'import json,sys; d=json.load(sys.stdin)["data"]; print(d.get(sys.argv[1]) or "")' "$2"; }
is_status() { [ "$(task_field "$1" status)" = "$2" ]; }
# The worker's /tmp is a 16 MB tmpfs: 64 MB cannot fit.
filler=$(create '{"title":"fill the scratch space","kind":"fill_scratch","max_attempts":1,"payload":{"bytes":67108864}}') || true
panicker=$(create '{"title":"panic","kind":"panic","max_attempts":1}') || true
check "chaos: a task that fills the worker's scratch tmpfs fails" wait_for 30 is_status "$filler" failed
echo "     its error: $(task_field "$filler" last_error)"
check "chaos: the scratch task's error says the space ran out" grep -q 'No space left on device' <<<"$(task_field "$filler" last_error)"
check "chaos: a task whose handler panics fails" wait_for 30 is_status "$panicker" failed
check "chaos: the panic is its error" grep -q 'handler panicked' <<<"$(task_field "$panicker" last_error)"
# The failed write's file was removed: half that worker's tmpfs takes a task again. (Tasks
# go to whichever worker claims them first: a few tries land one on the same worker.)
filled=$(task_field "$filler" leased_by)
freed_on_the_same_worker() {
    local t
    for _ in $(seq 12); do
        t=$(create '{"title":"scratch after","kind":"fill_scratch","max_attempts":1,"payload":{"bytes":8388608}}') || return 1
        wait_for 30 is_status "$t" completed || return 1
        [ "$(task_field "$t" leased_by)" = "$filled" ] && return 0
    done
    return 1
}
check "chaos: the scratch space was freed: an 8 MB scratch task completes on the same worker ($filled)" \
    freed_on_the_same_worker
wait "$loader" || true
verdict handlers "a full scratch tmpfs and a panicking handler" "nothing to recover: no worker went down"
workers_now=$(for c in $(docker ps -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" \
    --filter "label=com.docker.compose.service=worker"); do docker inspect -f '{{.State.StartedAt}}' "$c"; done | sort)
check "chaos: both workers lived on (same containers, same processes, no restart)" [ "$workers_now" = "$workers_started" ]

psql_super >/dev/null <<'SQL'
DROP TRIGGER chaos_count_completion ON tasks;
DROP FUNCTION chaos_count_completion();
DROP TABLE chaos_completions;
SQL
