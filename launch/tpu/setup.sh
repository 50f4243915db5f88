#!/usr/bin/env bash
# Installs cft_jax (with TPU jax and gs:// support) on every worker of the slice, then fetches the
# hub models and data given with --download into each worker's hub cache.
set -euo pipefail
usage() {
  echo "usage: launch/tpu/setup.sh --name N --zone Z --repo GIT_URL [--ref REF] [--download HUB_ID ...] [--dry-run]"
  usage_common
}
# shellcheck source=launch/tpu/common.sh
. "$(dirname "$0")/common.sh"
parse_common "$@"
tpu_setup
