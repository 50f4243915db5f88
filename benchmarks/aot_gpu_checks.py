"""Check 1 of benchmarks/aot_gpu.sh: the sharded step with Pallas GPU attention compiles for 8 x H100.

Runs in .venv-gpu (the CUDA plugin) with JAX_PLATFORMS=cpu; asserts on the compiled program's HLO:
the Triton kernel calls are there (inside shard_map, one per device's shard of the batch), every
layer's weights are all-gathered, and no all-gather moves q, k or v (an activation with a sequence
dimension): each device attends over its own rows.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cft_jax.aot.compile import compile_for, format_report  # noqa: E402
from cft_jax.aot.hlo import collectives  # noqa: E402
from cft_jax.aot.targets import resolve_target  # noqa: E402
from cft_jax.config import build_config  # noqa: E402
from cft_jax.models.config import ModelConfig  # noqa: E402
from tests.aot.conftest import SEQ, TINY, weight_all_gathers  # noqa: E402


def main() -> None:
    target = resolve_target("h100x8")
    config = build_config(
        {
            "model": {
                "init_config": TINY,
                "compute_dtype": "bfloat16",
                "remat": "full",
                "attention_impl": "pallas_gpu",
            },
            "data": {"seq_len": SEQ},
            "training": {"global_batch": 16, "accumulation_steps": 2, "vocab_chunk": 384},
        },
        num_devices=target.num_devices,
    )
    model = ModelConfig.from_hf(TINY)
    report = compile_for(config, model, target)
    print(format_report(report))
    triton = report.hlo_text.count("__gpu$xla.gpu.triton")
    activation_gathers = [
        c.name for c in collectives(report.hlo_text) if c.kind == "all-gather" and SEQ in c.shape
    ]
    print(f"Triton kernel calls: {triton}; all-gathers of activations (seq {SEQ}): {activation_gathers}")
    assert report.attention == "pallas_gpu" and triton > 0, "no Triton attention kernel in the compiled step"
    assert weight_all_gathers(report.hlo_text, model, tensor=1), "FSDP weights are not all-gathered"
    assert not activation_gathers, f"q/k/v gathered across devices: {activation_gathers}"
    print("check 1 passed: pallas_gpu compiles inside the sharded step for h100x8")


if __name__ == "__main__":
    main()
