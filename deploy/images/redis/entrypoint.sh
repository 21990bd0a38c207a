#!/bin/sh
# `flowforge-redis` starts Redis, over TLS only; `flowforge-redis healthcheck` pings it.
set -eu
conf=/run/redis/redis.conf
password_file=${REDIS_PASSWORD_FILE:-/run/secrets/redis_password}
exporter_password_file=${REDIS_EXPORTER_PASSWORD_FILE:-/run/secrets/redis_exporter_password}
tls_dir=${REDIS_TLS_DIR:-/run/secrets}
for file in "$password_file" "$exporter_password_file" "$tls_dir/redis_tls_cert" "$tls_dir/redis_tls_key" "$tls_dir/ca.pem"; do
    [ -r "$file" ] || { echo "flowforge-redis: missing secret $file" >&2; exit 2; }
done

if [ "${1:-}" = healthcheck ]; then
    answer=$(REDISCLI_AUTH=$(cat "$password_file") redis-cli --tls --cacert "$tls_dir/ca.pem" -h 127.0.0.1 -p 6379 \
        --no-auth-warning ping)
    [ "$answer" = PONG ]
    exit
fi

umask 077
mkdir -p /run/redis
{
    echo "bind 0.0.0.0 -::*"
    # The password and every key cross the data network: TLS only, no plain-text port.
    echo "port 0"
    echo "tls-port 6379"
    echo "tls-cert-file $tls_dir/redis_tls_cert"
    echo "tls-key-file $tls_dir/redis_tls_key"
    echo "tls-ca-cert-file $tls_dir/ca.pem"
    # Clients prove who they are with their password (and ACL user), not a certificate.
    echo "tls-auth-clients no"
    echo "tls-protocols \"TLSv1.2 TLSv1.3\""
    echo "protected-mode yes"
    printf 'requirepass %s\n' "$(cat "$password_file")"
    # The metrics exporter's own user: server statistics, no keys, no channels.
    printf 'user exporter on >%s resetkeys resetchannels -@all +ping +info +client|setname +slowlog|len +slowlog|get +latency|latest +latency|histogram\n' \
        "$(cat "$exporter_password_file")"
    echo "save \"\""
    echo "appendonly no"
    echo "dir /run/redis"
    echo "maxmemory ${REDIS_MAXMEMORY:-128mb}"
    echo "maxmemory-policy allkeys-lru"
    # Commands a cache never needs and an intruder would love.
    echo "rename-command FLUSHALL \"\""
    echo "rename-command CONFIG \"\""
    echo "rename-command DEBUG \"\""
    echo "rename-command MODULE \"\""
} >"$conf"
exec redis-server "$conf"
