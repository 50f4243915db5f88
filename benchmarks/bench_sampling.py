"""Decode speed on CPU, side by side in one run: the KV-cache sampler, the no-cache `greedy_generate`,
and transformers' own `generate`, on SmolLM2-135M-Instruct (batch 8, 128 new tokens, float32).

    python benchmarks/bench_sampling.py --model .cache/tests/smollm2-cft-jax \
        --reference .cache/tests/smollm2-transformers [--batch 8] [--new-tokens 128]

Every row generates exactly `--new-tokens` tokens (no EOS), so the three do the same work. The
no-cache path decodes one prompt at a time and each of its steps re-runs the same fixed-size buffer,
so its rate is measured over `--no-cache-steps` steps of one prompt (every step costs the same).
Compilation is excluded (a warm-up run first); the transformers run is timed after its own warm-up.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from cft_jax.evaluation.suites import load_benchmark
from cft_jax.models.generate import _next_token
from cft_jax.models.hf import load_hf
from cft_jax.sampling import SampleConfig, Sampler


def prompts_of(tokenizer, count: int) -> list[list[int]]:
    questions = [p.question for p in load_benchmark("gsm8k")[:count]]
    chats = [[{"role": "user", "content": q}] for q in questions]
    return [
        list(tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=False))
        for c in chats
    ]


def kv_cache_rate(model, prompts, new_tokens: int, cache_dtype) -> float:
    sampler = Sampler(model, cache_dtype=cache_dtype)
    config = SampleConfig(max_new_tokens=new_tokens)
    sampler.generate(prompts, config)  # compiles
    start = time.perf_counter()
    out = sampler.generate(prompts, config)
    elapsed = time.perf_counter() - start
    assert all(len(o) == new_tokens for o in out)
    return len(prompts) * new_tokens / elapsed


def no_cache_rate(model, prompt: list[int], new_tokens: int, steps: int) -> float:
    # greedy_generate's buffer for this prompt and new_tokens (see cft_jax/models/generate.py).
    max_len = -(-(len(prompt) + new_tokens) // 64) * 64
    buffer = np.zeros((1, max_len), np.int32)
    buffer[0, : len(prompt)] = prompt
    _next_token(model, jnp.asarray(buffer), jnp.int32(len(prompt) - 1)).block_until_ready()  # compiles
    start = time.perf_counter()
    for position in range(len(prompt), len(prompt) + steps):
        buffer[0, position] = int(_next_token(model, jnp.asarray(buffer), jnp.int32(position - 1)))
    return steps / (time.perf_counter() - start)


def transformers_rate(reference_dir: str, prompts, new_tokens: int, pad: int) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(reference_dir, dtype=torch.float32).eval()
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    options = dict(do_sample=False, pad_token_id=pad, eos_token_id=None)

    def run(tokens: int):
        with torch.inference_mode():
            return model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=tokens, min_new_tokens=tokens, **options
            )

    run(4)  # warm-up
    start = time.perf_counter()
    out = run(new_tokens)
    elapsed = time.perf_counter() - start
    assert out.shape[1] == width + new_tokens
    return len(prompts) * new_tokens / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="SmolLM2 as an HF directory (ours)")
    parser.add_argument("--reference", required=True, help="the same weights as transformers saves them")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--no-cache-steps", type=int, default=16)
    parser.add_argument("--cache-dtype", default="bfloat16")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    prompts = prompts_of(tokenizer, args.batch)
    model, _ = load_hf(args.model)
    print(f"$ python {shlex.join(sys.argv)}")
    print(
        f"backend {jax.default_backend()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
        f"batch {args.batch}, prompts of {min(map(len, prompts))}-{max(map(len, prompts))} tokens, "
        f"{args.new_tokens} new tokens"
    )
    cached = kv_cache_rate(model, prompts, args.new_tokens, jnp.dtype(args.cache_dtype))
    print(f"KV cache ({args.cache_dtype} cache): {cached:8.1f} tokens/s")
    no_cache = no_cache_rate(model, prompts[0], args.new_tokens, args.no_cache_steps)
    print(f"no cache (greedy_generate):  {no_cache:8.1f} tokens/s")
    reference = transformers_rate(args.reference, prompts, args.new_tokens, tokenizer.eos_token_id)
    print(f"transformers generate:       {reference:8.1f} tokens/s")
    print(
        f"KV cache / no cache: {cached / no_cache:.1f}x (floor 5x); "
        f"KV cache / transformers: {cached / reference:.2f}x (floor 1x)"
    )


if __name__ == "__main__":
    main()
