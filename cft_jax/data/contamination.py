"""Training questions that overlap evaluation problems, by word n-grams.

A training question is flagged when it shares one word n-gram (default 13, lower-cased words) with a
problem of a test set, as the GPT-3 and Llama contamination studies count it; a question shorter than n
words is flagged when it equals a problem of the same words. This warns, it does not filter: the
user decides (the RealCritic demo data, for instance, is built on MATH and GSM8K test problems).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence

_WORD = re.compile(r"\w+")


@dataclasses.dataclass
class Overlap:
    questions: int
    problems: int
    contaminated_questions: int = 0
    matched_problems: int = 0
    examples: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def contamination_report(
    questions: list[str], problem_sets: Mapping[str, Sequence[str]], n: int = 13
) -> dict[str, Overlap]:
    """Per problem set (its name -> its questions, e.g. a shipped math test set): how many training
    questions share an n-gram with how many of its problems."""
    question_grams = [ngrams(q, n) for q in questions]
    out = {}
    for name, problems in problem_sets.items():
        index: dict[tuple[str, ...], int] = {}
        for i, problem in enumerate(problems):
            for g in ngrams(problem, n):
                index.setdefault(g, i)
        r = Overlap(questions=len(questions), problems=len(problems))
        matched: set[int] = set()
        for q, grams in zip(questions, question_grams, strict=True):
            hits = {index[g] for g in grams if g in index}
            if hits:
                r.contaminated_questions += 1
                matched |= hits
                if len(r.examples) < 5:
                    r.examples.append((q, problems[min(hits)]))
        r.matched_problems = len(matched)
        out[name] = r
    return out
