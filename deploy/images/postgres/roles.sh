#!/bin/sh
# Creates FlowForge's database and roles in a new cluster, with passwords from secret
# files: `flowforge_owner` owns the schema and runs migrations, the app's role (the api
# and workers) may only read and write rows, `flowforge_monitor` (the exporter) reads
# statistics. Its arguments are psql's: where to connect as the superuser. Run once, by
# the single server's first start or by Patroni after it bootstraps a cluster.
# `flowforge-postgres-roles --check` only checks the secrets, before anything is created.
set -eu

secret() {
    file="/run/secrets/$1"
    [ -r "$file" ] || { echo "flowforge-postgres-roles: missing secret $file" >&2; exit 2; }
    cat "$file"
}

# Each read on its own line: a missing secret stops the script here (set -e).
owner_pw=$(secret postgres_owner_password)
monitor_pw=$(secret postgres_monitor_password)
# The app's login role and password, as its connection string names them: after a
# password rotation (scripts/stack.sh rotate database) that is flowforge_app_alt.
app_url=$(secret database_url_app)
app_role=$(printf '%s' "$app_url" | sed -nE 's|^postgres://([^:@/]+):[^@]+@.*|\1|p')
app_pw=$(printf '%s' "$app_url" | sed -nE 's|^postgres://[^:@/]+:([^@]+)@.*|\1|p')
case "$app_role" in
flowforge_app | flowforge_app_alt) ;;
*) echo "flowforge-postgres-roles: database_url_app must log in as flowforge_app or flowforge_app_alt" >&2; exit 2 ;;
esac
if [ -z "$app_pw" ] || [ -z "$owner_pw" ] || [ -z "$monitor_pw" ]; then
    echo "flowforge-postgres-roles: a database password secret is empty" >&2
    exit 2
fi
[ "${1:-}" != --check ] || exit 0

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
} | psql --quiet --set=ON_ERROR_STOP=1 "$@"
