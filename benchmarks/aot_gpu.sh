#!/usr/bin/env bash
# The GPU compiler in the loop, from a CPU machine: XLA's CUDA compiler compiles the trainer's step for
# H100 / H200 nodes that are not here (memory and HLO, not speed: it has no cost model and no
# autotuning). Too heavy for the test command (the CUDA plugin is ~8 GB), so it runs here:
#
#     bash benchmarks/aot_gpu.sh
#
# It makes .venv-gpu (the locked core set + jax-cuda12-plugin 0.10.2, the jaxlib's own version) on
# first use and then checks, printing each report:
#   1. a tiny decoder's sharded step (fsdp=8) with attention_impl="pallas_gpu" compiles for h100x8:
#      Triton kernels inside shard_map, weights all-gathered, no q/k/v activation all-gathered;
#   2. configs/bench_qwen7b_h200.py compiles for h200x1, its memory reported (fits 141 GB);
#   3. the paper recipe configs/qwen7b_v5p.py compiles for one 8 x H100 node.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-gpu
stamp="$venv/.stamp"
want="$(cat requirements/lock.txt | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "== making $venv (downloads the CUDA plugin, ~8 GB)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --no-deps -r requirements/lock.txt
  "$venv/bin/pip" install -q "jax-cuda12-plugin[with-cuda]==0.10.2"
  "$venv/bin/pip" install -q --no-deps -e .
  echo "$want" > "$stamp"
fi
export JAX_PLATFORMS=cpu
echo "command: bash benchmarks/aot_gpu.sh"
"$venv/bin/python" benchmarks/aot_gpu_checks.py
echo "== configs/bench_qwen7b_h200.py on h200x1"
"$venv/bin/python" -m cft_jax.train --config configs/bench_qwen7b_h200.py --aot h200x1
echo "== configs/qwen7b_v5p.py (Qwen2.5-Math-7B shape) on one 8 x H100 node"
"$venv/bin/python" -m cft_jax.train --config configs/qwen7b_v5p.py --shape qwen2.5-math-7b --aot h100x8
