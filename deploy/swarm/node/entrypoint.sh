#!/usr/bin/env bash
# The node's own Docker daemon: vfs storage (no overlay filesystem on top of the
# container's own), and REGISTRY, the project's registry, over plain HTTP on the nodes'
# private network.
set -euo pipefail
exec dockerd --storage-driver vfs --insecure-registry "${REGISTRY:-registry:5000}" \
    --host unix:///var/run/docker.sock --log-level warn
