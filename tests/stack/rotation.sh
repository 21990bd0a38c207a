# Secret rotation with no downtime (issue 6), sourced by system-test.sh after the restore
# drill and load-lib.sh. Under steady client load: the database passwords (the app moves
# to its second login role, the old one loses its login; the owner gets a new password),
# then the webhook deployment key (new key, every user's secret resealed, previous kept,
# then retired). No request may
# fail, no task be lost. Then a restore to the drill's T, a moment before the rotation:
# the old passwords come back with the data, and the restore must re-apply the new ones.

# shellcheck shell=bash disable=SC2154
old_url="$drill_dir/old_database_url_app"
(umask 077 && cp "$FLOWFORGE_SECRETS/database_url_app" "$old_url")
old_role=$(sed -E 's|^postgres://([^:]+):.*|\1|' "$old_url")
load rotation 150 12 noop '{}' &
loader=$!
sleep 5
started=$SECONDS
check "rotation: rotate database" stack_step "$load_dir/rotate-database.log" rotate database
echo "     database passwords rotated in $((SECONDS - started)) s"
started=$SECONDS
# A user's webhook secret exists, so the reseal has something to do.
api -X POST -H 'content-type: application/json' -d '{}' "$base/api/v1/webhook-secrets" >"$load_dir/webhook-secret.json"
check "rotation: rotate webhook-key" stack_step "$load_dir/rotate-webhook-key.log" rotate webhook-key
second_rotation_refused() { ! scripts/stack.sh rotate webhook-key >/dev/null 2>&1; }
check "rotation: a second rotate webhook-key is refused while one is under way" second_rotation_refused
# What each running worker said when it started: how many deployment keys it holds, one line
# per worker (a worker without the line shows as "none").
signing_keys() {
    local c keys
    for c in $(docker ps -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" \
        --filter "label=com.docker.compose.service=worker"); do
        keys=$(docker logs "$c" 2>&1 | grep -o '"webhook_secrets_keys":[0-9]*' | tail -n 1 | cut -d: -f2)
        echo "${keys:-none}"
    done | paste -sd,
}
check "rotation: every worker holds the new and the previous deployment key ($(signing_keys))" [ "$(signing_keys)" = 2,2 ]
check "rotation: retire-webhook-key" stack_step "$load_dir/retire-webhook-key.log" rotate retire-webhook-key
resealed() { psql_super -c "SELECT count(DISTINCT key_id) FROM webhook_secrets" | grep -qx 1 &&
    grep -q '"secret":"whsec_' "$load_dir/webhook-secret.json"; }
check "rotation: every webhook secret resealed with the new key" resealed
check "rotation: after the retirement every worker holds the new key only ($(signing_keys))" [ "$(signing_keys)" = 1,1 ]
echo "     webhook deployment key rotated and the previous one retired in $((SECONDS - started)) s"
wait "$loader" || true
no_failures_no_losses rotation "secret rotation under load"

new_role=$(sed -E 's|^postgres://([^:]+):.*|\1|' "$FLOWFORGE_SECRETS/database_url_app")
app_roles() { psql_super -c "SELECT string_agg(DISTINCT usename, ',') FROM pg_stat_activity
    WHERE datname = 'flowforge' AND usename LIKE 'flowforge_app%'"; }
only_new_role() { [ "$(app_roles)" = "$new_role" ] && [ "$new_role" != "$old_role" ]; }
check "rotation: api and workers connect as $new_role only (were $old_role): $(app_roles)" only_new_role
# The old connection string, tried the way a service would: over TLS from the data network.
connects() {
    docker run --rm --network "${COMPOSE_PROJECT_NAME}_data" -v "$1:/url:ro" -v "$FLOWFORGE_SECRETS/ca.pem:/run/secrets/ca.pem:ro" \
        --entrypoint sh "flowforge-postgres:${FLOWFORGE_TAG:-dev}" -c 'psql "$(cat /url)" -XAtqc "SELECT 1"' 2>&1
}
chmod a+r "$old_url"
refused=$(connects "$old_url" || true)
check "rotation: the old database password no longer logs in ($(grep -o 'FATAL: .*' <<<"$refused" | head -n 1))" \
    grep -q 'not permitted to log in\|password authentication failed' <<<"$refused"
migrates() { scripts/stack.sh compose run --rm -T migrate >/dev/null 2>&1; }
check "rotation: migrations run with the new owner password" migrates

started=$SECONDS
check "restore over the live volume to T" stack_step "$load_dir/restore-live.log" restore --to "$target"
wait_for 120 serving || true
row_sums >"$drill_dir/restored-again"
check "restore over the live volume to T, before the rotation: serving with the new passwords ($((SECONDS - started)) s)" serving
check "restore over the live volume to T: all $rows rows equal their checksums at T" \
    cmp -s "$drill_dir/at-target" "$drill_dir/restored-again"
# The restored data had the old role able to log in, with its old password: not any more.
refused=$(connects "$old_url" || true)
check "restore to before the rotation: the old password still does not log in" \
    grep -q 'not permitted to log in\|password authentication failed' <<<"$refused"
rm -f "$old_url"
rm -rf "$drill_dir"
