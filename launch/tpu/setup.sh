#!/usr/bin/env bash
# Installs cft_jax (with TPU jax) on every worker of the slice.
set -euo pipefail
usage() {
  echo "usage: launch/tpu/setup.sh --name N --zone Z --repo GIT_URL [--ref REF] [--dry-run]"
  usage_common
}
# shellcheck source=launch/tpu/common.sh
. "$(dirname "$0")/common.sh"
parse_common "$@"
tpu_setup
