#!/usr/bin/env bash
# The release path end to end on this machine (scripts/release.sh), with its own registry,
# staging and production:
#   1. this commit published (SHA-tagged images, SBOMs, pushed), deployed to staging and
#      smoke-tested, then promoted to production;
#   2. a next commit (an empty one, in a scratch clone) published and deployed to staging;
#      its promotion under load first with a canary bar no release can meet (the canary is
#      rejected and production keeps the release it runs), then for real;
#   3. a broken commit (its api's health check fails) deployed to staging: staging rolls
#      back by itself, and it never reaches production;
#   4. production rolled back to the first release on command.
# Production is under `flowforge load` from step 2's promotions to the end: no request may
# fail, no acknowledged task may be lost. Prints one line per check; exits non-zero when
# one fails. FLOWFORGE_RELEASE_KEEP=1 leaves the registry and both environments up.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
repo=$PWD
release=$repo/scripts/release.sh
work=$(realpath -m "${FLOWFORGE_RELEASE_TEST_WORK:-.run/release-test}")
export FLOWFORGE_RELEASE_HOME=$work/home
export FLOWFORGE_CANARY_SECONDS=${FLOWFORGE_CANARY_SECONDS:-30}
# The loads fall within one rate-limit minute of the same user.
export FLOWFORGE_RATE_LIMIT_PER_MINUTE=${FLOWFORGE_RATE_LIMIT_PER_MINUTE:-100000}
url=https://localhost:${FLOWFORGE_PRODUCTION_HTTPS_PORT:-8643}
# shellcheck source=tests/lib/checks.sh
source tests/lib/checks.sh

# runs ENV SHA: every api, worker and web container of ENV runs release SHA's image.
runs() {
    local env=$1 sha=$2 service c want
    for service in api worker web; do
        want=$(grep "^flowforge-$service " "$FLOWFORGE_RELEASE_HOME/releases/$sha/digests" | cut -d' ' -f2)
        want=$(docker image inspect -f '{{.Id}}' "$want") || return 1
        c=$($release compose "$env" ps -q "$service")
        [ -n "$c" ] || return 1
        for c in $c; do
            [ "$(docker inspect -f '{{.Image}}' "$c")" = "$want" ] || return 1
        done
    done
}

# verdict NAME: what became of a load run's tasks, counted in production's database.
verdict() {
    $release compose production run --rm -T -v "$work:/load:ro" migrate drill verdict --ids "/load/$1.ids" \
        --summary "/load/$1.json" --json 2>/dev/null | tail -1
}

# commit_next MESSAGE [COMMAND]: a new commit in the scratch clone (after COMMAND, run
# there); prints its SHA.
commit_next() {
    (cd "$work/next" && { [ -z "${2:-}" ] || bash -c "$2"; } && git commit -qa --allow-empty -m "$1" &&
        git rev-parse HEAD)
}

# step_time WHAT STARTED: how long a step took (and, once production is under load, when
# it started in the load's time, to line failures up with steps).
step_time() { echo "     $1 in $((SECONDS - $2)) s${load_started:+, from $(($2 - load_started)) s into the load}"; }

run_tests() {
    local first next broken started v
    first=$(git rev-parse HEAD)

    # 1. This commit, to staging and then production.
    started=$SECONDS
    check "publish: this commit's images pushed by digest" "$($release publish >"$work/publish-1.log" 2>&1 && echo true)"
    step_time "published" "$started"
    local record=$FLOWFORGE_RELEASE_HOME/releases/$first
    local sboms
    sboms=$(find "$record/sbom" -maxdepth 1 -name '*.cdx.json' | wc -l)
    check "publish: an SBOM per image, each listing what is in it ($sboms for $(wc -l <"$record/digests") images)" \
        "$([ "$sboms" -eq "$(wc -l <"$record/digests")" ] &&
            for f in "$record"/sbom/*.cdx.json; do jq -e '.components | length > 0' "$f" >/dev/null || exit 1; done && echo true)"
    check "publish: every image of the deployment by digest, none by tag" \
        "$(grep -q '@sha256:' "$record/images.yaml" && ! grep -E 'image: .*:[^@]*$' "$record/images.yaml" | grep -vq '@' && echo true)"
    check "registry: anonymous pulls refused (401), TLS checked against its CA" \
        "$([ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$FLOWFORGE_RELEASE_HOME/registry/ca.pem" \
            "https://localhost:${FLOWFORGE_RELEASE_REGISTRY_PORT:-5443}/v2/flowforge-api/tags/list")" = 401 ] && echo true)"
    started=$SECONDS
    check "staging: release deployed and smoke-tested" "$($release deploy >"$work/deploy-1.log" 2>&1 && echo true)"
    step_time "staging up" "$started"
    check "staging: api, worker and web run the release's digests" "$(runs staging "$first" && echo true)"
    started=$SECONDS
    check "production: the release promoted (first deployment)" "$($release promote >"$work/promote-1.log" 2>&1 && echo true)"
    step_time "production up" "$started"
    check "production: api, worker and web run the release's digests" "$(runs production "$first" && echo true)"

    # 2. The next commit: staging, then production under load, canary first.
    rm -rf "$work/next"
    git clone -q "$repo" "$work/next"
    git -C "$work/next" config user.email release-test@flowforge.invalid
    git -C "$work/next" config user.name "release test"
    next=$(commit_next "The next release")
    started=$SECONDS
    check "next release published from its own commit" \
        "$("$work/next/scripts/release.sh" publish >"$work/publish-2.log" 2>&1 && echo true)"
    step_time "published" "$started"
    check "staging: next release deployed and smoke-tested" "$($release deploy "$next" >"$work/deploy-2.log" 2>&1 && echo true)"

    $release token production >"$work/token" 2>/dev/null
    cp "$FLOWFORGE_RELEASE_HOME/production/secrets/ca.pem" "$work/ca.pem"
    chmod 644 "$work/token" "$work/ca.pem"
    $release compose production run --rm -T migrate drill counter install >/dev/null 2>&1
    cli_image=$(grep '^flowforge-cli ' "$record/digests" | cut -d' ' -f2)
    # Until stopped after the last step; the duration only bounds it.
    load production 1800
    local load_started=$SECONDS
    sleep 5

    started=$SECONDS
    FLOWFORGE_CANARY_MAX_P99_MS=0 $release promote "$next" >"$work/promote-rejected.log" 2>&1
    check "canary: a canary held to an impossible p99 is rejected ($(grep -o 'canary bad ([^)]*)' "$work/promote-rejected.log"))" \
        "$(grep -q 'canary bad' "$work/promote-rejected.log" && echo true)"
    check "canary: production still runs the first release, every container ($((SECONDS - started)) s)" \
        "$(runs production "$first" && echo true)"
    started=$SECONDS
    local promoted=false
    $release promote "$next" >"$work/promote-2.log" 2>&1 && promoted=true
    check "production: next release promoted, canary first ($(grep -o 'canary good ([^)]*)' "$work/promote-2.log"))" "$promoted"
    step_time "promoted" "$started"
    check "production: api, worker and web run the next release's digests" "$(runs production "$next" && echo true)"

    # 3. A broken commit: its api never becomes healthy.
    broken=$(commit_next "A release whose api fails its health check" \
        "sed -i 's|CMD \\[\"/usr/local/bin/api\", \"healthcheck\"\\]|CMD [\"/usr/local/bin/api\", \"no-such-command\"]|' deploy/images/api/Dockerfile")
    "$work/next/scripts/release.sh" publish >"$work/publish-3.log" 2>&1
    started=$SECONDS
    $release deploy "$broken" >"$work/deploy-3.log" 2>&1
    check "broken release: staging rolled back by itself ($((SECONDS - started)) s)" \
        "$(grep -q 'rolled back to' "$work/deploy-3.log" && runs staging "$next" && echo true)"
    check "broken release: it can't be promoted" "$($release promote "$broken" >/dev/null 2>&1 || echo true)"

    # 4. Production back to the first release, on command.
    started=$SECONDS
    check "rollback: production back to the first release on command" \
        "$($release rollback production >"$work/rollback.log" 2>&1 && runs production "$first" && echo true)"
    step_time "rolled back" "$started"
    stop_load production
    wait
    v=$(verdict production)
    report "production under load through promotion, canary and rollback" "$v"
    if ! jq -e '.failed == 0' <<<"$v" >/dev/null; then
        echo "     failed requests were sent between $(jq -c '.failed_between_s' "$work/production.json") s into the load"
        for c in $($release compose production ps -aq proxy); do
            docker inspect -f '     proxy: {{.State.Status}} since {{.State.StartedAt}}, restarts {{.RestartCount}}, OOM killed {{.State.OOMKilled}}' "$c"
            docker logs --tail 15 "$c" 2>&1 | sed 's/^/       /'
        done
    fi
}

mkdir -p "$work"
started=$SECONDS
run_tests
echo "     release path tested in $((SECONDS - started)) s"
[ "${FLOWFORGE_RELEASE_KEEP:-0}" = 1 ] || $release down >/dev/null 2>&1
echo "release: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
