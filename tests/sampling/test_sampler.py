"""The KV-cache sampler on a tiny random decoder: sharded on 8 devices it samples what one device
does, seeded sampling repeats, a tiny top-p is greedy, EOS ids and stop sequences end a row, and a
prompt bucket compiles once."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from cft_jax.models import Decoder, ModelConfig
from cft_jax.models.sharding import make_mesh, shard_model
from cft_jax.sampling import SampleConfig, Sampler, bucket_length, unpad
from cft_jax.sampling.sampler import _sample

CONFIG = ModelConfig(
    model_type="llama",
    vocab_size=256,
    hidden_size=64,
    intermediate_size=96,
    num_layers=2,
    num_heads=8,
    num_kv_heads=4,
    head_dim=16,
)
# Eight prompts of lengths 3 to 17: two buckets' worth of padding, one bucket (32).
PROMPTS = [list(np.random.default_rng(row).integers(0, 256, size=3 + 2 * row)) for row in range(8)]
GREEDY = SampleConfig(max_new_tokens=6)
SAMPLED = SampleConfig(max_new_tokens=6, temperature=1.0, top_p=0.9, seed=3)


def tiny_decoder() -> Decoder:
    """Random weights 10x the default init, so the logits spread out and argmax has no near ties."""
    model = Decoder(CONFIG, rngs=nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    scaled = jax.tree.map(lambda x: x * 10 if x.ndim > 1 else x, state)
    nnx.update(model, scaled)
    return model


@pytest.fixture(scope="module")
def one_device() -> dict[str, list[list[int]]]:
    sampler = Sampler(tiny_decoder())
    return {"greedy": sampler.generate(PROMPTS, GREEDY), "sampled": sampler.generate(PROMPTS, SAMPLED)}


@pytest.mark.skipif(jax.device_count() < 8, reason="needs XLA_FLAGS=--xla_force_host_platform_device_count=8")
@pytest.mark.parametrize("mesh_shape", [(1, 8, 1), (1, 2, 4)], ids=["fsdp8", "fsdp2-tensor4"])
def test_sharded_sampling_equals_one_device(one_device, mesh_shape):
    mesh = make_mesh(*mesh_shape, devices=jax.devices()[:8])
    sampler = Sampler(shard_model(tiny_decoder(), mesh), mesh=mesh)
    assert sampler.generate(PROMPTS, GREEDY) == one_device["greedy"]
    assert sampler.generate(PROMPTS, SAMPLED) == one_device["sampled"]


def test_seeded_sampling_repeats_and_tiny_top_p_is_greedy(one_device):
    sampler = Sampler(tiny_decoder())
    assert sampler.generate(PROMPTS, SAMPLED) == one_device["sampled"]
    other_seed = sampler.generate(PROMPTS, SampleConfig(max_new_tokens=6, temperature=1.0, top_p=0.9, seed=4))
    assert other_seed != one_device["sampled"]
    assert one_device["sampled"] != one_device["greedy"]
    nucleus_of_one = SampleConfig(max_new_tokens=6, temperature=1.0, top_p=1e-6, seed=3)
    assert sampler.generate(PROMPTS, nucleus_of_one) == one_device["greedy"]


def cut_after(tokens: list[int], ends) -> list[int]:
    """`tokens` up to and including the first position where `ends(tokens[: i + 1])` holds."""
    return next((tokens[: i + 1] for i in range(len(tokens)) if ends(tokens[: i + 1])), tokens)


def test_eos_ids_and_stop_sequences_end_a_row(one_device):
    sampler = Sampler(tiny_decoder())
    greedy = one_device["greedy"]
    eos = greedy[0][2]
    with_eos = sampler.generate(PROMPTS, SampleConfig(max_new_tokens=6, eos_token_ids=(eos, 255)))
    assert with_eos == [cut_after(row, lambda t: t[-1] in (eos, 255)) for row in greedy]
    assert len(with_eos[0]) <= 3
    stop = tuple(greedy[1][3:5])
    with_stop = sampler.generate(PROMPTS, SampleConfig(max_new_tokens=6, stop_sequences=(stop, (7, 7, 7))))
    assert with_stop == [cut_after(row, lambda t: tuple(t[-2:]) == stop) for row in greedy]
    assert len(with_stop[1]) <= 5


def test_left_and_right_padded_batches_give_the_same_prompts():
    tokens = np.array([[0, 0, 5, 6], [5, 6, 7, 8]])
    left = unpad(tokens, tokens != 0)
    right = unpad(np.array([[5, 6, 0, 0], [5, 6, 7, 8]]), np.array([[1, 1, 0, 0], [1, 1, 1, 1]]))
    assert left == right == [[5, 6], [5, 6, 7, 8]]


def test_one_compilation_per_bucket(one_device):
    assert [bucket_length(n) for n in (1, 16, 17, 32, 33)] == [16, 16, 32, 32, 64]
    # Padded to the fixture's batch of 8 rows, in its bucket (32) and max_new_tokens: its program.
    sampler = Sampler(tiny_decoder(), batch_size=8)
    before = _sample._cache_size()
    longer = sampler.generate(PROMPTS[4:], SampleConfig(max_new_tokens=6, eos_token_ids=(1,)))  # 11..17
    assert _sample._cache_size() == before
    sampler.generate(PROMPTS[:4], SAMPLED)  # lengths 3..9: bucket 16, compiled once
    sampler.generate([p[:12] for p in PROMPTS[4:]], GREEDY)
    assert _sample._cache_size() == before + 1
    assert longer == [cut_after(row, lambda t: t[-1] == 1) for row in one_device["greedy"][4:]]
