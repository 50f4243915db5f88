"""transformers-backend generation speed on CPU, batched vs one prompt at a time.

    python benchmarks/bench_generate.py --model .cache/tests/smollm2-transformers --prompts 8 \
        --max-new-tokens 32 --batch-size 8
"""

from __future__ import annotations

import argparse
import time

from cft_jax.evaluation.backends import Sampling, TransformersBackend
from cft_jax.evaluation.prompts import render
from cft_jax.evaluation.suites import load_benchmark


def tokens_per_second(backend: TransformersBackend, prompts: list[str], sampling: Sampling) -> float:
    backend.generated_tokens = 0
    start = time.perf_counter()
    backend.generate(prompts, sampling)
    return backend.generated_tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="HF checkpoint directory")
    parser.add_argument("--prompts", type=int, default=8, help="GSM8K questions")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    backend = TransformersBackend(args.model, batch_size=args.batch_size)
    prompts = [render("deepseek-math", p.question) for p in load_benchmark("gsm8k")[: args.prompts]]
    sampling = Sampling(max_new_tokens=args.max_new_tokens)
    batched = tokens_per_second(backend, prompts, sampling)
    backend.batch_size = 1
    single = tokens_per_second(backend, prompts, sampling)
    print(
        f"{args.prompts} prompts x {args.max_new_tokens} new tokens: batched (batch {args.batch_size}) "
        f"{batched:.1f} tokens/s, unbatched {single:.1f} tokens/s, speedup {batched / single:.2f}x"
    )


if __name__ == "__main__":
    main()
