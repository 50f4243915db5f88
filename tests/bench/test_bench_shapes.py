"""The bench's shape table and packed batch: dimensions, segments, positions, no cross-segment attention."""

from __future__ import annotations

import numpy as np
import pytest

from cft_jax.bench.shapes import SHAPES, default_rows, shape_config
from cft_jax.bench.train_bench import bench_batch, block_causal_mask
from cft_jax.config import build_config
from cft_jax.models.config import ModelConfig
from tests.tolerances import assert_close_to_scale


@pytest.mark.parametrize(
    ("shape", "billions"),
    [("qwen2.5-0.5b", 0.494), ("qwen2.5-1.5b", 1.544), ("qwen2.5-7b", 7.616), ("smollm2-135m", 0.135)],
)
def test_shapes_have_the_published_sizes(shape: str, billions: float) -> None:
    config = build_config(shape_config(shape, 4096, 8, backend="gpu"), num_devices=1)
    model = ModelConfig.from_hf(config.model.init_config)
    # The parameter counts HF states for these checkpoints (embeddings included once when tied).
    assert model.num_params() / 1e9 == pytest.approx(billions, rel=0.01)
    assert config.model.compute_dtype == "bfloat16" and config.model.attention_impl == "auto"
    assert config.optimizer.mu_dtype == ("bfloat16" if shape == "qwen2.5-7b" else "param")


def test_qwen_dims() -> None:
    dims = {
        name: (s["hidden_size"], s["num_hidden_layers"], s["num_attention_heads"], s["num_key_value_heads"])
        for name, s in SHAPES.items()
    }
    assert dims["qwen2.5-0.5b"] == (896, 24, 14, 2)
    assert dims["qwen2.5-1.5b"] == (1536, 28, 12, 2)
    assert dims["qwen2.5-7b"] == (3584, 28, 28, 4)
    assert not SHAPES["qwen2.5-7b"]["tie_word_embeddings"] and SHAPES["qwen2.5-1.5b"]["tie_word_embeddings"]
    assert default_rows("qwen2.5-1.5b", 4096, 1) == 8 and default_rows("qwen2.5-7b", 4096, 2) == 4
    assert shape_config("smollm2-135m", 512, 4, backend="cpu")["model"]["compute_dtype"] == "float32"
    with pytest.raises(ValueError, match="--shape 'qwen3'"):
        shape_config("qwen3", 512, 1, backend="cpu")


def test_bench_batch_is_packed() -> None:
    batch = bench_batch(6, 512, 1000, seed=3)
    assert all(v.shape == (6, 512) and v.dtype == np.int32 for v in batch.values())
    for row in range(6):
        seg, pos, mask = batch["segment_ids"][row], batch["positions"][row], batch["loss_mask"][row]
        real = seg > 0
        # Segments 1..n in order, then a (possibly empty) padding tail of at most 1/64 of the row.
        assert 2 <= seg.max() <= 4 and (np.diff(seg[real]) >= 0).all() and (~real).sum() <= 512 // 64
        if (~real).any():
            assert not real[np.flatnonzero(~real)[0] :].any()
        for s in range(1, seg.max() + 1):
            where = np.flatnonzero(seg == s)
            # Positions restart at 0 in every segment; the loss covers its tail (the critique) only.
            assert (pos[where] == np.arange(len(where))).all()
            assert mask[where[0]] == 0 and mask[where[-1]] == 1
        assert (mask[~real] == 0).all()


def test_torch_mask_keeps_segments_apart() -> None:
    segment_ids = np.array([[1, 1, 1, 2, 2, 0]])
    allowed = block_causal_mask(segment_ids)[0, 0]
    expected = np.array(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [0, 0, 0, 1, 0, 0],
            [0, 0, 0, 1, 1, 0],
            [0, 0, 0, 0, 0, 1],  # padding sees only itself: no empty softmax row
        ],
        bool,
    )
    assert (allowed == expected).all()


def test_torch_packed_row_equals_segments_alone() -> None:
    """transformers with the mask and restarted position_ids computes each segment as if alone."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    hf = AutoConfig.for_model(
        model_type="qwen2",
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(hf, dtype=torch.float32, attn_implementation="sdpa").eval()
    batch = bench_batch(1, 64, 64, seed=1)
    ids, pos = (torch.from_numpy(batch[k].astype(np.int64)) for k in ("input_ids", "positions"))
    with torch.no_grad():
        packed = model(
            input_ids=ids,
            position_ids=pos,
            attention_mask=torch.from_numpy(block_causal_mask(batch["segment_ids"])),
        ).logits[0]
        for s in range(1, int(batch["segment_ids"].max()) + 1):
            where = torch.from_numpy(np.flatnonzero(batch["segment_ids"][0] == s))
            alone = model(input_ids=ids[:, where]).logits[0]
            # The same sequence under a block-diagonal mask vs alone: longer rows reduced in another
            # order (see tests/models/test_decoder_packing.py).
            assert_close_to_scale(packed[where].numpy(), alone.numpy(), ulps=64)
