#!/usr/bin/env bash
# Makes .venv-maxtext: MaxText 0.2.5 with the TPU compiler, for benchmarks/maxtext_compile.py, which
# compiles MaxText's train step against abstract TPU devices as a reference for cft_jax's own.
#
#   bash benchmarks/maxtext_env.sh            # install from benchmarks/maxtext_lock.txt (no-op if done)
#   bash benchmarks/maxtext_env.sh --relock   # resolve the two pins below afresh and rewrite the lock
#
# A separate environment because MaxText wants Python >= 3.12 and jax >= 0.11.1 while the project
# pins its own jax; nothing here touches .venv. The lock is a pip freeze, installed with --no-deps, so
# a rerun gets exactly the measured set. Measured on the 2-core dev machine: 100-130 s from PyPI and
# 2.8 GiB on disk. MAXTEXT_VENV overrides the location (to try a fresh install elsewhere).
set -euo pipefail
script="$(realpath "$0")"
cd "$(dirname "$script")/.."
venv="${MAXTEXT_VENV:-.venv-maxtext}"
lock=benchmarks/maxtext_lock.txt
top_level=("maxtext[tpu]==0.2.5" "libtpu==0.0.52")
pip_version=26.3
relock=false
[ "${1:-}" = "--relock" ] && relock=true

# python3.12 may be a pyenv shim that only works with that version selected; fall back to pyenv's copy.
find_python() {
  local candidate
  for candidate in "${PYTHON312:-}" python3.12 "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12; do
    if [ -n "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null
    then
      echo "$candidate"
      return
    fi
  done
  echo "maxtext_env.sh: no working python3.12 (set PYTHON312)" >&2
  return 1
}

stamp="$venv/.maxtext-installed"
want() { cat "$lock" "$script" | sha256sum | cut -c1-16; }
if ! $relock && [ -f "$lock" ] && [ "$(cat "$stamp" 2>/dev/null || true)" = "$(want)" ]; then
  exit 0
fi

start=$SECONDS
if [ ! -x "$venv/bin/python" ]; then
  "$(find_python)" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q "pip==$pip_version"
if $relock || [ ! -f "$lock" ]; then
  echo "== resolving ${top_level[*]} into $venv"
  "$venv/bin/python" -m pip install -q "${top_level[@]}"
  {
    py_version="$("$venv/bin/python" -c 'import platform; print(platform.python_version())')"
    echo "# pip freeze of .venv-maxtext (Python $py_version)"
    echo "# after: pip install ${top_level[*]}. Rewrite with: bash benchmarks/maxtext_env.sh --relock"
    "$venv/bin/python" -m pip freeze
  } > "$lock"
else
  echo "== installing $lock into $venv (first run: about 2 minutes, 2.8 GiB)"
  "$venv/bin/python" -m pip install -q --no-deps -r "$lock"
fi
want > "$stamp"
echo "== $venv ready in $((SECONDS - start)) s, $(du -sh "$venv" | cut -f1)"
