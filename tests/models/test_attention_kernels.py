"""Fused attention kernels equal the XLA reference on packed rows; "auto" falls back with a logged reason.

There is no TPU or GPU here: both kernels ("splash" for TPU, "pallas_gpu" for GPU) run in Pallas
interpret mode on CPU, which executes the kernels' own block loops, masks and custom backward passes
with NumPy-exact arithmetic. That checks their numerics and our wiring (GQA grouping, scaling, segment
ids, shard_map on the mesh), not their speed or their Mosaic / Triton lowering, which need the hardware
(docs/performance.md lists the commands a GPU or TPU session runs).
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cft_jax.models import Decoder, ModelConfig
from cft_jax.models.attention import get_attention, xla_attention
from cft_jax.models.attention_kernels import AUTO_KERNEL, FUSED_KERNELS, choose_attention
from cft_jax.models.sharding import make_mesh
from tests.tolerances import BF16_EPS, assert_close_to_scale

BATCH, SEQ, HEADS, KV_HEADS, HEAD_DIM = 2, 384, 4, 2, 64


def packed_segment_ids(lengths_per_row: list[list[int]], seq: int) -> jax.Array:
    """[batch, seq] ids 1, 2, ... for consecutive segments of the given lengths, then padding (0)."""
    rows = []
    for lengths in lengths_per_row:
        ids = np.concatenate([np.full(n, i + 1) for i, n in enumerate(lengths)])
        rows.append(np.pad(ids, (0, seq - len(ids))))
    return jnp.asarray(np.stack(rows), dtype=jnp.int32)


# Segments straddle the 128-token kernel blocks; both rows end in padding.
SEGMENT_IDS = packed_segment_ids([[100, 150, 90], [20, 300]], SEQ)
NOT_PADDING = np.asarray(SEGMENT_IDS != 0)


def qkv_and_cotangent() -> tuple[jax.Array, ...]:
    rng = np.random.default_rng(0)
    q = rng.normal(size=(BATCH, SEQ, HEADS, HEAD_DIM))
    k, v = rng.normal(size=(2, BATCH, SEQ, KV_HEADS, HEAD_DIM))
    # Padding rows get no cotangent: their outputs are never read, and the kernels differ there.
    cotangent = rng.normal(size=q.shape) * NOT_PADDING[:, :, None, None]
    return tuple(jnp.asarray(x, jnp.float32) for x in (q, k, v, cotangent))


def forward_and_grads(attention, q, k, v, cotangent):
    """(output, (dq, dk, dv)) of sum(attention(q, k, v) * cotangent)."""

    def loss(q, k, v):
        out = attention(q, k, v, SEGMENT_IDS)
        return jnp.sum(out * cotangent), out

    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    return out, grads


def tolerance(impl: str) -> dict[str, float]:
    """`assert_close_to_scale` arguments for a kernel against the reference.

    Interpreted, a kernel computes in fp32 with an online softmax over 128-key blocks where the
    reference takes one pass over the 384 keys: a reordering of 384-term sums, 64 ulps of the output's
    scale (seen: <= 7). On its own hardware fp32 matmuls round their inputs once to bf16 (TPU's default
    precision) or TF32 (GPU), in the kernel and in the reference alike: 2 bf16 ulps of the scale.
    """
    kernel = AUTO_KERNEL.get(jax.default_backend()) if impl == "auto" else impl
    native = kernel in FUSED_KERNELS and jax.default_backend() == FUSED_KERNELS[kernel].backend
    return {"ulps": 2, "eps": BF16_EPS} if native else {"ulps": 64}


def assert_matches_reference(impl: str) -> None:
    q, k, v, cotangent = qkv_and_cotangent()
    out, grads = forward_and_grads(get_attention(impl), q, k, v, cotangent)
    ref_out, ref_grads = forward_and_grads(xla_attention, q, k, v, cotangent)
    assert_close_to_scale(np.asarray(out)[NOT_PADDING], np.asarray(ref_out)[NOT_PADDING], **tolerance(impl))
    for name, g, ref in zip("qkv", grads, ref_grads, strict=True):
        assert_close_to_scale(g, ref, **tolerance(impl), err_msg=f"d{name}")


@pytest.mark.parametrize("impl", sorted(FUSED_KERNELS))
def test_kernel_equals_reference_forward_and_grads(impl):
    assert_matches_reference(impl)


def test_splash_under_shard_map_on_the_mesh_equals_reference():
    mesh = make_mesh(data=2, fsdp=1, tensor=2, devices=jax.devices()[:4])
    with jax.set_mesh(mesh):
        q, k, v, _ = qkv_and_cotangent()
        assert "shard_map" in str(jax.make_jaxpr(get_attention("splash"))(q, k, v, SEGMENT_IDS))
        assert_matches_reference("splash")


def shapes(seq=SEQ, heads=HEADS, kv_heads=KV_HEADS, head_dim=HEAD_DIM, dtype=jnp.bfloat16):
    """(q, k) stand-ins: the choice reads only shapes and dtype."""
    q = jax.ShapeDtypeStruct((BATCH, seq, heads, head_dim), dtype)
    return q, jax.ShapeDtypeStruct((BATCH, seq, kv_heads, head_dim), dtype)


@pytest.mark.parametrize(
    ("backend", "q_k", "reason"),
    [
        ("cpu", shapes(), "no fused kernel for backend 'cpu'"),
        ("tpu", shapes(head_dim=96), "splash takes head_dim 64 or a multiple of 128, got head_dim=96"),
        ("tpu", shapes(dtype=jnp.float16), "splash takes ['float32', 'bfloat16'], not float16"),
        ("gpu", shapes(seq=200), "pallas_gpu needs seq a multiple of 128 (its block size), got seq=200"),
        ("gpu", shapes(head_dim=512), "pallas_gpu takes head_dim 16 to 256, got head_dim=512"),
    ],
)
def test_auto_falls_back_to_the_reference_with_a_logged_reason(backend, q_k, reason, caplog):
    with caplog.at_level(logging.WARNING, logger="cft_jax.models.attention_kernels"):
        assert choose_attention("auto", *q_k, backend) == "xla"
    assert f"falls back to the XLA reference attention: {reason}" in caplog.text


def test_auto_falls_back_when_the_mesh_cannot_split_the_kv_heads(caplog):
    mesh = make_mesh(data=1, fsdp=2, tensor=4, devices=jax.devices()[:8]).abstract_mesh
    with caplog.at_level(logging.WARNING, logger="cft_jax.models.attention_kernels"):
        assert choose_attention("auto", *shapes(heads=8), "tpu", mesh) == "xla"
    assert "kv_heads=2" in caplog.text


@pytest.mark.parametrize(("backend", "kernel"), [("tpu", "splash"), ("gpu", "pallas_gpu")])
def test_auto_picks_the_backends_kernel_when_it_fits(backend, kernel, caplog):
    with caplog.at_level(logging.WARNING):
        assert choose_attention("auto", *shapes(), backend) == kernel
    assert not caplog.records


def test_a_named_kernel_that_cannot_run_is_refused():
    with pytest.raises(ValueError, match="attention_impl='splash' cannot run here: .*seq=200"):
        choose_attention("splash", *shapes(seq=200), "tpu")


def test_auto_equals_the_reference_on_this_backend():
    assert_matches_reference("auto")


DECODER_CONFIG = ModelConfig(
    model_type="qwen2",
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=64,
    attention_bias=True,
)


@pytest.mark.parametrize("impl", sorted(FUSED_KERNELS))
def test_decoder_logits_with_a_kernel_equal_the_reference(impl):
    segment_ids = packed_segment_ids([[40, 70], [128], [5, 60, 30]], 128)
    input_ids = jnp.asarray(np.random.default_rng(1).integers(0, 64, size=segment_ids.shape))
    reference = Decoder(DECODER_CONFIG, rngs=nnx.Rngs(0))
    model = Decoder(DECODER_CONFIG, attention_impl=impl, rngs=nnx.Rngs(0))
    logits = nnx.jit(lambda m: m(input_ids, segment_ids=segment_ids))(model)
    expected = nnx.jit(lambda m: m(input_ids, segment_ids=segment_ids))(reference)
    rows = np.asarray(segment_ids != 0)
    assert_close_to_scale(np.asarray(logits)[rows], np.asarray(expected)[rows], **tolerance(impl))
