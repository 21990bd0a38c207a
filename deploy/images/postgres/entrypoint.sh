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

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    echo "flowforge-postgres: initialising a new cluster in $PGDATA"
    # Each read on its own line: a missing secret stops the script here (set -e).
    superuser_pw=$(secret postgres_superuser_password)
    owner_pw=$(secret postgres_owner_password)
    monitor_pw=$(secret postgres_monitor_password)
    # The app's login role and password, as its connection string names them: after a
    # password rotation (scripts/stack.sh rotate database) that is flowforge_app_alt.
    app_url=$(secret database_url_app)
    app_role=$(printf '%s' "$app_url" | sed -nE 's|^postgres://([^:@/]+):[^@]+@.*|\1|p')
    app_pw=$(printf '%s' "$app_url" | sed -nE 's|^postgres://[^:@/]+:([^@]+)@.*|\1|p')
    case "$app_role" in
    flowforge_app | flowforge_app_alt) ;;
    *) echo "flowforge-postgres: database_url_app must log in as flowforge_app or flowforge_app_alt" >&2; exit 2 ;;
    esac
    if [ -z "$app_pw" ] || [ -z "$owner_pw" ] || [ -z "$monitor_pw" ]; then
        echo "flowforge-postgres: a database password secret is empty" >&2
        exit 2
    fi
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
    # Passwords go in on standard input (psql variables), never on a command line.
    {
        printf '\\set owner_pw %s\n\\set app_pw %s\n\\set app_role %s\n\\set monitor_pw %s\n' \
            "$owner_pw" "$app_pw" "$app_role" "$monitor_pw"
        # These statements hold passwords: never logged, not even when one fails.
        echo "SET log_statement = 'none'; SET log_min_error_statement = 'panic';"
        echo "SET password_encryption = 'scram-sha-256';"
        if [ "$app_role" = flowforge_app ]; then
            echo "CREATE ROLE flowforge_app LOGIN PASSWORD :'app_pw';"
        else
            echo "CREATE ROLE flowforge_app NOLOGIN;"
            echo "CREATE ROLE :\"app_role\" LOGIN PASSWORD :'app_pw' IN ROLE flowforge_app;"
        fi
        cat <<'SQL'
CREATE ROLE flowforge_owner LOGIN PASSWORD :'owner_pw';
-- The metrics exporter: statistics views only, no table data.
CREATE ROLE flowforge_monitor LOGIN PASSWORD :'monitor_pw' CONNECTION LIMIT 3 IN ROLE pg_monitor;
CREATE DATABASE flowforge OWNER flowforge_owner;
REVOKE ALL ON DATABASE flowforge FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE flowforge TO flowforge_app;
GRANT CONNECT ON DATABASE flowforge TO flowforge_monitor;
\connect flowforge
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
ALTER SCHEMA public OWNER TO flowforge_owner;
GRANT USAGE ON SCHEMA public TO flowforge_app;
-- Whatever the owner creates later (migrations), the app may use but not alter.
ALTER DEFAULT PRIVILEGES FOR ROLE flowforge_owner IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO flowforge_app;
ALTER DEFAULT PRIVILEGES FOR ROLE flowforge_owner IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO flowforge_app;
SQL
    } | psql --quiet --set=ON_ERROR_STOP=1 --host="$run" --username=postgres --dbname=postgres
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
