#!/usr/bin/env bash
# Runs `python -m cft_jax.train` on all workers at once (JAX's multi-controller runtime: every
# worker runs the same program) and streams their output into LOG_DIR/NAME.log.
set -euo pipefail
usage() {
  echo "usage: launch/tpu/train.sh --name N --zone Z --config configs/F.py [--config.KEY=VALUE ...] [--log-dir D] [--dry-run]"
  usage_common
}
# shellcheck source=launch/tpu/common.sh
. "$(dirname "$0")/common.sh"
parse_common "$@"
tpu_train
