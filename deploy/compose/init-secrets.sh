#!/usr/bin/env bash
# Creates what the stack needs but git must never hold, in ./secrets (git-ignored), once:
# random passwords and keys, a private CA, and certificates signed by it for PostgreSQL,
# Redis, the api and web replicas (every hop inside the stack is TLS) and the proxy. Existing files are kept, so a real certificate dropped in as
# secrets/proxy_tls.pem (certificate chain + key) replaces the self-signed one.
set -euo pipefail
# shellcheck source=scripts/lib/tls.sh
source "$(dirname "$0")/../../scripts/lib/tls.sh"
dir=${1:-secrets}
mkdir -p "$dir"
chmod 700 "$dir"
cd "$dir"
umask 077

random() { [ -s "$1" ] || openssl rand -hex 32 >"$1"; }
for name in postgres_superuser_password postgres_owner_password \
    postgres_monitor_password postgres_replication_password redis_password redis_exporter_password webhook_secrets_key operator_password \
    backup_cipher_pass; do
    random "$name"
done
# Set only while a webhook key rotation is under way (scripts/stack.sh rotate webhook-key).
[ -e webhook_secrets_key_previous ] || : >webhook_secrets_key_previous

make_ca "FlowForge local CA"
sign_cert postgres_tls postgres "DNS:postgres"
# Each replica answers under its service name (the proxy and Prometheus check it); the
# loopback names are for the container's own health check.
sign_cert api_tls api "DNS:api"
sign_cert web_tls web "DNS:web"
sign_cert redis_tls redis "DNS:redis,DNS:localhost,IP:127.0.0.1"
sign_cert proxy_tls_parts localhost "DNS:localhost,IP:127.0.0.1"
[ -s proxy_tls.pem ] || cat proxy_tls_parts.pem proxy_tls_parts.key >proxy_tls.pem

# Connection strings for the services (the password is part of the URL, so the whole
# URL is a secret). TLS with the CA checked and the host name verified.
# The app's URL is where its password lives (PostgreSQL creates its role from it); it
# names flowforge_app_alt after a password rotation.
url() { printf 'postgres://%s:%s@postgres:5432/flowforge?sslmode=verify-full&sslrootcert=/run/secrets/ca.pem' "$1" "$2"; }
[ -s database_url_app ] || url flowforge_app "$(openssl rand -hex 32)" >database_url_app
[ -s database_url_owner ] || url flowforge_owner "$(cat postgres_owner_password)" >database_url_owner
[ -s redis_url ] || printf 'rediss://:%s@redis:6379' "$(cat redis_password)" >redis_url
# redis_exporter reads passwords as a JSON map keyed by the address it scrapes; it logs in
# as its own Redis user, which may read server statistics and nothing else.
[ -s redis_exporter_auth.json ] ||
    printf '{"rediss://redis:6379": "%s"}\n' "$(cat redis_exporter_password)" >redis_exporter_auth.json
# Redis speaks only TLS: addresses written before it did move to rediss://.
sed -i 's#redis://redis:6379#rediss://redis:6379#' redis_url redis_exporter_auth.json
# The operators' login for /prometheus/ and /alertmanager/ behind the proxy (user
# `operator`, password in operator_password), as a HAProxy userlist with a SHA-512 hash.
[ -s proxy_operators.cfg ] ||
    printf 'userlist operators\n    user operator password %s\n' \
        "$(openssl passwd -6 -stdin <operator_password)" >proxy_operators.cfg

# The containers run as fixed non-root UIDs and read these through bind mounts; the
# directory itself stays private to the host user.
chmod 644 ./*
chmod 600 ca.key
echo "secrets ready in $PWD"
