#!/usr/bin/env bash
# The README's main job: real Critique Fine-Tuning of SmolLM2-135M-Instruct on the shipped RealCritic
# critiques, end to end on CPU. Makes .venv on first use (scripts/env.sh), then runs
# `python -m cft_jax.demo` with any extra arguments (e.g. `--out runs/demo --steps 20`).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
export HF_HUB_OFFLINE=1
exec python -m cft_jax.demo "$@"
