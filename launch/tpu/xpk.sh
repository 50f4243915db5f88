#!/usr/bin/env bash
# The GKE variant: runs the trainer as an xpk workload on an existing TPU cluster, from a container
# image that has cft_jax installed. `--delete` removes the workload.
set -euo pipefail
usage() {
  echo "usage: launch/tpu/xpk.sh --name WORKLOAD --cluster C --zone Z --type v5p-64 --image IMG --config F [--config.KEY=V ...] [--num-slices N] [--delete] [--dry-run]"
  usage_common
}
DELETE=0
args=()
for a in "$@"; do
  if [ "$a" = --delete ]; then DELETE=1; else args+=("$a"); fi
done
# shellcheck source=launch/tpu/common.sh
. "$(dirname "$0")/common.sh"
parse_common "${args[@]}"
need "--cluster" "$CLUSTER" "--cluster CLUSTER"
mapfile -t where < <(gcloud_where)
if [ "$DELETE" = 1 ]; then
  run xpk workload delete --workload "$NAME" --cluster "$CLUSTER" "${where[@]}"
  exit 0
fi
need "--type" "$TYPE" "--type v5p-64 (or v4-N, v5litepod-N, v6e-N)"
need "--image" "$IMAGE" "--image REGISTRY/IMAGE:TAG (with cft_jax installed)"
run xpk workload create --workload "$NAME" --cluster "$CLUSTER" "${where[@]}" \
  --tpu-type "$TYPE" --num-slices "$NUM_SLICES" --docker-image "$IMAGE" \
  --command "$(train_command python)"
