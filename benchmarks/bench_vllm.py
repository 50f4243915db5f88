"""Generation speed side by side in one run: vLLM's CPU build, transformers and the JAX sampler, on the
same prompts (GSM8K questions in SmolLM2's chat template, as token ids), each row decoding exactly
`--new-tokens` greedy tokens (EOS ignored), float32 weights, one batch of every prompt.

    .venv/bin/python benchmarks/bench_vllm.py --model .cache/tests/smollm2-cft-jax [--prompts 8] \
        [--new-tokens 64] [--vllm-python .venv-vllm/bin/python]

Run from the core's .venv (transformers and the JAX sampler run in it); vLLM runs in a child process
in `.venv-vllm` (`bash scripts/env_vllm.sh`), this file in its `--worker` mode, which imports neither
JAX nor transformers' generate. The three run one after another, never at once. Each is warmed up
on the same batch first (JAX compiles, vLLM builds its engine), so the rates are decoding rates:
prefill + decode of the timed batch. Threads: vLLM's CPU build binds one OpenMP thread per core it
uses and keeps one core for itself (on 2 cores: 1 compute thread); torch and XLA use every core
unless `--threads N` holds them to N (N=1 matches vLLM on 2 cores, and is what a machine shared with
other jobs measures fairly: OpenMP threads waiting for a descheduled sibling slow torch down most).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def prompt_ids(model_dir: str, count: int) -> list[list[int]]:
    from transformers import AutoTokenizer

    from cft_jax.evaluation.suites import load_benchmark

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    chats = [[{"role": "user", "content": p.question}] for p in load_benchmark("gsm8k")[:count]]
    return [
        list(tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=False))
        for c in chats
    ]


def best_of(repeats: int, run):
    """The last result of `run()` and its fastest time over `repeats` runs: on a machine shared with
    other jobs the fastest run is the one they disturbed least."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return result, min(times)


def vllm_worker(model_dir: str, prompts: list[list[int]], new_tokens: int, repeats: int) -> dict:
    """In .venv-vllm: the eval tool's vLLM backend (its engine as `eval --backend vllm` starts it)."""
    from vllm import SamplingParams, TokensPrompt

    from cft_jax.evaluation.backends import VLLMBackend

    started = time.perf_counter()
    backend = VLLMBackend(model_dir, dtype="float32", max_model_len=max(map(len, prompts)) + new_tokens)
    start_seconds = time.perf_counter() - started
    params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True)
    batch = [TokensPrompt(prompt_token_ids=p) for p in prompts]
    backend.llm.generate(batch, params, use_tqdm=False)  # warm-up
    outputs, seconds = best_of(repeats, lambda: backend.llm.generate(batch, params, use_tqdm=False))
    backend.close()
    tokens = [list(o.outputs[0].token_ids) for o in outputs]
    assert all(len(t) == new_tokens for t in tokens)
    return {"tokens": tokens, "seconds": seconds, "start_seconds": start_seconds}


def vllm_rate(python: str, model_dir: str, prompts: list[list[int]], new_tokens: int, repeats: int) -> dict:
    request = json.dumps(
        {"model": model_dir, "prompts": prompts, "new_tokens": new_tokens, "repeats": repeats}
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
    }
    done = subprocess.run(
        [python, __file__, "--worker"], input=request, capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        sys.exit(f"the vLLM worker ({python}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def transformers_rate(
    model_dir: str, prompts: list[list[int]], new_tokens: int, pad: int, threads: int | None, repeats: int
) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    if threads:
        torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])

    def run():
        with torch.inference_mode():
            return model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=None,
            )

    run()  # warm-up
    out, seconds = best_of(repeats, run)
    return {"tokens": out[:, width:].tolist(), "seconds": seconds}


def jax_rate(
    model_dir: str, prompts: list[list[int]], new_tokens: int, cache_dtype: str, repeats: int
) -> dict:
    import jax.numpy as jnp

    from cft_jax.models.hf import load_hf
    from cft_jax.sampling import SampleConfig, Sampler

    model, _ = load_hf(model_dir, dtype=jnp.float32)
    sampler = Sampler(model, cache_dtype=jnp.dtype(cache_dtype))
    config = SampleConfig(max_new_tokens=new_tokens)
    sampler.generate(prompts, config)  # compiles
    out, seconds = best_of(repeats, lambda: sampler.generate(prompts, config))
    assert all(len(o) == new_tokens for o in out)
    return {"tokens": [list(map(int, o)) for o in out], "seconds": seconds}


def agreement(tokens: list[list[int]], reference: list[list[int]]) -> str:
    """How many rows decode the reference's tokens, and where the first differing row parts."""
    same = sum(a == b for a, b in zip(tokens, reference, strict=True))
    first = [
        next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
        for a, b in zip(tokens, reference, strict=True)
        if a != b
    ]
    return f"{same}/{len(reference)} rows equal" + (f", others part at token {min(first)}" if first else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="HF checkpoint directory (float32 weights are used as they are)")
    parser.add_argument("--prompts", type=int, default=8, help="GSM8K questions, one batch")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--cache-dtype", default="float32", help="the JAX sampler's KV cache dtype")
    parser.add_argument("--vllm-python", default=str(REPO / ".venv-vllm" / "bin" / "python"))
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each; the fastest counts")
    parser.add_argument("--threads", type=int, help="torch and XLA threads (default: every core)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        # Read when JAX starts its CPU client, so before anything imports it.
        flags = f"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={args.threads}"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()
    if args.worker:
        request = json.loads(sys.stdin.read())
        print(
            json.dumps(
                vllm_worker(request["model"], request["prompts"], request["new_tokens"], request["repeats"])
            )
        )
        return
    if not args.model:
        parser.error("--model is required")
    prompts = prompt_ids(args.model, args.prompts)
    work = len(prompts) * args.new_tokens
    print(f"$ {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {len(prompts)} prompts of "
        f"{min(map(len, prompts))}-{max(map(len, prompts))} tokens x {args.new_tokens} new tokens, float32; "
        f"torch/XLA threads: {args.threads or 'every core'}; the fastest of {args.repeats} timed runs each"
    )
    from transformers import AutoTokenizer

    pad = AutoTokenizer.from_pretrained(args.model).eos_token_id
    # transformers first: the others' ratios and greedy agreement are against it; each line is
    # printed as soon as it is measured.
    runs = {
        "transformers": lambda: transformers_rate(
            args.model, prompts, args.new_tokens, pad, args.threads, args.repeats
        ),
        "vllm (CPU build)": lambda: vllm_rate(
            args.vllm_python, args.model, prompts, args.new_tokens, args.repeats
        ),
        f"JAX sampler ({args.cache_dtype} cache)": lambda: jax_rate(
            args.model, prompts, args.new_tokens, args.cache_dtype, args.repeats
        ),
    }
    reference = None
    for name, run in runs.items():
        result = run()
        reference = reference or result
        rate = work / result["seconds"]
        line = f"{name:28s} {rate:8.1f} tokens/s  {rate / (work / reference['seconds']):5.2f}x transformers"
        if "start_seconds" in result:
            line += f"  (engine start {result['start_seconds']:.1f} s)"
        print(f"{line}  greedy: {agreement(result['tokens'], reference['tokens'])}", flush=True)


if __name__ == "__main__":
    main()
