#!/bin/sh
# pgBackRest's configuration from the environment and secrets, then the flowforge command.
set -eu
flowforge-pgbackrest-conf
exec flowforge "$@"
