#!/bin/sh
# One member of a PostgreSQL cluster run by Patroni (flowforge-postgres cluster): Patroni
# starts PostgreSQL here, holds the leader lock in etcd, promotes a replica when the
# leader is gone and rewinds an old leader (pg_rewind) into a replica when it returns.
# Its configuration is written to this container's tmpfs (passwords in it, mode 0600):
#   FLOWFORGE_MEMBER        this member's name, also its host name on the network
#   FLOWFORGE_ETCD_HOSTS    etcd's members, host:port,... (default etcd1:2379,etcd2:2379,etcd3:2379)
#   FLOWFORGE_SYNC_STRICT   true (default): with no synchronous standby left, writes wait
#                           rather than be acknowledged on one server alone; false: the
#                           leader goes on alone (available, not durable)
#   FLOWFORGE_LEADER_TTL    seconds a leader's lock lives without renewal (default 8): the
#                           longest a dead leader keeps its place
#   FLOWFORGE_BOOTSTRAP     how a new cluster (none in etcd, this member's data directory
#                           empty) begins: initdb (default), or restore: from the backup
#                           repository, replaying WAL up to FLOWFORGE_RESTORE_TO (a time,
#                           RFC 3339) or to the end of the archive. The other members then
#                           copy the restored one.
# Replication and rewinds connect over TLS with the replication password secret.
set -eu

secret() {
    file="/run/secrets/$1"
    [ -r "$file" ] || { echo "flowforge-patroni: missing secret $file" >&2; exit 2; }
    cat "$file"
}

member=${FLOWFORGE_MEMBER:?set FLOWFORGE_MEMBER to the name of this member}
superuser_pw=$(secret postgres_superuser_password)
replication_pw=$(secret postgres_replication_password)
flowforge-postgres-roles --check
strict=${FLOWFORGE_SYNC_STRICT:-true}
case "$strict" in true | false) ;; *) echo "flowforge-patroni: FLOWFORGE_SYNC_STRICT must be true or false" >&2; exit 2 ;; esac
ttl=${FLOWFORGE_LEADER_TTL:-8}
case "${FLOWFORGE_BOOTSTRAP:-initdb}" in
initdb)
    method=initdb
    post_bootstrap=/usr/local/bin/flowforge-postgres-roles
    ;;
restore)
    method=restore
    # The restored data has its roles; scripts/stack.sh restore sets their passwords.
    post_bootstrap=/bin/true
    ;;
*) echo "flowforge-patroni: FLOWFORGE_BOOTSTRAP must be initdb or restore" >&2; exit 2 ;;
esac
target=
[ -z "${FLOWFORGE_RESTORE_TO:-}" ] || target="recovery_target_time: '$FLOWFORGE_RESTORE_TO'"

umask 077
cat >/tmp/patroni.yml <<YAML
scope: flowforge
name: $member
log: {level: WARNING}
restapi:
  listen: 0.0.0.0:8008
  connect_address: $member:8008
  # Reads (role, health, metrics) from anyone on the network; changes (switchover,
  # restart, reinitialise) only from the members themselves, where patronictl runs.
  allowlist_include_members: true
etcd3:
  hosts: ${FLOWFORGE_ETCD_HOSTS:-etcd1:2379,etcd2:2379,etcd3:2379}
bootstrap:
  dcs:
    # Patroni checks the cluster every second; a lost etcd answer is retried for 3 s.
    ttl: $ttl
    loop_wait: 1
    retry_timeout: 3
    # Without an etcd quorum the leader keeps leading while it reaches every member over
    # their REST APIs (none of which can be promoted without etcd), rather than demote
    # itself and stop all writes for as long as etcd is down.
    failsafe_mode: true
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    synchronous_mode_strict: $strict
    postgresql:
      use_pg_rewind: true
      # No replication slots: after a promotion the new leader creates its members' slots
      # only in its next cycle, and a standby can't stream (nor writes be acknowledged)
      # until then. A standby that falls behind the leader's kept WAL (wal_keep_size)
      # reads the rest from the backup repository's archive instead.
      use_slots: false
      parameters:
        wal_log_hints: "on"
        wal_keep_size: 256MB
        # How soon a standby tries again to stream from a leader (a new one included).
        wal_retrieve_retry_interval: 200ms
        synchronous_commit: "on"
  method: $method
  initdb: [{encoding: UTF8}, {locale: C.UTF-8}, data-checksums, {auth-local: peer}, {auth-host: scram-sha-256}]
  # The backup's files, then WAL from the archive; PostgreSQL opens for writes at the end.
  restore:
    command: /usr/local/bin/flowforge-patroni-restore
    recovery_conf:
      restore_command: pgbackrest archive-get %f "%p"
      recovery_target_action: promote
      recovery_target_timeline: latest
      $target
  post_bootstrap: $post_bootstrap
postgresql:
  listen: 0.0.0.0:5432
  connect_address: $member:5432
  data_dir: ${PGDATA:-/var/lib/postgresql/data}
  bin_dir: /usr/lib/postgresql/15/bin
  pgpass: /tmp/pgpass
  # A new replica copies the leader at once, not after a spread checkpoint (minutes).
  basebackup: [{checkpoint: fast}]
  # An old leader that pg_rewind can't bring back is copied afresh: it rejoins either way.
  remove_data_directory_on_rewind_failure: true
  remove_data_directory_on_diverged_timelines: true
  use_unix_socket: true
  # A replica too far behind for the leader's WAL, or a rewind that needs older WAL, reads
  # it from the backup repository.
  recovery_conf:
    restore_command: pgbackrest archive-get %f "%p"
  authentication:
    superuser: {username: postgres, password: "$superuser_pw", sslmode: require}
    replication: {username: flowforge_replicator, password: "$replication_pw", sslmode: require}
  parameters:
    unix_socket_directories: /run/postgresql
    ssl: "on"
    ssl_cert_file: /tmp/server.crt
    ssl_key_file: /tmp/server.key
    ssl_min_protocol_version: TLSv1.2
    password_encryption: scram-sha-256
    jit: "off"
    log_destination: stderr
    log_line_prefix: "%m [%p] %q%u@%d "
    log_connections: "on"
    log_disconnections: "on"
    # Whichever member leads archives its WAL into the backup repository (pgBackRest,
    # configured by flowforge-pgbackrest-conf); a standby's archiver stays idle.
    archive_mode: "on"
    archive_command: pgbackrest archive-push %p
    archive_timeout: ${FLOWFORGE_ARCHIVE_TIMEOUT:-10}
  # Local socket: only the server's own user. Network: TLS and SCRAM only.
  pg_hba:
    - local all postgres peer
    - hostssl replication flowforge_replicator 0.0.0.0/0 scram-sha-256
    - hostssl all all 0.0.0.0/0 scram-sha-256
    - host all all 0.0.0.0/0 reject
YAML
exec patroni /tmp/patroni.yml
