"""LoRA against PEFT itself: our adapted decoder, our PEFT-format adapter loaded by `peft`, and our merged
HF export loaded by transformers give the same logits as PEFT's LoRA model on the same base."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cft_jax.config import build_config
from cft_jax.models.hf import export_hf
from cft_jax.models.lora_export import export_peft_adapter, merge_adapters
from cft_jax.models.sharding import make_mesh
from cft_jax.train import build_model
from cft_jax.training.state import lora_spec
from tests.tolerances import assert_close_to_scale

TOKENS = np.array([[5, 17, 3, 88, 42, 9, 61, 0]], np.int32)
# Ours vs transformers/PEFT on the same weights: two libraries' fp32 matmul and softmax orders, as
# CROSS_LIBRARY_ULPS in test_decoder_parity.py allows.
CROSS_LIBRARY_ULPS = 128
# Llama untied with every projection adapted (each layout: q/k/v with heads, o_proj with two input
# dims, the MLP's); Qwen2 tied, with q/k/v biases, and a subset chosen by patterns. Qwen3 differs only
# in its q/k norms, which no adapter touches.
TARGETS = {"llama": ("*_proj",), "qwen2": ("[qv]_proj", "down_proj")}


def adapted_model(hf_dir, family):
    """Our decoder loaded from `hf_dir` with adapters on `TARGETS[family]`, B drawn at random (PEFT
    starts B at zero, which would make every comparison trivially the base's)."""
    config = build_config(
        {
            "model": {"hf_path": str(hf_dir), "param_dtype": "float32", "compute_dtype": "float32"},
            "lora": {"rank": 4, "alpha": 8.0, "targets": TARGETS[family]},
        }
    )
    graphdef, adapters, base, model_config = build_model(config, make_mesh(1, 1, 1, jax.devices()[:1]))
    rng = np.random.default_rng(1)
    values = jax.tree.map(
        lambda x: x + 0.1 * rng.standard_normal(x.shape, np.float32), adapters.to_pure_dict()
    )
    nnx.replace_by_pure_dict(adapters, values)
    return config, model_config, graphdef, adapters, base


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_peft_loads_our_adapter_and_transformers_our_merge_with_equal_logits(family, tmp_path, tiny_hf):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    hf_dir = tiny_hf(family, tmp_path / "hf")
    config, model_config, graphdef, adapters, base = adapted_model(hf_dir, family)
    spec = lora_spec(config)
    ours = np.asarray(nnx.merge(graphdef, adapters, base)(jnp.asarray(TOKENS)))

    adapter_dir = export_peft_adapter(adapters, spec, tmp_path / "adapter", base_model=str(hf_dir))
    saved = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert saved["target_modules"] == list(spec.modules()) and saved["r"] == 4
    tokens = torch.from_numpy(TOKENS).long()
    with torch.no_grad():
        peft_model = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32), adapter_dir
        ).eval()
        peft_logits = peft_model(tokens).logits.numpy()
        with peft_model.disable_adapter():
            base_logits = peft_model(tokens).logits.numpy()
    assert_close_to_scale(ours, peft_logits, ulps=CROSS_LIBRARY_ULPS)
    # The adapters matter: without them the logits are another model's.
    assert np.abs(peft_logits - base_logits).max() > 1e3 * np.abs(ours - peft_logits).max()

    merged_dir = export_hf(merge_adapters(base, adapters, spec), model_config, tmp_path / "merged")
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
        merged_logits = merged(tokens).logits.numpy()
    assert_close_to_scale(merged_logits, peft_logits, ulps=CROSS_LIBRARY_ULPS)
