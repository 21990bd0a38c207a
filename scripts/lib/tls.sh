# Certificates from a private CA, made with openssl in the current directory (sourced by
# deploy/compose/init-secrets.sh and scripts/release.sh). Existing files are kept.
# shellcheck shell=bash

# make_ca CN: a CA valid for ten years, as ca.pem and ca.key.
make_ca() {
    [ -s ca.pem ] && return
    openssl req -x509 -newkey rsa:3072 -nodes -days 3650 -subj "/CN=$1" -keyout ca.key -out ca.pem 2>/dev/null
}

# sign_cert NAME CN SAN: a server certificate NAME.pem and its key NAME.key, signed by the
# CA (825 days: the longest that clients such as Apple's accept).
sign_cert() {
    [ -s "$1.pem" ] && return
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$3" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 -extfile "$1.ext" \
        -out "$1.pem" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}
