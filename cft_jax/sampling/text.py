"""Text in, text out: a tokenizer around the `Sampler`, with stop strings.

Stop strings end a row inside the compiled loop when the model writes them the way the tokenizer
does (their token ids are `stop_sequences`); the decoded text is then cut at the first stop string
however it was spelled, so the answer is the same as a library that checks text after every token.
The tokenizer is any transformers tokenizer (duck-typed: `__call__`, `encode`, `decode`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from cft_jax.sampling.sampler import SampleConfig, Sampler


def stop_sequences(tokenizer: Any, stop_strings: Sequence[str]) -> tuple[tuple[int, ...], ...]:
    """Each stop string as the tokenizer writes it on its own (a special token: its one id)."""
    return tuple(ids for s in stop_strings if (ids := tuple(tokenizer.encode(s, add_special_tokens=False))))


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    """The text up to (not including) the first stop string."""
    return text[: min((i for s in stop_strings if (i := text.find(s)) >= 0), default=len(text))]


def sample_texts(
    sampler: Sampler,
    tokenizer: Any,
    prompts: Sequence[str],
    config: SampleConfig,
    *,
    stop_strings: Sequence[str] = (),
    batch_size: int = 8,
) -> tuple[list[str], int]:
    """The completion of each prompt (cut at the stop strings) and the number of tokens generated.

    Prompts carry their own special tokens (templates render them), so none are added.
    """
    stops = (*config.stop_sequences, *stop_sequences(tokenizer, stop_strings))
    config = dataclasses.replace(config, stop_sequences=stops)
    texts, generated = [], 0
    for start in range(0, len(prompts), batch_size):
        batch = list(prompts[start : start + batch_size])
        ids = tokenizer(batch, add_special_tokens=False)["input_ids"]
        for out in sampler.generate(ids, config):
            generated += len(out)
            texts.append(cut_at_stop(tokenizer.decode(out, skip_special_tokens=False), stop_strings))
    return texts, generated
