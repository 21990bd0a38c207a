# The restore drill (issue 6), sourced by system-test.sh against its running stack (it
# uses that script's check, api, compose and wait_for). Write tasks, back up, write more,
# note the moment T and a checksum of every row, write more, destroy the database
# container and its volume, restore to T: the task table must be exactly as it was at T.
# Then the same disaster without a target, to measure what continuous archiving loses.

# shellcheck shell=bash disable=SC2154
# One line per task: its id and the MD5 of the whole row.
row_sums() { psql_super -c 'SELECT id, md5(t::text) FROM tasks t ORDER BY id'; }
write_tasks() { # COUNT LABEL
    local body
    body=$(python3 -c 'import json,sys; print(json.dumps({"tasks": [{"title": f"{sys.argv[2]} {i}", "kind": "noop"} for i in range(int(sys.argv[1]))]}))' "$1" "$2")
    api -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' -d "$body" "$base/tasks/bulk"
}
settled() { [ "$(psql_super -c "SELECT count(*) FROM tasks WHERE status IN ('pending', 'running')")" = 0 ]; }
# The backup service mounts the data volume too (read-only, for pgBackRest): it goes
# with it, and holds no state of its own.
destroy_database() {
    compose kill postgres backup >/dev/null 2>&1
    compose rm -f postgres backup >/dev/null 2>&1
    docker volume rm "${COMPOSE_PROJECT_NAME}_pgdata" >/dev/null
}
serving() { [ "$(api -o /dev/null -w '%{http_code}' "$base/tasks?limit=1")" = 200 ]; }

backup_age() { python3 -c "import sys; sys.exit(0 if 0 <= float(sys.argv[1] or 'inf') < 3600 else 1)" \
    "$(promql 'time() - max(backup_last_success_timestamp_seconds)')"; }
check "the backup service took its first full backup and Prometheus has its age" wait_for 90 backup_age

drill_dir=$(mktemp -d /tmp/ffsystest-restore.XXXX)
check "drill: 200 tasks written (phase A)" [ "$(write_tasks 200 A)" = 201 ]
check "drill: a full backup is taken" scripts/stack.sh backup --type full
check "drill: 200 more tasks written (phase B)" [ "$(write_tasks 200 B)" = 201 ]
check "drill: the workers finished phases A and B" wait_for 60 settled
target=$(psql_super -c "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
row_sums >"$drill_dir/at-target"
sleep 2
check "drill: 200 more tasks written after T=$target (phase C)" [ "$(write_tasks 200 C)" = 201 ]
wait_for 60 settled || true
# Continuous archiving: close the current WAL segment so phase C is in the archive, as it
# would be within archive_timeout anyway.
segment=$(psql_super -c 'SELECT pg_walfile_name(pg_switch_wal())')
archived() { [ "$(psql_super -c "SELECT last_archived_wal >= '$segment' FROM pg_stat_archiver")" = t ]; }
check "drill: WAL through phase C archived ($segment)" wait_for 30 archived

disaster=$SECONDS
destroy_database
check "drill: database container and volume destroyed" [ -z "$(docker volume ls -q --filter "name=${COMPOSE_PROJECT_NAME}_pgdata")" ]
stack_step "$drill_dir/restore-to-t.log" restore --to "$target" || true
wait_for 120 serving || true
rto=$((SECONDS - disaster))
row_sums >"$drill_dir/restored"
rows=$(wc -l <"$drill_dir/at-target")
check "drill: restored to T, all $rows rows equal their checksums at T (RTO $rto s)" \
    cmp -s "$drill_dir/at-target" "$drill_dir/restored"
echo "RTO (destroy → restored and serving): $rto s"

# RPO: a stream of single task writes, then the same disaster with no target. What the
# archive had is back; what only the destroyed WAL held is lost.
first_write=$(date +%s.%N)
last_acked=$first_write
for i in $(seq 1 40); do
    if [ "$(api -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
        -d "{\"title\":\"rpo $i\",\"kind\":\"noop\"}" "$base/tasks")" = 201 ]; then
        last_acked=$(date +%s.%N)
    fi
    sleep 0.5
done
# What the archiver had done when the disaster struck (for the RPO figure below).
echo "archiver: $(psql_super -F ' ' -c 'SELECT archived_count, last_archived_wal, failed_count, last_failed_wal FROM pg_stat_archiver')"
destroy_database
stack_step "$drill_dir/restore-latest.log" restore || true
wait_for 120 serving || true
newest=$(psql_super -c "SELECT coalesce(extract(epoch FROM max(created_at)), $first_write) FROM tasks WHERE title LIKE 'rpo %'")
rpo=$(python3 -c "print(f'{max(0.0, $last_acked - $newest):.1f}')")
lost=$((40 - $(psql_super -c "SELECT count(*) FROM tasks WHERE title LIKE 'rpo %'")))
echo "RPO (newest acknowledged write − newest restored): $rpo s; $lost of 40 writes lost (archive_timeout 10 s)"
check "drill: restore to the newest archived WAL brings the stack back" serving
# archive_timeout (10 s) bounds what only the lost WAL held, plus a few seconds to push.
check "drill: RPO $rpo s is within archive_timeout (10 s) and the push (under 15 s)" \
    python3 -c "import sys; sys.exit(0 if $rpo < 15 else 1)"

