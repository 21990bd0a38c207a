#!/bin/sh
# Writes pgBackRest's configuration ($PGBACKREST_CONFIG, on this container's tmpfs) from
# the environment and secret files. Shared by the database (WAL archiving) and the backup
# service (backups, restores), so both always agree on the repository.
#   FLOWFORGE_BACKUP_REPO_TYPE      posix (a volume, default) or s3 (object storage)
#   FLOWFORGE_BACKUP_REPO_PATH      path in the volume or bucket (default /var/lib/pgbackrest)
#   FLOWFORGE_BACKUP_RETENTION_FULL full backups kept, with everything they need (default 2)
#   FLOWFORGE_BACKUP_RETENTION_DIFF differential backups kept (default 6)
#   FLOWFORGE_BACKUP_S3_BUCKET, _ENDPOINT, _REGION, and the secrets backup_s3_key and
#   backup_s3_key_secret, for s3; FLOWFORGE_BACKUP_S3_URI_STYLE host (default: the bucket
#   in the host name, as AWS wants) or path (the bucket in the path, as servers without
#   wildcard DNS want); FLOWFORGE_BACKUP_S3_CA_FILE, a CA bundle to check the server's
#   certificate with instead of the system's
#   FLOWFORGE_BACKUP_MEMBERS        the backup service beside a cluster: its members' names
#                                   (pg1,pg2,pg3), each member's data directory mounted at
#                                   /var/lib/postgresql/NAME and its socket directory at
#                                   /run/postgresql/NAME. Backups then read a standby's
#                                   files, sparing the leader the copy.
# The repository is encrypted (AES-256) with the backup_cipher_pass secret.
set -eu

secret() {
    file="/run/secrets/$1"
    [ -r "$file" ] || { echo "pgbackrest-conf: missing secret $file" >&2; exit 2; }
    cat "$file"
}

type=${FLOWFORGE_BACKUP_REPO_TYPE:-posix}
umask 077
{
    echo "[global]"
    echo "repo1-type=$type"
    echo "repo1-path=${FLOWFORGE_BACKUP_REPO_PATH:-/var/lib/pgbackrest}"
    echo "repo1-cipher-type=aes-256-cbc"
    echo "repo1-cipher-pass=$(secret backup_cipher_pass)"
    echo "repo1-retention-full=${FLOWFORGE_BACKUP_RETENTION_FULL:-2}"
    echo "repo1-retention-diff=${FLOWFORGE_BACKUP_RETENTION_DIFF:-6}"
    case "$type" in
    posix) ;;
    s3)
        echo "repo1-s3-bucket=${FLOWFORGE_BACKUP_S3_BUCKET:?set FLOWFORGE_BACKUP_S3_BUCKET}"
        echo "repo1-s3-endpoint=${FLOWFORGE_BACKUP_S3_ENDPOINT:?set FLOWFORGE_BACKUP_S3_ENDPOINT}"
        echo "repo1-s3-region=${FLOWFORGE_BACKUP_S3_REGION:?set FLOWFORGE_BACKUP_S3_REGION}"
        echo "repo1-s3-key=$(secret backup_s3_key)"
        echo "repo1-s3-key-secret=$(secret backup_s3_key_secret)"
        echo "repo1-s3-uri-style=${FLOWFORGE_BACKUP_S3_URI_STYLE:-host}"
        [ -z "${FLOWFORGE_BACKUP_S3_CA_FILE:-}" ] || echo "repo1-storage-ca-file=$FLOWFORGE_BACKUP_S3_CA_FILE"
        ;;
    *) echo "pgbackrest-conf: FLOWFORGE_BACKUP_REPO_TYPE must be posix or s3, not $type" >&2; exit 2 ;;
    esac
    echo "compress-type=zst"
    echo "start-fast=y"
    echo "archive-async=n"
    echo "log-level-console=warn"
    echo "log-level-file=off"
    echo "lock-path=/tmp/pgbackrest"
    # WAL is pushed by a background process, two files at a time, that takes every file
    # ready to go at once: a backlog (after a slow push, or at a shutdown, which waits for
    # the archiver) clears in one round instead of one pgbackrest run per file. Only its
    # status files go to the spool. Restores fetch WAL one file at a time as before.
    echo "[global:archive-push]"
    echo "archive-async=y"
    echo "process-max=2"
    echo "spool-path=/tmp/pgbackrest-spool"
    echo "[flowforge]"
    if [ -n "${FLOWFORGE_BACKUP_MEMBERS:-}" ]; then
        # pgBackRest asks each which is the primary; one member down is skipped.
        echo "backup-standby=y"
        index=0
        for member in $(echo "$FLOWFORGE_BACKUP_MEMBERS" | tr ',' ' '); do
            index=$((index + 1))
            echo "pg$index-path=/var/lib/postgresql/$member"
            echo "pg$index-socket-path=/run/postgresql/$member"
        done
    else
        echo "pg1-path=${PGDATA:-/var/lib/postgresql/data}"
        echo "pg1-socket-path=/run/postgresql"
    fi
} >"${PGBACKREST_CONFIG:?}"
