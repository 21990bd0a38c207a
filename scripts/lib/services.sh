# shellcheck shell=bash
# Private PostgreSQL and Redis servers for tests and local runs: installed from Debian's
# packages when missing, started on free loopback ports with data in a directory of our
# own, never touching a system instance. Source this file, then call start_services DIR.

PG_VERSION=15

ensure_packages() {
    local missing=()
    [ -x "/usr/lib/postgresql/$PG_VERSION/bin/initdb" ] || missing+=("postgresql-$PG_VERSION")
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing ${missing[*]} from Debian's packages"
        if [ "$(id -u)" -ne 0 ]; then
            echo "need root to install ${missing[*]} (or install them yourself)" >&2
            return 1
        fi
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        # The package starts a system cluster; we never use it.
        if command -v pg_ctlcluster >/dev/null; then pg_ctlcluster "$PG_VERSION" main stop 2>/dev/null || true; fi
        if command -v service >/dev/null; then service redis-server stop >/dev/null 2>&1 || true; fi
    fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Runs a command as the postgres user when we are root (PostgreSQL refuses to run as root).
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# start_services DIR: starts both servers with state under DIR (a database already there
# is kept) and exports FLOWFORGE_TEST_DATABASE_URL, FLOWFORGE_TEST_REDIS_URL, PG_BIN,
# SERVICES_DIR.
start_services() {
    SERVICES_DIR=$1
    ensure_packages
    PG_BIN=/usr/lib/postgresql/$PG_VERSION/bin
    mkdir -p "$SERVICES_DIR"
    [ "$(id -u)" -eq 0 ] && chown postgres "$SERVICES_DIR"
    local pg_port redis_port
    pg_port=$(free_port)
    redis_port=$(free_port)
    if [ ! -f "$SERVICES_DIR/pg/PG_VERSION" ]; then
        as_pg "$PG_BIN/initdb" -D "$SERVICES_DIR/pg" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$SERVICES_DIR/initdb.log" 2>&1 ||
            { cat "$SERVICES_DIR/initdb.log"; return 1; }
    fi
    # Durable commits (fsync, synchronous_commit on) as in production: benchmarks run here too.
    as_pg "$PG_BIN/pg_ctl" -D "$SERVICES_DIR/pg" -l "$SERVICES_DIR/pg.log" -w -t 60 start -o \
        "-p $pg_port -k $SERVICES_DIR -c listen_addresses=127.0.0.1 -c max_connections=400 -c shared_buffers=512MB \
         -c fsync=on -c synchronous_commit=on -c max_wal_size=2GB -c checkpoint_timeout=15min" >/dev/null ||
        { cat "$SERVICES_DIR/pg.log"; return 1; }
    redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
        --pidfile "$SERVICES_DIR/redis.pid" --logfile "$SERVICES_DIR/redis.log" --dir "$SERVICES_DIR"
    for _ in $(seq 100); do
        redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    export FLOWFORGE_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
    export FLOWFORGE_TEST_REDIS_URL="redis://127.0.0.1:$redis_port"
    export PG_BIN SERVICES_DIR
    echo "PostgreSQL on 127.0.0.1:$pg_port, Redis on 127.0.0.1:$redis_port (state in $SERVICES_DIR)"
}

stop_services() {
    [ -n "${SERVICES_DIR:-}" ] || return 0
    [ -f "$SERVICES_DIR/redis.pid" ] && kill "$(cat "$SERVICES_DIR/redis.pid")" 2>/dev/null
    [ -d "$SERVICES_DIR/pg" ] && { as_pg "$PG_BIN/pg_ctl" -D "$SERVICES_DIR/pg" -m immediate -w stop >/dev/null 2>&1 || true; }
    # Stopped: a second call (the EXIT trap after an explicit stop) has nothing to do.
    SERVICES_DIR=
    return 0
}
