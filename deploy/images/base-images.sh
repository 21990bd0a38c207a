#!/usr/bin/env bash
# Makes sure the base images every Dockerfile starts FROM exist locally, under names of
# their own (flowforge-base-*), so nobody takes a local build for the official image. On
# a connected host the official images (debian:bookworm-slim, rust:1.95-slim-bookworm)
# are pulled and tagged with those names; where no registry is reachable they are built
# here from Debian's packages (debootstrap) and the host's Rust toolchain — so the same
# Dockerfiles build in both places.
set -euo pipefail

DEBIAN_IMAGE=${DEBIAN_IMAGE:-flowforge-base-debian:bookworm-slim}
RUST_IMAGE=${RUST_IMAGE:-flowforge-base-rust:1.95-slim-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

have() { docker image inspect "$1" >/dev/null 2>&1; }
# pull UPSTREAM LOCAL: the official image, under our name.
pull() { timeout 60 docker pull -q "$1" >/dev/null 2>&1 && docker tag "$1" "$2"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! have "$DEBIAN_IMAGE" && ! pull debian:bookworm-slim "$DEBIAN_IMAGE"; then
    echo "building $DEBIAN_IMAGE from Debian's packages (debootstrap)"
    command -v debootstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
    debootstrap --variant=minbase bookworm "$work/rootfs" "$DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1 ||
        { tail -20 "$work/debootstrap.log"; exit 1; }
    # What the official slim image trims: package caches, docs, man pages.
    rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/* \
        "$work"/rootfs/usr/share/doc/* "$work"/rootfs/usr/share/man/*
    tar -C "$work/rootfs" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' - "$DEBIAN_IMAGE" >/dev/null
fi

if ! have "$RUST_IMAGE" && ! pull rust:1.95-slim-bookworm "$RUST_IMAGE"; then
    echo "building $RUST_IMAGE from $DEBIAN_IMAGE and this host's Rust toolchain"
    sysroot=$(rustc --print sysroot)
    mkdir -p "$work/rust/toolchain"
    # The toolchain without its documentation, laid out as in the official image.
    tar -C "$sysroot" --exclude=./share/doc -c . | tar -C "$work/rust/toolchain" -x
    # Cargo trusts what this host trusts: where crates.io is reached through a
    # TLS-inspecting proxy, Debian's roots alone would refuse it. Public certificates
    # only, in a build-only image: no service image starts FROM it.
    cp "${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" "$work/rust/host-ca.crt"
    cat >"$work/rust/Dockerfile" <<DOCKERFILE
FROM $DEBIAN_IMAGE
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev \\
    && rm -rf /var/lib/apt/lists/*
COPY toolchain /usr/local/rust
COPY host-ca.crt /usr/local/share/flowforge/host-ca.crt
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo \\
    CARGO_HTTP_CAINFO=/usr/local/share/flowforge/host-ca.crt \\
    PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN mkdir -p /usr/local/cargo/bin && rustc --version && cargo --version
DOCKERFILE
    docker build -q -t "$RUST_IMAGE" "$work/rust" >/dev/null
fi

docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E "^(${DEBIAN_IMAGE}|${RUST_IMAGE})  "
