#!/usr/bin/env bash
# ab.sh LABEL: wrk at 64 connections, GET id, POST, list; 2 rounds of 15 s each, through
# the proxy. As run for docs/benchmarks.md: /tmp/lt/token holds `scripts/stack.sh token`'s
# token, /tmp/lt/id a task's id, /tmp/lt/post.lua the POST body of scripts/loadtest.sh.
set -u
cd "$(dirname "$0")/../../.." || exit
label=$1
token=$(cat /tmp/lt/token)
base=https://localhost:8443
id=$(cat /tmp/lt/id)
# shellcheck disable=SC2016  # $2 and the like are awk's
summarize='/Requests\/sec/ { rps = $2 } /^ +50%/ { p50 = $2 } /^ +99%/ { p99 = $2 } /Non-2xx/ { bad = $NF }
    END { printf "%-8s %-6s %9.0f req/s  p50 %9s  p99 %9s  non-2xx %s\n", label, route, rps, p50, p99, bad + 0 }'
for _ in 1 2; do
  for route in get post list; do
    case $route in
      get) args=("$base/tasks/$id") ;;
      post) args=(-s /tmp/lt/post.lua "$base/tasks") ;;
      list) args=("$base/tasks?limit=50") ;;
    esac
    wrk -t2 -c64 -d15s --latency -H "Authorization: Bearer $token" "${args[@]}" 2>&1 |
      awk -v label="$label" -v route="$route" "$summarize" | tee -a /tmp/lt/ab.txt
  done
done
