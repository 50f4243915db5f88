"""Offline vLLM sampling (a GPU, or vLLM's CPU build in .venv-vllm); imported only for backend "vllm".

vLLM generates a whole chunk at once, so resume works per chunk: ids already written are skipped
before generating (a fully written run starts no engine), and each finished chunk is appended record
by record. Each sample has a seed of its own, a hash of the generator's `seed`, the problem id and
the sample index (`sample_seed`): a rerun that regenerates a lost record draws the same text, and no
two problems share their draws (`seed + i` for every problem would give sample i of each problem
the same noise). One engine per generator, shut down before the next one starts.
"""

from __future__ import annotations

import time
from pathlib import Path

from cft_jax.critique.config import ModelSpec
from cft_jax.critique.runner import RunSummary, now
from cft_jax.critique.solutions import pending, solution_record
from cft_jax.evaluation.vllm_engine import release_memory, start_engine, stop_engine
from cft_jax.schema import JsonlAppender, ProblemRecord, done_ids, stable_id

CHUNK = 256


def sample_seed(seed: int, problem_id: str, index: int) -> int:
    """The seed of one sample: fixed by (seed, problem, index), 32 bits, unrelated across problems."""
    return int(stable_id("vllm-sample", seed, problem_id, index)[:8], 16)


def sample_vllm(problems: list[ProblemRecord], out: str | Path, generator: ModelSpec) -> RunSummary:
    """The generator's K samples per problem, through `vllm.LLM` with the model's chat template."""
    started = time.monotonic()
    summary = RunSummary()
    done = done_ids(out)
    todo = []
    for problem, index, sid in pending(problems, generator):
        if sid in done:
            summary.skipped += 1
        else:
            todo.append((problem, index))
    if not todo:
        return summary
    llm = start_engine(generator.endpoint.model, max_model_len=generator.max_model_len)
    try:
        _sample(llm, todo, out, generator, summary)
    finally:
        stop_engine(llm)
        del llm
        release_memory()
    summary.seconds = round(time.monotonic() - started, 3)
    return summary


def _sample(
    llm, todo: list[tuple[ProblemRecord, int]], out, generator: ModelSpec, summary: RunSummary
) -> None:
    from vllm import SamplingParams

    params = {
        k: v for k, v in generator.params.items() if k in ("temperature", "top_p", "max_tokens", "stop")
    }
    with JsonlAppender(out) as writer:
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start : start + CHUNK]
            requested_at = now()
            seed = generator.params.get("seed") or 0
            sampling = [
                SamplingParams(**params, seed=sample_seed(seed, problem.id, index))
                for problem, index in chunk
            ]
            conversations = [generator.template.render(problem.question) for problem, _ in chunk]
            outputs = llm.chat(conversations, sampling, use_tqdm=False)
            for (problem, index), output in zip(chunk, outputs, strict=True):
                usage = {
                    "prompt_tokens": len(output.prompt_token_ids or []),
                    "completion_tokens": len(output.outputs[0].token_ids),
                }
                meta = {"requested_at": requested_at, "finished_at": now(), "usage": usage, "attempts": 1}
                writer.write(solution_record(problem, generator, index, output.outputs[0].text, meta))
                summary.written += 1
