#!/bin/sh
# Patroni's bootstrap of a cluster from the backup repository (FLOWFORGE_BOOTSTRAP=restore):
# the newest backup's files into the data directory Patroni names. Patroni then starts
# PostgreSQL in recovery, which replays archived WAL to the target and promotes itself.
set -eu
datadir=
for arg in "$@"; do
    case "$arg" in --datadir=*) datadir=${arg#--datadir=} ;; esac
done
[ -n "$datadir" ] || { echo "flowforge-patroni-restore: Patroni gave no --datadir" >&2; exit 2; }
# Recovery settings are Patroni's (recovery_conf): pgBackRest writes none of its own.
mkdir -p "$datadir"
chmod 0700 "$datadir"
exec pgbackrest restore --pg1-path="$datadir" --type=none
