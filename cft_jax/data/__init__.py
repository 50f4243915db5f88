"""CFT data: records in every published format -> exact templates -> packed, sharded, resumable batches.

Entry points: `cft_jax.data.pipeline.make_iterator` (of a `cft_jax.config.DataConfig`) for the trainer, and
`python -m cft_jax.data inspect|check|prepare|contamination` for users. See docs/data.md.
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"

DEMO_FILES = {
    "realcritic_critiques": "realcritic_critiques.jsonl.gz",
    "realcritic_solutions": "realcritic_solutions.jsonl.gz",
    "gsm8k_model_solutions": "gsm8k_model_solutions.jsonl.gz",
}


def asset_path(name: str) -> Path:
    """Path of a shipped real data file.

    Names: `realcritic_critiques`, `realcritic_solutions`, `gsm8k_model_solutions` (see assets/NOTICE.md).
    """
    if name not in DEMO_FILES:
        raise ValueError(f"unknown data asset {name!r}; choose one of {sorted(DEMO_FILES)}")
    return ASSETS / DEMO_FILES[name]
