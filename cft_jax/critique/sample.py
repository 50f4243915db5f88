"""sample: K candidate solutions per problem from each generator, graded against the reference.

Backends: any OpenAI-compatible endpoint (OpenAI, a vLLM or SGLang server) through `ChatClient`, or
vLLM offline on a local GPU (`vllm_backend`). A solution's id is a hash of the problem id, the
generator's name and the sample index, fixed before any call, so reruns skip what is written
(`solutions.py`: ids, grading and records, shared by both backends).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

from cft_jax.critique.client import Accounting, ChatClient, RetryPolicy
from cft_jax.critique.config import ModelSpec
from cft_jax.critique.records import read_records
from cft_jax.critique.runner import Job, RunSummary, now, run_jobs
from cft_jax.critique.solutions import pending, solution_record
from cft_jax.schema import ProblemRecord, SolutionRecord


def sample_jobs(
    problems: list[ProblemRecord], generators: list[tuple[ModelSpec, ChatClient]]
) -> Iterator[Job]:
    for generator, client in generators:
        for problem, index, sid in pending(problems, generator):

            async def make(
                problem: ProblemRecord = problem,
                index: int = index,
                generator: ModelSpec = generator,
                client: ChatClient = client,
            ) -> SolutionRecord:
                requested_at = now()
                completion = await client.chat(
                    generator.template.render(problem.question), **generator.params
                )
                meta = {
                    "requested_at": requested_at,
                    "finished_at": now(),
                    "usage": completion.usage,
                    "attempts": completion.attempts,
                }
                # Grading can take a while (sympy under a time limit): keep the event loop free.
                return await asyncio.to_thread(
                    solution_record, problem, generator, index, completion.texts[0], meta
                )

            yield Job(
                sid, make, {"problem_id": problem.id, "generator": generator.name, "sample_index": index}
            )


async def sample_openai(
    problems: list[ProblemRecord],
    out: str | Path,
    failures: str | Path,
    generators: list[ModelSpec],
    retry: RetryPolicy,
) -> RunSummary:
    accounting = Accounting()
    clients = [(g, ChatClient(g.endpoint, retry, accounting)) for g in generators]
    try:
        summary = await run_jobs(
            sample_jobs(problems, clients),
            out,
            failures,
            concurrency=sum(g.endpoint.concurrency for g in generators),
        )
    finally:
        await asyncio.gather(*(c.close() for _, c in clients))
    summary.usage = accounting.summary()
    return summary


def sample(
    problems_path: str | Path,
    out: str | Path,
    failures: str | Path,
    generators: list[ModelSpec],
    retry: RetryPolicy,
) -> RunSummary:
    """Samples every generator's K solutions per problem into `out` (OpenAI-compatible and vLLM)."""
    problems = list(read_records(problems_path, ProblemRecord))
    total = RunSummary()
    remote = [g for g in generators if g.backend == "openai"]
    if remote:
        total = asyncio.run(sample_openai(problems, out, failures, remote, retry))
    for generator in (g for g in generators if g.backend == "vllm"):
        from cft_jax.critique.vllm_backend import sample_vllm

        part = sample_vllm(problems, out, generator)
        total.written += part.written
        total.skipped += part.skipped
        total.seconds += part.seconds
    return total
