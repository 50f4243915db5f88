"""Batched sampling with a KV cache: one prefill of the prompts, then a `lax.while_loop` of decode steps.

Prompts of different lengths are left-padded to the length of a bucket (a power of two, so a few
lengths share one compilation): every row's last prompt token sits in the same slot, so each decode
step writes the same cache slot for the whole batch, and a row's left padding is simply never
attended to (`key_start`). Rotary positions count from each row's first real token, as transformers
does with left padding. The compiled program is cached per (batch, bucket, max new tokens, cache
dtype): greedy or not, temperature, top-p, the seed, the EOS ids and the stop sequences are inputs.

Under a mesh (`Sampler(mesh=...)`, the training mesh and its rules table, models/sharding.py) the
cache is split like the activations: batch over ("data", "fsdp"), kv heads over "tensor".
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from cft_jax.models.sharding import constrain
from cft_jax.models.transformer import Decoder

CACHE_AXES = ("layers", "batch", "seq", "kv_heads", "head_dim")
# The shortest prompt bucket; longer prompts go to the next power of two.
MIN_BUCKET = 16
# The longest stop sequence, in tokens (the recipe's stop strings take at most 5 in the Qwen vocabulary).
STOP_WIDTH = 16


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """How to sample: greedy when `temperature == 0`; else temperature and nucleus (top-p).

    A row ends after any of `eos_token_ids` or once its last tokens equal one of `stop_sequences`
    (token ids; `cft_jax.sampling.text` turns stop strings into them); the ending tokens are kept.
    The same prompts, batch, config and seed give the same tokens.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    eos_token_ids: tuple[int, ...] = ()
    stop_sequences: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self):
        if any(not 0 < len(s) <= STOP_WIDTH for s in self.stop_sequences):
            raise ValueError(
                f"stop_sequences: each holds 1 to {STOP_WIDTH} tokens, got {self.stop_sequences}"
            )
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens}: generate at least one token")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(
                f"temperature={self.temperature}, top_p={self.top_p}: temperature >= 0 (0: greedy) and "
                "0 < top_p <= 1"
            )


def _padded(count: int) -> int:
    """Room for `count` EOS ids or stop sequences: a multiple of 8, so most configs share a program."""
    return max(8, -(-count // 8) * 8)


def stop_arrays(config: SampleConfig) -> tuple[np.ndarray, np.ndarray]:
    """The EOS ids [n] (-1 for none) and the stop sequences [m, STOP_WIDTH], right-aligned, -1 padded."""
    eos = np.full(_padded(len(config.eos_token_ids)), -1, np.int32)
    eos[: len(config.eos_token_ids)] = config.eos_token_ids
    stops = np.full((_padded(len(config.stop_sequences)), STOP_WIDTH), -1, np.int32)
    # A row of -1 would match anything: the unused rows hold -3, which no token equals.
    stops[len(config.stop_sequences) :] = -3
    for row, seq in enumerate(config.stop_sequences):
        stops[row, STOP_WIDTH - len(seq) :] = seq
    return eos, stops


def bucket_length(length: int, minimum: int = MIN_BUCKET) -> int:
    """The prompt bucket for a prompt of `length` tokens: `minimum` when that holds it, else the next
    power of two. A caller that knows all its prompts sets `minimum` to the longest, for one program
    and no more padding than that."""
    return minimum if length <= minimum else 1 << (length - 1).bit_length()


def left_align(
    prompts: Sequence[Sequence[int]], bucket: int, pad_id: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Token lists -> ([batch, bucket] int32 tokens right-aligned, [batch] int32 first real slot)."""
    tokens = np.full((len(prompts), bucket), pad_id, np.int32)
    start = np.zeros(len(prompts), np.int32)
    for row, ids in enumerate(prompts):
        if not 0 < len(ids) <= bucket:
            raise ValueError(f"prompt {row} has {len(ids)} tokens; the bucket holds 1 to {bucket}")
        start[row] = bucket - len(ids)
        tokens[row, start[row] :] = ids
    return tokens, start


def unpad(tokens: np.ndarray, mask: np.ndarray) -> list[list[int]]:
    """A padded [batch, seq] batch (left or right padding: `mask` is 1 on real tokens) -> token lists."""
    tokens, mask = np.asarray(tokens), np.asarray(mask).astype(bool)
    return [row[keep].tolist() for row, keep in zip(tokens, mask, strict=True)]


def choose_token(logits: jax.Array, key: jax.Array, temperature: jax.Array, top_p: jax.Array) -> jax.Array:
    """[batch, vocab] float32 logits -> [batch] int32: the argmax when temperature is 0, else a draw
    from the top-p nucleus. One program for both: `lax.cond` runs only the branch it takes."""
    return jax.lax.cond(
        temperature == 0,
        lambda: jnp.argmax(logits, axis=-1).astype(jnp.int32),
        lambda: nucleus_draw(logits, key, jnp.maximum(temperature, 1e-6), top_p),
    )


def nucleus_draw(logits: jax.Array, key: jax.Array, temperature: jax.Array, top_p: jax.Array) -> jax.Array:
    """[batch, vocab] float32 logits -> [batch] int32 drawn at `temperature` from the top-p nucleus."""
    order = jnp.argsort(-logits, axis=-1)
    ranked = jnp.take_along_axis(logits, order, axis=-1) / temperature
    probs = jax.nn.softmax(ranked, axis=-1)
    # Keep the most likely tokens until their mass reaches top_p (the first one always).
    keep = (jnp.cumsum(probs, axis=-1) - probs) < top_p
    keep = keep.at[:, 0].set(True)
    rank = jax.random.categorical(key, jnp.where(keep, ranked, -jnp.inf), axis=-1)
    return jnp.take_along_axis(order, rank[:, None], axis=-1)[:, 0].astype(jnp.int32)


def _ends(recent: jax.Array, token: jax.Array, eos: jax.Array, stops: jax.Array) -> jax.Array:
    """[batch] bool: the row's last token is an EOS id, or its last tokens equal a stop sequence.

    recent: [batch, width] the last tokens generated (-2 before the first); stops: [n, width] the
    stop sequences right-aligned, -1 where a shorter one has no token.
    """
    is_eos = jnp.any(token[:, None] == eos[None, :], axis=-1)
    matches = (stops[None] == -1) | (recent[:, None, :] == stops[None])
    return is_eos | jnp.any(jnp.all(matches, axis=-1), axis=-1)


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("max_new_tokens", "cache_dtype"))
def _sample(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    tokens: jax.Array,
    key_start: jax.Array,
    key: jax.Array,
    temperature: jax.Array,
    top_p: jax.Array,
    eos: jax.Array,
    stops: jax.Array,
    *,
    max_new_tokens: int,
    cache_dtype: jnp.dtype,
) -> tuple[jax.Array, jax.Array]:
    """-> ([batch, max_new_tokens] int32 generated tokens, [batch] int32 how many count)."""
    model: Decoder = nnx.merge(graphdef, state)
    config = model.config
    batch, bucket = tokens.shape
    cache_shape = (config.num_layers, batch, bucket + max_new_tokens, config.num_kv_heads, config.head_dim)
    cache = tuple(constrain(jnp.zeros(cache_shape, cache_dtype), CACHE_AXES) for _ in range(2))
    kernel = model.unembed_kernel().astype(model.compute_dtype)

    def logits_of(h: jax.Array) -> jax.Array:  # [batch, hidden] -> [batch, vocab] float32
        return jnp.einsum("bd,dv->bv", h, kernel, preferred_element_type=jnp.float32)

    def pick(logits: jax.Array, step: jax.Array) -> jax.Array:
        return choose_token(logits, jax.random.fold_in(key, step), temperature, top_p)

    positions = jnp.maximum(jnp.arange(bucket)[None, :] - key_start[:, None], 0)
    h, cache = model.cached_hidden_states(tokens, positions, cache, jnp.int32(0), key_start)
    token = pick(logits_of(h[:, -1]), jnp.int32(0))
    width = stops.shape[1]
    recent = jnp.concatenate([jnp.full((batch, width - 1), -2, jnp.int32), token[:, None]], axis=1)
    done = _ends(recent, token, eos, stops)
    out = jnp.zeros((batch, max_new_tokens), jnp.int32).at[:, 0].set(token)
    lengths = jnp.where(done, 1, max_new_tokens).astype(jnp.int32)

    def keep_going(carry) -> jax.Array:
        _, step, _, _, _, _, done, _ = carry
        return (step < max_new_tokens) & ~jnp.all(done)

    def decode(carry):
        params, step, token, cache, out, recent, done, lengths = carry
        # The parameters ride in the carry: NNX refuses a module whose values are an outer trace's.
        model: Decoder = nnx.merge(graphdef, params)
        slot = bucket + step - 1  # where the previous token goes
        positions = (slot - key_start)[:, None]
        h, cache = model.cached_hidden_states(token[:, None], positions, cache, slot, key_start)
        token = jnp.where(done, 0, pick(logits_of(h[:, 0]), step))
        out = out.at[:, step].set(token)
        recent = jnp.concatenate([recent[:, 1:], token[:, None]], axis=1)
        ends = ~done & _ends(recent, token, eos, stops)
        lengths = jnp.where(ends, step + 1, lengths)
        return params, step + 1, token, cache, out, recent, done | ends, lengths

    carry = (state, jnp.int32(1), token, cache, out, recent, done, lengths)
    *_, out, _, _, lengths = jax.lax.while_loop(keep_going, decode, carry)
    return out, lengths


class Sampler:
    """Samples continuations of token-id prompts from a `Decoder` with a KV cache.

    Args:
      model: the decoder; its parameters already placed on `mesh` when one is given (`load_hf(mesh=)`).
      mesh: the device mesh to sample on (the training mesh); None: the parameters' own device.
      cache_dtype: dtype the keys and values are cached in (bfloat16 halves the cache's memory).
      batch_size: when set, every batch is padded to this many rows, so one program serves them all.
    """

    def __init__(
        self,
        model: Decoder,
        *,
        mesh: jax.sharding.Mesh | None = None,
        cache_dtype: jnp.dtype = jnp.bfloat16,
        batch_size: int | None = None,
        min_bucket: int = MIN_BUCKET,
    ):
        self.model = model
        self.graphdef, self.state = nnx.split(model)
        self.mesh = mesh
        self.cache_dtype = jnp.dtype(cache_dtype)
        self.batch_size = batch_size
        self.min_bucket = min_bucket

    def generate(self, prompts: Sequence[Sequence[int]], config: SampleConfig) -> list[list[int]]:
        """The tokens generated after each prompt, up to and including its EOS or stop sequence."""
        if not prompts:
            return []
        rows = len(prompts)
        if self.batch_size is not None:
            if rows > self.batch_size:
                raise ValueError(f"{rows} prompts: more than batch_size={self.batch_size}")
            prompts = [*prompts, *[prompts[0]] * (self.batch_size - rows)]
        bucket = bucket_length(max(len(p) for p in prompts), self.min_bucket)
        tokens, start = left_align(prompts, bucket)
        eos, stops = stop_arrays(config)
        inputs = (
            tokens,
            start,
            jax.random.key(config.seed),
            np.float32(config.temperature),
            np.float32(config.top_p),
            eos,
            stops,
        )
        options = {
            "max_new_tokens": config.max_new_tokens,
            "cache_dtype": self.cache_dtype,
        }
        if self.mesh is None:
            out, lengths = _sample(self.graphdef, self.state, *inputs, **options)
        else:
            with jax.set_mesh(self.mesh):
                out, lengths = _sample(self.graphdef, self.state, *inputs, **options)
        out, lengths = _to_host(out), _to_host(lengths)
        return [out[row, : lengths[row]].tolist() for row in range(rows)]


def _to_host(x: jax.Array) -> np.ndarray:
    """The whole array on this host: in a multi-process run each process holds only its rows."""
    if x.is_fully_addressable:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
