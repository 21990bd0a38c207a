# What the shell-level stack tests share (sourced by tests/swarm/run.sh and
# tests/release/run.sh): a check line, a load in the background, and the figures of
# its verdict.
# shellcheck shell=bash disable=SC2154
# (url and work are set by the test that sources this.)
passed=0
failed=0
command -v jq >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null; }

# check WHAT true|false: one line, counted.
check() {
    if [ "$2" = true ]; then
        echo "ok   $1"
        passed=$((passed + 1))
    else
        echo "FAIL $1"
        failed=$((failed + 1))
    fi
}

# load NAME SECONDS: `flowforge load` in the background at 15 creations a second (under
# the per-user limit) against $url, from the CLI image ($cli_image, else the dev one) on
# this machine's network, as this user: its token and CA are read from, and its results
# written to, $work. `wait` waits for it; stop_load NAME ends it sooner.
load() {
    docker run --rm --name "flowforge-load-$1-$$" --network host --user "$(id -u):$(id -g)" -v "$work:/load" \
        "${cli_image:-flowforge-cli:dev}" load \
        --url "$url" --token-file /load/token --ca-file /load/ca.pem --duration "$2s" --rate 15 \
        --ids-out "/load/$1.ids" >"$work/$1.json" 2>"$work/$1.log" &
}

# stop_load NAME: the load stops sending, waits for its answers and writes its summary.
stop_load() { docker stop -t 30 "flowforge-load-$1-$$" >/dev/null; }

# figures NAME VERDICT: what the load saw and what became of its tasks.
figures() {
    echo "     $1: $(jq -r '"requests \(.sent), failed \(.failed), told to retry \(.told_to_retry), acknowledged \(.acknowledged), lost \(.lost), completed twice \(.completed_twice)"' <<<"$2")"
    jq -e '.failed > 0' <<<"$2" >/dev/null && echo "     $1: failures: $(jq -c '.failure_kinds' <<<"$2")"
    return 0
}

# report NAME VERDICT: the figures of one test, and its load and task checks.
report() {
    local v=$2
    figures "$1" "$v"
    check "$1: no request failed" "$(jq '.failed == 0' <<<"$v")"
    check "$1: every acknowledged task completed, none twice" \
        "$(jq '.acknowledged > 0 and .lost == 0 and .completed_twice == 0' <<<"$v")"
}
