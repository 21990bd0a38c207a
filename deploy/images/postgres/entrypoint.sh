#!/bin/sh
# Starts PostgreSQL for FlowForge. On the first start (empty data directory) it creates
# the cluster, the database and the roles, with passwords from secret files. Every start
# copies the TLS key into a private tmpfs file, because PostgreSQL refuses a key that
# others could read and mounted secrets keep their host permissions. WAL is archived to
# the backup repository (pgBackRest) continuously.
set -eu

secret() {
    file="/run/secrets/$1"
    [ -r "$file" ] || { echo "flowforge-postgres: missing secret $file" >&2; exit 2; }
    cat "$file"
}

: "${PGDATA:=/var/lib/postgresql/data}"
run=/run/postgresql
tls_cert=${POSTGRES_TLS_CERT:-/run/secrets/postgres_tls_cert}
tls_key=${POSTGRES_TLS_KEY:-/run/secrets/postgres_tls_key}
if [ ! -r "$tls_cert" ] || [ ! -r "$tls_key" ]; then
    echo "flowforge-postgres: TLS certificate or key missing ($tls_cert, $tls_key)" >&2
    exit 2
fi
# /tmp is this container's own tmpfs; /run/postgresql (the socket) is shared with the
# backup service, which must not read the key.
install -m 0600 "$tls_key" /tmp/server.key
install -m 0644 "$tls_cert" /tmp/server.crt
flowforge-pgbackrest-conf
# The socket directory is a volume (shared with the backup service): a socket or lock
# left by a killed server would otherwise stop this one.
rm -f "$run"/.s.PGSQL.*
# A member of a Patroni cluster: Patroni creates and starts the server.
[ "${1:-}" != cluster ] || exec flowforge-patroni


if [ ! -s "$PGDATA/PG_VERSION" ]; then
    echo "flowforge-postgres: initialising a new cluster in $PGDATA"
    superuser_pw=$(secret postgres_superuser_password)
    # Every secret checked before initdb: a cluster half made would not be made again.
    flowforge-postgres-roles --check
    pwfile="$run/initdb.pw"
    printf '%s\n' "$superuser_pw" >"$pwfile"
    initdb --username=postgres --pwfile="$pwfile" --auth-local=peer --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8 --data-checksums >/dev/null
    rm -f "$pwfile"
    cat >"$PGDATA/pg_hba.conf" <<HBA
# Local socket: only the server's own user (health checks, maintenance).
local   all   postgres                  peer
# Network: TLS and SCRAM only; anything else is refused.
hostssl all   all        0.0.0.0/0      scram-sha-256
hostssl all   all        ::/0           scram-sha-256
host    all   all        0.0.0.0/0      reject
host    all   all        ::/0           reject
HBA
    pg_ctl --silent --wait --options="-c listen_addresses='' -c unix_socket_directories=$run" start
    flowforge-postgres-roles --host="$run" --username=postgres --dbname=postgres
    pg_ctl --silent --wait stop
    echo "flowforge-postgres: cluster ready"
fi

exec postgres \
    -c listen_addresses='*' \
    -c unix_socket_directories="$run" \
    -c ssl=on -c ssl_cert_file=/tmp/server.crt -c ssl_key_file=/tmp/server.key \
    -c archive_mode=on -c archive_command='pgbackrest archive-push %p' \
    -c archive_timeout="${FLOWFORGE_ARCHIVE_TIMEOUT:-10}" \
    -c ssl_min_protocol_version=TLSv1.2 \
    -c password_encryption=scram-sha-256 \
    -c jit=off \
    -c log_destination=stderr -c log_line_prefix='%m [%p] %q%u@%d ' \
    -c log_connections=on -c log_disconnections=on \
    "$@"
