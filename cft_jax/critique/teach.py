"""teach: one critique per (solution, teacher) through an OpenAI-compatible endpoint.

A critique's id is a hash of the solution id, the teacher's name and the prompt template's hash, so
a rerun skips critiques already paid for, and a new template or teacher produces new ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from pathlib import Path

from cft_jax.critique.client import Accounting, ChatClient, RetryPolicy
from cft_jax.critique.config import ModelSpec
from cft_jax.critique.records import read_records, strip_reasoning
from cft_jax.critique.runner import Job, RunSummary, now, run_jobs
from cft_jax.schema import CritiqueRecord, SolutionRecord, parse_verdict, stable_id


def critique_id(solution_id: str, teacher: ModelSpec) -> str:
    return stable_id("critique", solution_id, teacher.name, teacher.template.sha256)


def critique_record(solution: SolutionRecord, teacher: ModelSpec, text: str, meta: dict) -> CritiqueRecord:
    """The native CFT record for `text`, the teacher's answer about `solution`."""
    if teacher.strip_reasoning:
        text = strip_reasoning(text)
    return CritiqueRecord(
        id=critique_id(solution.id, teacher),
        question=solution.question,
        solution=solution.solution,
        critique=text,
        verdict=parse_verdict(text),
        reference_answer=solution.reference_answer,
        is_correct=solution.is_correct,
        provenance={
            "solution_id": solution.id,
            "problem_id": solution.problem_id,
            "generator": solution.provenance,
            "teacher": teacher.provenance(),
            **meta,
        },
    )


def teach_jobs(
    solutions: Iterable[SolutionRecord], teachers: list[tuple[ModelSpec, ChatClient]]
) -> Iterator[Job]:
    """One job per (solution, teacher), teachers interleaved so they all work at once."""
    for solution in solutions:
        for teacher, client in teachers:

            async def make(
                solution: SolutionRecord = solution, teacher: ModelSpec = teacher, client: ChatClient = client
            ) -> CritiqueRecord:
                requested_at = now()
                messages = teacher.template.render(solution.question, solution.solution)
                completion = await client.chat(messages, **teacher.params)
                meta = {
                    "requested_at": requested_at,
                    "finished_at": now(),
                    "usage": completion.usage,
                    "attempts": completion.attempts,
                }
                return critique_record(solution, teacher, completion.texts[0], meta)

            context = {"solution_id": solution.id, "teacher": teacher.name}
            yield Job(critique_id(solution.id, teacher), make, context)


async def teach(
    solutions: str | Path,
    out: str | Path,
    failures: str | Path,
    teachers: list[ModelSpec],
    retry: RetryPolicy,
    *,
    progress_every: int = 0,
) -> RunSummary:
    """Critiques every solution in `solutions` with every teacher, appending to `out`."""
    accounting = Accounting()
    clients = [(t, ChatClient(t.endpoint, retry, accounting)) for t in teachers]
    try:
        summary = await run_jobs(
            teach_jobs(read_records(solutions, SolutionRecord), clients),
            out,
            failures,
            concurrency=sum(t.endpoint.concurrency for t in teachers),
            progress_every=progress_every,
        )
    finally:
        await asyncio.gather(*(c.close() for _, c in clients))
    summary.usage = accounting.summary()
    return summary
