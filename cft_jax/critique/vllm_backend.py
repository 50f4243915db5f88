"""Offline vLLM sampling on a local GPU; imported only when a generator asks for backend "vllm".

vLLM generates a whole chunk at once, so resume works per chunk: ids already written are skipped
before generating, and each finished chunk is appended record by record.
"""

from __future__ import annotations

import time
from pathlib import Path

from cft_jax.critique.config import ModelSpec
from cft_jax.critique.runner import RunSummary, now
from cft_jax.critique.solutions import pending, solution_record
from cft_jax.schema import JsonlAppender, ProblemRecord, done_ids

CHUNK = 256


def sample_vllm(problems: list[ProblemRecord], out: str | Path, generator: ModelSpec) -> RunSummary:
    """The generator's K samples per problem, through `vllm.LLM` with the model's chat template."""
    from vllm import LLM, SamplingParams

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
    llm = LLM(model=generator.endpoint.model)
    params = {
        k: v for k, v in generator.params.items() if k in ("temperature", "top_p", "max_tokens", "stop")
    }
    with JsonlAppender(out) as writer:
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start : start + CHUNK]
            requested_at = now()
            sampling = [
                SamplingParams(**params, seed=(generator.params.get("seed") or 0) + index)
                for _, index in chunk
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
    summary.seconds = round(time.monotonic() - started, 3)
    return summary
