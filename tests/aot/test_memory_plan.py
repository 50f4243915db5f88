"""`--dry_run`'s memory plan agrees with the TPU compiler's `memory_analysis()` within 10%.

Two small decoders compiled for a v5p-8 (4 chips): one on an fsdp x tensor mesh, one with a large
vocabulary next to a small hidden size (where the loss's chunk, not a layer, sets the peak). The
recipes at their topologies are held to the same in docs/performance.md (benchmarks/aot_tables.py).
"""

from __future__ import annotations

import pytest

from cft_jax.aot.compile import allow_shared_libtpu, compile_for
from cft_jax.aot.targets import resolve_target
from cft_jax.config import build_config
from cft_jax.models.config import ModelConfig

SMALL = {
    "model_type": "qwen2",
    "vocab_size": 32000,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "head_dim": 128,
    "tie_word_embeddings": False,
}
VOCABULARY_HEAVY = {
    **SMALL,
    "vocab_size": 151936,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_attention_heads": 4,
    "tie_word_embeddings": True,
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("shape", "mesh", "rows", "micro_batches", "seq"),
    [(SMALL, (1, 2, 2), 4, 2, 1024), (VOCABULARY_HEAVY, (1, 4, 1), 16, 1, 1024)],
    ids=["fsdp2-tensor2", "vocabulary-heavy"],
)
def test_the_dry_run_plan_is_within_10_percent_of_the_compiler(shape, mesh, rows, micro_batches, seq):
    allow_shared_libtpu()
    config = build_config(
        {
            "model": {
                "init_config": shape,
                "compute_dtype": "bfloat16",
                "remat": "full",
                "attention_impl": "splash",
            },
            "data": {"seq_len": seq},
            "training": {"global_batch": rows * mesh[1] * micro_batches, "accumulation_steps": micro_batches},
            "mesh": dict(zip(("data", "fsdp", "tensor"), mesh, strict=True)),
        },
        num_devices=4,
    )
    report = compile_for(config, ModelConfig.from_hf(shape), resolve_target("v5p-8"))
    ratio = report.estimate["total"] / report.memory["total"]
    assert 0.9 <= ratio <= 1.1, (report.estimate, report.memory)
