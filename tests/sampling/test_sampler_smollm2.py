"""Real weights: on SmolLM2-135M-Instruct, greedy decoding with the KV cache (float32, a batch of
prompts of different lengths) gives exactly transformers' greedy tokens and exactly the no-cache
path's (`greedy_generate`), and a stop string ends its row early."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

from cft_jax.models.generate import greedy_generate
from cft_jax.models.hf import load_hf
from cft_jax.sampling import SampleConfig, Sampler
from cft_jax.sampling.text import sample_texts

QUESTIONS = [
    "What is the capital of France?",
    "2+2=?",
    "Name the largest planet of the solar system, please.",
]
NEW_TOKENS = 7


@pytest.fixture(scope="module")
def tokenizer(smollm2_hf_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_hf_dir)


@pytest.fixture(scope="module")
def prompts(tokenizer) -> list[list[int]]:
    chats = [[{"role": "user", "content": q}] for q in QUESTIONS]
    rendered = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=True) for c in chats]
    ids = [list(r["input_ids"] if hasattr(r, "keys") else r) for r in rendered]
    assert len({len(p) for p in ids}) == len(ids)  # three lengths: the batch is padded
    return ids


@pytest.fixture(scope="module")
def sampler(smollm2_hf_dir) -> Sampler:
    model, _ = load_hf(smollm2_hf_dir)
    return Sampler(model, cache_dtype=jnp.float32)


@pytest.fixture(scope="module")
def cached(sampler, prompts, tokenizer) -> list[list[int]]:
    return sampler.generate(
        prompts, SampleConfig(max_new_tokens=NEW_TOKENS, eos_token_ids=(tokenizer.eos_token_id,))
    )


def test_greedy_with_the_cache_is_transformers_greedy(cached, prompts, tokenizer, smollm2_transformers_dir):
    import torch
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(smollm2_transformers_dir, dtype=torch.float32).eval()
    # transformers' own batch: left-padded, with its attention mask and position ids.
    width = max(map(len, prompts))
    pad = tokenizer.eos_token_id
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = reference.generate(
            input_ids=input_ids,
            attention_mask=mask,
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            eos_token_id=pad,
            pad_token_id=pad,
        )
    # A row that ended is padded with EOS after its EOS: keep up to the first.
    expected = []
    for row in out[:, width:].tolist():
        expected.append(row[: row.index(pad) + 1] if pad in row else row)
    assert cached == expected
    assert tokenizer.decode(cached[0], skip_special_tokens=True).startswith("The capital of France is")


def test_greedy_with_the_cache_is_the_no_cache_path(cached, sampler, prompts, tokenizer):
    model = sampler.model
    eos = [tokenizer.eos_token_id]
    assert cached == [
        greedy_generate(model, p, max_new_tokens=NEW_TOKENS, eos_token_ids=eos) for p in prompts
    ]


def test_a_stop_string_ends_its_row(sampler, prompts, tokenizer, cached):
    texts = [tokenizer.decode(p) for p in prompts]
    config = SampleConfig(max_new_tokens=NEW_TOKENS, eos_token_ids=(tokenizer.eos_token_id,))
    cut, generated = sample_texts(sampler, tokenizer, texts, config, stop_strings=[" Paris"], batch_size=8)
    assert cut[0] == "The capital of France is"
    assert cut[1:] == [tokenizer.decode(c) for c in cached[1:]]
    # Row 0 stopped at " Paris" (its 6th token) inside the loop, not after its 7 tokens.
    assert generated == len(tokenizer.encode("The capital of France is Paris")) + sum(map(len, cached[1:]))
