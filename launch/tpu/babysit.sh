#!/usr/bin/env bash
# Keeps a training run alive on preemptible capacity: creates the slice, installs, trains; when the
# slice is preempted (the queued resource leaves ACTIVE) it deletes and recreates it and trains
# again, and the trainer resumes from the latest checkpoint in its work directory (use a gs://
# checkpoint.dir so it survives the slice). Deletes the slice when training exits 0.
set -euo pipefail
usage() {
  echo "usage: launch/tpu/babysit.sh --name N --zone Z --type T --repo URL --config F [--config.KEY=V ...] [--download HUB_ID ...] [--spot|--reserved] [--poll S] [--dry-run]"
  usage_common
}
# shellcheck source=launch/tpu/common.sh
. "$(dirname "$0")/common.sh"
parse_common "$@"
need "--config" "$CONFIG" "--config configs/FILE.py"

attempt=0
while :; do
  attempt=$((attempt + 1))
  echo "== attempt $attempt" >&2
  state="$(qr_state)"
  if [ "$state" != ACTIVE ]; then
    if [ -n "$state" ]; then
      tpu_delete
    fi
    tpu_create
    if ! tpu_wait_active; then
      echo "slice did not become ACTIVE; retrying in ${POLL}s" >&2
      sleep "$POLL"
      continue
    fi
    tpu_setup
  fi
  if tpu_train; then
    tpu_delete
    exit 0
  fi
  [ "$DRY_RUN" = 1 ] && exit 0
  echo "training exited non-zero (preempted or failed); checking the slice in ${POLL}s" >&2
  sleep "$POLL"
  if [ "$(qr_state)" = ACTIVE ]; then
    echo "slice still ACTIVE: the failure is not a preemption; stopping (see $LOG_DIR/$NAME.log)" >&2
    exit 1
  fi
done
