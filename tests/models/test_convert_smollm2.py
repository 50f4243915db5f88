"""Real weights: SmolLM2-135M-Instruct converted by our `from-gguf` matches transformers' own GGUF
loading tensor for tensor, gives the same logits (within 256 fp32 ulps of their scale, about 6e-4),
and answers the capital question."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from cft_jax.models.generate import greedy_generate
from cft_jax.models.hf import load_hf
from tests.tolerances import assert_close_to_scale

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tokenizer(smollm2_hf_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_hf_dir)


@pytest.fixture(scope="module")
def prompt_ids(tokenizer) -> list[int]:
    return list(
        tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=True, return_dict=False)
    )


@pytest.fixture(scope="module")
def smollm2(smollm2_hf_dir):
    return load_hf(smollm2_hf_dir)


def test_weights_equal_transformers_gguf_loading(smollm2_hf_dir, smollm2_transformers_dir):
    ours, reference = (
        load_file(smollm2_hf_dir / "model.safetensors"),
        load_file(smollm2_transformers_dir / "model.safetensors"),
    )
    assert sorted(ours) == sorted(reference)
    for name in reference:
        np.testing.assert_array_equal(ours[name], reference[name], err_msg=name)
    config = json.loads((smollm2_hf_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["num_hidden_layers"], config["num_key_value_heads"], config["tie_word_embeddings"]) == (
        30,
        3,
        True,
    )


def test_tokenizer_and_chat_template_match_transformers(tokenizer, prompt_ids, smollm2_transformers_dir):
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(smollm2_transformers_dir)
    expected = reference.apply_chat_template(
        QUESTION, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert prompt_ids == list(expected)
    for text in ["Hello   world!! 12345 café\n\n\tx", "def f(x):\n    return x**2  # ok", "<|im_end|> 3.14"]:
        assert tokenizer.encode(text) == reference.encode(text), text
    assert tokenizer.eos_token == "<|im_end|>"


def test_logits_match_transformers(smollm2, prompt_ids, smollm2_transformers_dir):
    import torch
    from transformers import AutoModelForCausalLM

    model, _ = smollm2
    reference = AutoModelForCausalLM.from_pretrained(smollm2_transformers_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        expected = reference(torch.tensor([prompt_ids])).logits.numpy()
    ours = np.asarray(model(jnp.asarray([prompt_ids], jnp.int32)))
    # Two libraries, 30 layers of fp32 reductions over 576 hidden units (or 1536 FFN units) each in
    # their own order: ~8 ulps a layer, in ulps of the logits' scale (~20; seen: 46 ulps).
    assert_close_to_scale(ours, expected, ulps=256)


def test_greedy_answer_is_paris(smollm2, tokenizer, prompt_ids):
    model, _ = smollm2
    answer = greedy_generate(model, prompt_ids, max_new_tokens=12, eos_token_ids=[tokenizer.eos_token_id])
    assert tokenizer.decode(answer, skip_special_tokens=True).strip() == "The capital of France is Paris."
