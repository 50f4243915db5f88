"""A sampled solution, whichever backend sampled it: its stable id, its grade, its SolutionRecord.

The id is a hash of the problem id, the generator's name and template, and the sample index, fixed
before any call, so a rerun (OpenAI-compatible or offline vLLM) skips what is already written.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from cft_jax.critique.config import ModelSpec
from cft_jax.critique.records import strip_reasoning
from cft_jax.schema import ProblemRecord, SolutionRecord, stable_id

_GRADER_LOCK = threading.Lock()


def solution_id(problem_id: str, generator: ModelSpec, index: int) -> str:
    return stable_id("solution", problem_id, generator.name, generator.template.sha256, index)


def grade(solution: str, reference: str | None, timeout: float = 5.0) -> tuple[str | None, bool | None]:
    """(extracted answer, is_correct) with the evaluation tool's grader; label None without a reference."""
    from cft_jax.evaluation.grader import extract_answer, is_equivalent

    pred = extract_answer(solution)
    if reference is None:
        return pred, None
    with _GRADER_LOCK:  # one grading pool, fed from several threads
        return pred, bool(is_equivalent(pred, reference, timeout=timeout))


def solution_record(
    problem: ProblemRecord, generator: ModelSpec, index: int, text: str, meta: dict
) -> SolutionRecord:
    """A graded SolutionRecord for `text`, the generator's `index`-th sample for `problem`."""
    if generator.strip_reasoning:
        text = strip_reasoning(text)
    pred, is_correct = grade(text, problem.reference_answer)
    return SolutionRecord(
        id=solution_id(problem.id, generator, index),
        problem_id=problem.id,
        question=problem.question,
        solution=text,
        reference_answer=problem.reference_answer,
        pred=pred,
        is_correct=is_correct,
        provenance={**generator.provenance(), "sample_index": index, **meta},
    )


def pending(problems: list[ProblemRecord], generator: ModelSpec) -> Iterator[tuple[ProblemRecord, int, str]]:
    """(problem, sample index, solution id) of each of the generator's K samples per problem."""
    for problem in problems:
        for index in range(generator.k):
            yield problem, index, solution_id(problem.id, generator, index)
