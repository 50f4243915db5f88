#!/usr/bin/env bash
# Trains on the GPUs of this one machine: one process drives all local GPUs.
set -euo pipefail
# shellcheck source=launch/lib.sh
. "$(dirname "$0")/../lib.sh"
args=()
for a in "$@"; do
  if [ "$a" = --dry-run ]; then DRY_RUN=1; else args+=("$a"); fi
done
[ ${#args[@]} -gt 0 ] || die "usage: launch/gpu/single_node.sh --config F [--config.KEY=V ...] [--dry-run]"
run env XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}" \
  XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true" \
  "${CFT_JAX_PYTHON:-.venv/bin/python}" -m cft_jax.train "${args[@]}"
