"""`python -m cft_jax.eval generate --backend jax` on a tiny exported model (random weights, the
SmolLM2 tokenizer): the sampler runs in a child process and writes the same JSONL records, with
the same greedy answers, as the transformers backend; reading the same weights from an Orbax
checkpoint step (the trainer's layout) instead of the HF export gives them too."""

from __future__ import annotations

import jax
import pytest
from flax import nnx

from cft_jax.convert.checkpoint import save_model
from cft_jax.evaluation.cli import main
from cft_jax.models import Decoder, ModelConfig, export_hf
from cft_jax.schema import read_jsonl

CONFIG = ModelConfig(
    model_type="llama",
    vocab_size=49152,
    hidden_size=32,
    intermediate_size=48,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    tie_word_embeddings=True,
)


@pytest.fixture(scope="module")
def tiny_export(smollm2_transformers_dir, tmp_path_factory):
    model = Decoder(CONFIG, rngs=nnx.Rngs(0))
    # 10x the default init, so the logits spread out and argmax has no near ties.
    nnx.update(model, jax.tree.map(lambda x: x * 10 if x.ndim > 1 else x, nnx.state(model, nnx.Param)))
    out = tmp_path_factory.mktemp("tiny-export")
    export_hf(model, CONFIG, out / "hf", tokenizer_dir=smollm2_transformers_dir)
    save_model(out / "run" / "checkpoints", model, CONFIG, hf_dir=smollm2_transformers_dir, step=3)
    return out


def test_jax_backend_writes_the_transformers_backend_records(tiny_export, tmp_path, monkeypatch):
    # The child sees one CPU device (sharded sampling is tests/sampling/test_sampler.py's): it
    # compiles faster.
    monkeypatch.setenv("XLA_FLAGS", "")
    common = ["--benchmarks", "gsm8k", "--limit", "3", "--prompt", "deepseek-math", "--max-new-tokens", "8"]
    common += ["--batch-size", "8", "--workers", "1"]
    runs = {
        "transformers": ("transformers", tiny_export / "hf"),
        "jax": ("jax", tiny_export / "hf"),
        "jax-orbax": ("jax", tiny_export / "run" / "checkpoints" / "3"),  # one step of a training run
    }
    records = {}
    for name, (backend, model) in runs.items():
        main(
            ["generate", "--backend", backend, "--model", str(model), "--out", str(tmp_path / name), *common]
        )
        records[name] = [r for _, r in read_jsonl(tmp_path / name / "gsm8k.jsonl")]
    theirs = records.pop("transformers")
    for ours in records.values():
        assert len(ours) == 3 and [sorted(r) for r in ours] == [sorted(r) for r in theirs]
        assert [r["provenance"]["backend"] for r in ours] == ["jax"] * 3
        for mine, reference in zip(ours, theirs, strict=True):
            assert {**mine, "provenance": None} == {**reference, "provenance": None}
        assert any(r["response"] for r in ours)
