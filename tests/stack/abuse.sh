# shellcheck shell=bash disable=SC2154
# One address abusing the entry point (sourced by system-test.sh, whose api allows 10
# refused credentials per address a minute): bad credentials, forged X-Forwarded-For,
# guessing the operator password. The scenarios run at once, each from a throwaway
# container on the edge network straight at the proxy, so each has a source address (and
# earns a penalty) of its own and no other check is refused because of it.

abuse_dir=$(mktemp -d /tmp/ffsystest-abuse.XXXX)
# Audit rows from before (an address Docker hands out again) are not the scenarios'.
abuse_started=$(psql_super -c "SELECT now()")
edge_proxy=$(docker inspect -f "{{(index .NetworkSettings.Networks \"${COMPOSE_PROJECT_NAME}_edge\").IPAddress}}" \
    "$(container proxy)")
for scenario in bad-credentials forged-sign-ins operator-guesses; do
    docker run --rm --network "${COMPOSE_PROJECT_NAME}_edge" -e PROXY_IP="$edge_proxy" \
        -v "$PWD/tests/stack/edge-client.sh:/edge-client.sh:ro" --entrypoint sh \
        "flowforge-proxy:${FLOWFORGE_TAG:-dev}" /edge-client.sh "$scenario" >"$abuse_dir/$scenario" 2>&1 &
done
wait
# source_of SCENARIO: the address it came from. codes_of SCENARIO: its status codes.
source_of() { head -n 1 "$abuse_dir/$1"; }
codes_of() { sed 1d "$abuse_dir/$1"; }
# "N code M code" of a scenario's status codes.
tally_codes() { codes_of "$1" | sort | uniq -c | tr -s ' \n' ' '; }

# 1. A change with a 2 kB path, then 20 with bad or missing bearer tokens: refused (401)
#    up to the limit, then 429 before any lookup; audited as a handful of counted rows.
#    The two api replicas learn each other's counts every 100 ms, so a few more than the
#    limit may be looked up.
refused_then_limited() {
    echo "  from $(source_of bad-credentials): $(tally_codes bad-credentials)"
    [ "$(codes_of bad-credentials | head -n 1)" = 401 ] &&
        [ "$(codes_of bad-credentials | grep -c '^401$')" -le 15 ] &&
        [ "$(codes_of bad-credentials | tail -n 5 | sort -u)" = 429 ]
}
check "21 changes with bad or no token from one address: 401, then 429 past the limit" refused_then_limited
tallied() {
    local rows total longest
    IFS='|' read -r rows total longest <<<"$(psql_super -c "SELECT count(*), coalesce(sum(occurrences), 0),
        coalesce(max(length(path)), 0) FROM audit_log WHERE client_ip = '$(source_of bad-credentials)' AND at >= '$abuse_started'")"
    echo "  audit rows: $rows for $total refusals, longest path $longest bytes"
    # Each api replica writes a row per kind (401 POST, 429 POST, PATCH) every 10 s.
    [ "$total" -eq 21 ] && [ "$rows" -le 8 ] && [ "$longest" -le 512 ]
}
check "... audited as a handful of rows with their counts, paths capped at 512 bytes" wait_for 25 tallied

# 2. Failed sign-ins, each claiming another address in X-Forwarded-For: limited as one
#    address all the same, and the audit names the real one.
spoofer=$(source_of forged-sign-ins)
not_escaped() {
    local forged real
    forged=$(psql_super -c "SELECT count(*) FROM audit_log WHERE client_ip LIKE '198.51.100.%'")
    real=$(psql_super -c "SELECT coalesce(sum(occurrences), 0) FROM audit_log
                          WHERE client_ip = '$spoofer' AND at >= '$abuse_started'")
    echo "  from $spoofer: $(tally_codes forged-sign-ins); audited: $real under the real address, $forged forged"
    [ "$(codes_of forged-sign-ins | head -n 1)" = 401 ] &&
        [ "$(codes_of forged-sign-ins | tail -n 5 | sort -u)" = 429 ] && [ "$forged" -eq 0 ] && [ "$real" -eq 20 ]
}
check "20 sign-ins with rotating forged X-Forwarded-For: limited as one address, audited as the real one" \
    wait_for 25 not_escaped

# 3. Guessing the operator password: past 60 a minute the proxy refuses before checking.
guessing_stopped() {
    echo "  $(tally_codes operator-guesses)"
    [ "$(codes_of operator-guesses | head -n 1)" = 401 ] && [ "$(codes_of operator-guesses | tail -n 5 | sort -u)" = 429 ]
}
check "70 operator password guesses from one address: 429 from the proxy past 60 a minute" guessing_stopped


# 4. Memory: two bulk bodies at the size limit (8 MiB) made of tiny JSON values at once.
#    Refused after a count of their values, before any is parsed; no replica restarts.
restarts() { for c in $(docker ps -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" \
    --filter "label=com.docker.compose.service=api"); do docker inspect -f '{{.RestartCount}}' "$c"; done |
    awk '{ n += $1 } END { print n + 0 }'; }
python3 -c 'import sys; n = (8 * 1024 * 1024 - 64) // 2
sys.stdout.write("{\"tasks\": [{\"title\": \"x\", \"payload\": {\"a\": [" + "0," * (n - 1) + "0]}}]}")' >"$abuse_dir/tiny-values.json"
restarts_before=$(restarts)
for i in 1 2; do
    api -o /dev/null -w '%{http_code}\n' -H 'content-type: application/json' --data-binary "@$abuse_dir/tiny-values.json" \
        "$base/tasks/bulk" >"$abuse_dir/bulk-$i" &
done
wait
refused_without_restart() {
    echo "  answers: $(cat "$abuse_dir"/bulk-* | paste -sd' '); api restarts: $restarts_before before, $(restarts) after"
    [ "$(cat "$abuse_dir"/bulk-* | sort -u)" = 413 ] && [ "$(restarts)" = "$restarts_before" ]
}
check "two 8 MiB bodies of tiny JSON values at once: 413, no api replica restarts" refused_without_restart
rm -rf "$abuse_dir"
