#!/bin/sh
# The requests of one abuse scenario (tests/stack/abuse.sh), run inside a throwaway
# container on the edge network: prints the container's own address, then the HTTP status
# of each request, one per line. PROXY_IP is the proxy's address on that network.
set -eu
proxy=https://localhost:8443
c() { curl -sk --max-time 5 --resolve "localhost:8443:$PROXY_IP" -o /dev/null -w '%{http_code}\n' "$@"; }
hostname -i
case $1 in
bad-credentials)
    c -X PATCH "$proxy/tasks/$(printf '%02000d' 9)"
    for i in $(seq 1 20); do
        if [ $((i % 2)) -eq 0 ]; then set -- -H "Authorization: Bearer ff_guess$i"; else set --; fi
        c -X POST "$@" -H 'content-type: application/json' -d '{"title":"x"}' "$proxy/tasks"
    done
    ;;
forged-sign-ins)
    for i in $(seq 1 20); do
        c -X POST -H "X-Forwarded-For: 198.51.100.$i" -H 'content-type: application/json' \
            -d "{\"token\":\"ff_guess$i\"}" "$proxy/api/v1/session"
    done
    ;;
operator-guesses)
    for i in $(seq 1 70); do c -u "operator:guess$i" "$proxy/prometheus/"; done
    ;;
*) echo "unknown scenario $1" >&2; exit 2 ;;
esac
