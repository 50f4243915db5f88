"""HF -> ours -> HF: `load_hf` then `export_hf` gives back every tensor bit for bit, and transformers
loads the export into a model with the same logits."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from safetensors import safe_open

from cft_jax.models.hf import HFCheckpoint, export_hf, load_hf, param_leaves
from cft_jax.models.safetensors_io import INDEX_FILE
from cft_jax.models.sharding import make_mesh
from tests.tolerances import assert_close_to_scale

TOKENS = np.array([[5, 17, 3, 88, 42, 9, 61, 0]], np.int32)


def hf_tensors(directory: Path) -> dict[str, np.ndarray]:
    """Every tensor of an HF directory, read by safetensors' torch backend (bfloat16 viewed as int16 so
    that comparisons are bit for bit)."""
    import torch

    out = {}
    for name, file in HFCheckpoint(directory).location.items():
        with safe_open(file, "pt") as f:
            tensor = f.get_tensor(name)
        out[name] = (tensor.view(torch.int16) if tensor.dtype == torch.bfloat16 else tensor).numpy()
    return out


def transformers_logits(directory: Path) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.from_numpy(TOKENS).long()).logits.numpy()


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
def test_round_trip_is_bit_exact_and_transformers_loads_it(family, tmp_path, tiny_hf):
    source = tiny_hf(family, tmp_path / "hf")
    model, config = load_hf(source)
    # Ours vs transformers on the same weights (see CROSS_LIBRARY_ULPS in test_decoder_parity.py).
    assert_close_to_scale(np.asarray(model(jnp.asarray(TOKENS))), transformers_logits(source), ulps=128)

    export_hf(model, config, tmp_path / "out")
    before, after = hf_tensors(source), hf_tensors(tmp_path / "out")
    assert sorted(before) == sorted(after)
    for name in before:
        assert before[name].dtype == after[name].dtype, name
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)
    exported = json.loads((tmp_path / "out" / "config.json").read_text())
    assert exported["architectures"] == [config.architecture]
    assert exported["torch_dtype"] == exported["dtype"] == "float32"
    assert (tmp_path / "out" / "generation_config.json").is_file()
    np.testing.assert_array_equal(transformers_logits(tmp_path / "out"), transformers_logits(source))


def test_sharded_bfloat16_round_trip(tmp_path, tiny_hf):
    source = tiny_hf("qwen2", tmp_path / "hf", dtype="bfloat16", max_shard_size="20KB")
    assert (source / INDEX_FILE).is_file()
    model, config = load_hf(source, dtype=jnp.bfloat16)
    assert model.embed.embedding.value.dtype == jnp.bfloat16
    out = export_hf(model, config, tmp_path / "out", max_shard_size="20KB")
    index = json.loads((out / INDEX_FILE).read_text())
    assert len(set(index["weight_map"].values())) > 2
    assert all((out / f).stat().st_size <= 20_000 + 4096 for f in set(index["weight_map"].values()))
    before, after = hf_tensors(source), hf_tensors(out)
    assert sorted(before) == sorted(after)
    for name in before:
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"


# Where the logical-axis rules put each kind of parameter on a (data=1, fsdp=4, tensor=2) mesh.
EXPECTED_SPECS = {
    ("embed", "embedding"): P("tensor", "fsdp"),
    ("layers", "attn_norm", "scale"): P(None, None),
    ("layers", "attn", "q_proj", "kernel"): P(None, "fsdp", "tensor", None),
    ("layers", "attn", "k_proj", "kernel"): P(None, "fsdp", "tensor", None),
    ("layers", "attn", "o_proj", "kernel"): P(None, "tensor", None, "fsdp"),
    ("layers", "mlp", "gate_proj", "kernel"): P(None, "fsdp", "tensor"),
    ("layers", "mlp", "down_proj", "kernel"): P(None, "tensor", "fsdp"),
    ("lm_head", "kernel"): P("fsdp", "tensor"),
}


@pytest.mark.skipif(jax.device_count() < 8, reason="needs XLA_FLAGS=--xla_force_host_platform_device_count=8")
def test_load_onto_mesh_places_each_parameter_in_its_rule_sharding(tmp_path, tiny_hf):
    source = tiny_hf("llama", tmp_path / "hf")
    mesh = make_mesh(data=1, fsdp=4, tensor=2, devices=jax.devices()[:8])
    sharded, config = load_hf(source, mesh=mesh)
    single, _ = load_hf(source)
    arrays = param_leaves(nnx.state(sharded, nnx.Param))
    reference = param_leaves(nnx.state(single, nnx.Param))
    for path, spec in EXPECTED_SPECS.items():
        assert arrays[path].sharding.is_equivalent_to(NamedSharding(mesh, spec), arrays[path].ndim), path
    for path, array in arrays.items():
        # Each device holds exactly its block of the full parameter.
        np.testing.assert_array_equal(np.asarray(array), np.asarray(reference[path]), err_msg=str(path))
    # Export gathers the sharded arrays back into the same HF tensors.
    out = export_hf(sharded, config, tmp_path / "out")
    before, after = hf_tensors(source), hf_tensors(out)
    for name in before:
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)
