#!/usr/bin/env bash
# Requests a TPU VM slice through a queued resource (spot, reserved or on-demand) and waits until
# it is ACTIVE.
set -euo pipefail
usage() {
  echo "usage: launch/tpu/create.sh --name N --zone Z --type v5p-64 [--spot|--reserved|--on-demand] [--runtime-version V] [--dry-run]"
  usage_common
}
# shellcheck source=launch/tpu/common.sh
. "$(dirname "$0")/common.sh"
parse_common "$@"
tpu_create
tpu_wait_active
