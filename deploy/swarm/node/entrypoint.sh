#!/usr/bin/env bash
# The node's own Docker daemon, and REGISTRY, the project's registry, over plain HTTP on
# the nodes' private network. The daemon picks its storage driver: overlay2, since the
# node's /var/lib/docker is a volume on the host's filesystem rather than the container's
# own overlay. vfs, its fallback, copies every layer whole: several times the disk, and
# much slower to start a container.
set -euo pipefail
exec dockerd --insecure-registry "${REGISTRY:-registry:5000}" \
    --host unix:///var/run/docker.sock --log-level warn
