#!/usr/bin/env bash
# Stops and deletes the slice and its queued resource.
set -euo pipefail
usage() {
  echo "usage: launch/tpu/delete.sh --name N --zone Z [--dry-run]"
  usage_common
}
# shellcheck source=launch/tpu/common.sh
. "$(dirname "$0")/common.sh"
parse_common "$@"
tpu_delete
