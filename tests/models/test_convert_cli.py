"""`python -m cft_jax.convert import/export`: HF -> Orbax -> HF is bit exact, also from a training
checkpoint that holds an optimizer state beside the model; the converter never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from safetensors.numpy import load_file

from cft_jax.convert.__main__ import main
from cft_jax.convert.checkpoint import OrbaxCheckpointError
from cft_jax.models.checkpoint_layout import HF_ASSETS, MODEL_ITEM
from cft_jax.models.hf import HFCheckpoint, load_hf

REPO = Path(__file__).resolve().parents[2]


def tensors(directory: Path) -> dict[str, np.ndarray]:
    files = set(HFCheckpoint(directory).location.values())
    return {name: array for file in files for name, array in load_file(file).items()}


def assert_same_tensors(a: Path, b: Path) -> None:
    before, after = tensors(a), tensors(b)
    assert sorted(before) == sorted(after)
    for name in before:
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)


@pytest.fixture(scope="module")
def tiny_with_tokenizer(tmp_path_factory, tiny_hf, smollm2_transformers_dir) -> Path:
    """A tiny qwen2 checkpoint carrying a real tokenizer (SmolLM2's) and generation config."""
    out = tiny_hf("qwen2", tmp_path_factory.mktemp("tiny") / "hf")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (out / name).write_bytes((smollm2_transformers_dir / name).read_bytes())
    return out


def test_import_then_export_is_bit_exact(tiny_with_tokenizer, tmp_path):
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    assert main(["import", str(tiny_with_tokenizer), str(ckpt)]) == 0
    assert (ckpt / "0" / MODEL_ITEM).is_dir()
    assert (ckpt / HF_ASSETS / "config.json").is_file()
    assert main(["export", str(ckpt), str(out), "--max-shard-size", "30KB"]) == 0
    assert_same_tensors(tiny_with_tokenizer, out)
    assert (out / "model.safetensors.index.json").is_file()
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "config.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "generation_config.json").read_text()) == json.loads(
        (tiny_with_tokenizer / "generation_config.json").read_text()
    )


def test_export_reads_the_model_item_of_a_training_checkpoint(tiny_with_tokenizer, tmp_path):
    """A checkpoint as the trainer writes it: step 7 with "model" and "optimizer" items; export casts
    to bfloat16 on request."""
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    assert main(["import", str(tiny_with_tokenizer), str(ckpt), "--step", "3"]) == 0
    model, _ = load_hf(tiny_with_tokenizer)
    params = nnx.state(model, nnx.Param).to_pure_dict()
    params = jax.tree.map(lambda x: x + 1.0, params)
    optimizer = optax.adam(1e-3).init(params)
    with ocp.CheckpointManager(ckpt) as manager:
        manager.save(
            7,
            args=ocp.args.Composite(
                model=ocp.args.StandardSave(params), optimizer=ocp.args.StandardSave(optimizer)
            ),
        )
        manager.wait_until_finished()
    assert main(["export", str(ckpt), str(out), "--dtype", "bfloat16"]) == 0
    exported = tensors(out)
    assert exported["model.norm.weight"].dtype == jnp.bfloat16
    expected = np.asarray(params["final_norm"]["scale"]).astype(jnp.bfloat16)
    np.testing.assert_array_equal(exported["model.norm.weight"], expected)
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"


def test_bad_checkpoint_directory_names_the_missing_file(tmp_path):
    # As a command it prints this one line and exits 2 (tests/test_cli_errors.py).
    with pytest.raises(OrbaxCheckpointError, match="hf/config.json: missing"):
        main(["export", str(tmp_path / "empty"), str(tmp_path / "out")])


@pytest.mark.slow
def test_converter_never_imports_torch(smollm2_gguf_path, tiny_with_tokenizer, tmp_path):
    """from-gguf, import and export in one process, then check torch was never loaded."""
    code = f"""
import sys
from cft_jax.convert.__main__ import main
assert main(["from-gguf", {str(smollm2_gguf_path)!r}, {str(tmp_path / "smol")!r}]) == 0
assert main(["import", {str(tiny_with_tokenizer)!r}, {str(tmp_path / "ckpt")!r}]) == 0
assert main(["export", {str(tmp_path / "ckpt")!r}, {str(tmp_path / "out")!r}]) == 0
print("torch imported:", "torch" in sys.modules)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "torch imported: False" in result.stdout
