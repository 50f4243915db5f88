"""Greedy decoding with a `Decoder`, for tests and demos.

The forward pass is jitted once on a fixed-size buffer `[1, max_len]`: the prompt and the tokens
generated so far sit at the front, the rest is padding, and because attention is causal the logits at
position t never see the padding after it. There is no KV cache, so each new token re-runs the whole
buffer (O(max_len) work per token): fine for short answers from small models, not for serving;
batched sampling with a KV cache is `cft_jax.sampling`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cft_jax.models.transformer import Decoder


@nnx.jit
def _next_token(model: Decoder, buffer: jax.Array, last: jax.Array) -> jax.Array:
    """buffer [1, max_len] int32, last: index of the last real token -> the argmax token after it."""
    logits = model(buffer)  # [1, max_len, vocab]
    return jnp.argmax(logits[0, last], axis=-1)


def greedy_generate(
    model: Decoder,
    prompt_ids: Sequence[int],
    *,
    max_new_tokens: int,
    eos_token_ids: Sequence[int] = (),
    max_len: int | None = None,
) -> list[int]:
    """The tokens greedily generated after `prompt_ids`, stopping after an EOS (included) or
    `max_new_tokens`. `max_len` is the buffer length (default: prompt + max_new_tokens, rounded up to
    a multiple of 64 so a few prompt lengths share one compilation)."""
    needed = len(prompt_ids) + max_new_tokens
    max_len = max_len or -(-needed // 64) * 64
    if needed > max_len:
        raise ValueError(f"max_len={max_len} is shorter than the prompt plus max_new_tokens ({needed})")
    buffer = np.zeros((1, max_len), np.int32)
    buffer[0, : len(prompt_ids)] = prompt_ids
    generated: list[int] = []
    for position in range(len(prompt_ids), needed):
        token = int(_next_token(model, jnp.asarray(buffer), jnp.int32(position - 1)))
        generated.append(token)
        buffer[0, position] = token
        if token in eos_token_ids:
            break
    return generated
