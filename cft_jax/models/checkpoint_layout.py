"""The directory layout of a cft_jax Orbax checkpoint, which the converter and the trainer both write.

    CKPT_DIR/
      <step>/model/        Orbax StandardSave of the parameters as a pure dict
                           (`nnx.state(model, nnx.Param).to_pure_dict()`: nested dicts keyed by our
                           parameter path, e.g. {"layers": {"attn": {"q_proj": {"kernel": [L, D, H, Dh]}}}})
      <step>/<other items> whatever else the trainer saves in the same step (optimizer, data iterator, ...)
      <step>/integrity_process_{i}-of-{n}.json
                           size and sha256 of each file of the step (cft_jax/integrity.py)
      quarantine/          steps a resume found corrupt, moved here whole (cft_jax/training/checkpoint.py)
      hf/                  config.json (the HF config of the model), generation_config.json and the
                           tokenizer files, so an export can rebuild a complete HF directory

CKPT_DIR may be a `gs://` URI (`etils.epath`). Reading the model back: `cft_jax/convert/checkpoint.py`;
the trainer's items: `cft_jax/training/checkpoint.py`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from etils import epath

from cft_jax.assets.tokenizers import copy_tokenizer

MODEL_ITEM = "model"
HF_ASSETS = "hf"


def write_hf_assets(
    ckpt_dir: epath.Path, hf_config: dict[str, Any], tokenizer_dir: str | Path | epath.Path | None
) -> None:
    """`hf/config.json` and the tokenizer files of `tokenizer_dir` (if given) beside the steps."""
    assets = ckpt_dir / HF_ASSETS
    assets.mkdir(parents=True, exist_ok=True)
    (assets / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    if tokenizer_dir is not None:
        copy_tokenizer(tokenizer_dir, assets)
