#!/usr/bin/env bash
# Submits launch/gpu/train.sbatch to SLURM on N nodes of 8 GPUs.
set -euo pipefail
# shellcheck source=launch/lib.sh
. "$(dirname "$0")/../lib.sh"
usage() {
  echo "usage: launch/gpu/submit.sh --nodes N --config F [--config.KEY=V ...] [--partition P] [--time HH:MM:SS] [--account A] [--gpus-per-node 8] [--dry-run]"
}
NODES="" PARTITION="" TIME="" ACCOUNT="" GPUS=8 CONFIG="" OVERRIDES=()
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) NODES="$2"; shift 2 ;;
    --partition) PARTITION="$2"; shift 2 ;;
    --time) TIME="$2"; shift 2 ;;
    --account) ACCOUNT="$2"; shift 2 ;;
    --gpus-per-node) GPUS="$2"; shift 2 ;;
    --config) CONFIG="$2"; shift 2 ;;
    --config.*) OVERRIDES+=("$1"); shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
need "--nodes" "$NODES" "--nodes N"
need "--config" "$CONFIG" "--config configs/FILE.py"
opts=(--nodes "$NODES" --gpus-per-node "$GPUS")
[ -z "$PARTITION" ] || opts+=(--partition "$PARTITION")
[ -z "$TIME" ] || opts+=(--time "$TIME")
[ -z "$ACCOUNT" ] || opts+=(--account "$ACCOUNT")
if [ "$DRY_RUN" != 1 ]; then
  mkdir -p logs
fi
run sbatch "${opts[@]}" "$(dirname "$0")/train.sbatch" --config "$CONFIG" "${OVERRIDES[@]}"
