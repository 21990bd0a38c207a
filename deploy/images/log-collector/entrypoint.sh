#!/bin/sh
# Deletes day files older than LOG_RETENTION_DAYS every hour, and runs syslog-ng in the
# foreground (no capabilities: it runs as a plain user and needs none).
set -eu
keep=${LOG_RETENTION_DAYS:-7}
case "$keep" in
    '' | *[!0-9]*) echo "LOG_RETENTION_DAYS must be a number of days, not '$keep'" >&2; exit 2 ;;
esac
(
    while :; do
        find /var/log/flowforge -name '*.jsonl' -mtime +"$keep" -delete
        sleep 3600
    done
) &
exec syslog-ng -F --no-caps -f /etc/syslog-ng/flowforge.conf \
    --persist-file=/tmp/syslog-ng.persist --control=/tmp/syslog-ng.ctl --pidfile=/tmp/syslog-ng.pid
