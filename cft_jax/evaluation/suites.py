"""The math test sets the CFT papers evaluate on, shipped in the package, with each one's ground truth.

`load_benchmark(name)` returns `ProblemRecord`s whose `reference_answer` is the ground truth the
way the Qwen2.5-Math / CFT evaluation toolkits parse it, so a score here is comparable with the
published tables. The data files and their licenses are in `suites/` next to this module. A set is
called a benchmark where users name it (`--benchmarks`, `ResponseRecord.benchmark`).
`load_problems(name_or_path)` also reads a user's own problems file (the trainer's validation set).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from cft_jax.errors import InputError
from cft_jax.evaluation.answer_extraction import KEEP_UNITS, extract_answer, last_boxed, strip_string
from cft_jax.schema import ProblemRecord, from_dict, read_jsonl

DATA_DIR = Path(__file__).with_name("suites")


def _boxed_in_solution(row: dict[str, Any], name: str) -> str:
    return extract_answer(row["solution"], name)


def _after_hashes(row: dict[str, Any], name: str) -> str:
    return row["answer"].split("####")[-1].strip()


def _first_final_answer(row: dict[str, Any], name: str) -> str:
    return row["final_answer"][0].strip("$")


def _answer_field(row: dict[str, Any], name: str) -> str:
    return str(row["answer"])


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """One benchmark: its data file, where its question is, and how its ground truth is parsed."""

    file: str
    question_field: str
    ground_truth: Callable[[dict[str, Any], str], str]
    # Small sets (AIME, AMC) are scored as the mean over several samples per problem.
    small: bool = False


BENCHMARKS: dict[str, Benchmark] = {
    "math": Benchmark("math.jsonl.gz", "problem", _boxed_in_solution),
    "math-500": Benchmark("math-500.jsonl.gz", "problem", _boxed_in_solution),
    "oneshotcft_math-500-validation": Benchmark(
        "oneshotcft_math-500-validation.jsonl.gz", "problem", _boxed_in_solution
    ),
    "minerva_math": Benchmark("minerva_math.jsonl.gz", "problem", _boxed_in_solution),
    "gsm8k": Benchmark("gsm8k.jsonl.gz", "question", _after_hashes),
    "olympiadbench": Benchmark("olympiadbench.jsonl.gz", "question", _first_final_answer),
    "aime24": Benchmark("aime24.jsonl.gz", "problem", _answer_field, small=True),
    "aime25": Benchmark("aime25.jsonl.gz", "problem", _answer_field, small=True),
    "amc23": Benchmark("amc23.jsonl.gz", "problem", _answer_field, small=True),
    "theoremqa": Benchmark("theoremqa.jsonl.gz", "problem", _answer_field),
}

# The six-benchmark average of the CFT paper tables (recipe section 6).
PAPER_SUITE = ("math", "minerva_math", "gsm8k", "olympiadbench", "aime24", "amc23")


def reference_answer(row: dict[str, Any], name: str) -> str:
    """A benchmark row's ground truth, normalised as the toolkit normalises it."""
    answer = BENCHMARKS[name].ground_truth(row, name)
    if name in KEEP_UNITS:
        # The toolkit only unifies comparison operators in answers that keep their units.
        return answer.replace("\\neq", "\\ne").replace("\\leq", "\\le").replace("\\geq", "\\ge")
    normalised = strip_string(answer)
    if normalised:
        return normalised
    # The toolkit's normalisation erases two word answers ("\mbox{Saturday}", "\text{east}", a unit
    # word there); keep the word so the problem stays gradable (the grader does the same).
    raw = last_boxed(row["solution"]) or "" if "solution" in row else answer
    return strip_string(re.sub(r"\\mbox\{(.*?)\}", r"\1", raw), skip_unit=True)


def _question(row: dict[str, Any], field: str, answer: str) -> str:
    question = row[field].strip()
    # As in the toolkit: yes/no and true/false questions say so, so the model answers in kind.
    if answer.lower() in ("true", "false"):
        question += " (True or False)"
    elif answer.lower() in ("yes", "no"):
        question += " (Yes or No)"
    return question


@cache
def _load(name: str) -> tuple[ProblemRecord, ...]:
    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; known benchmarks are {sorted(BENCHMARKS)}")
    spec = BENCHMARKS[name]
    path = DATA_DIR / spec.file
    records = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            row = json.loads(line)
            answer = reference_answer(row, name)
            if not answer:
                raise ValueError(f"{path}:{line_no}: empty ground truth for benchmark {name!r}")
            records.append(
                ProblemRecord(
                    id=f"{name}-{line_no - 1}",
                    question=_question(row, spec.question_field, answer),
                    reference_answer=answer,
                    source=name,
                )
            )
    return tuple(records)


def load_benchmark(name: str) -> list[ProblemRecord]:
    """All problems of a shipped benchmark; ids are `{name}-{row}` and stable across releases."""
    return [dataclasses.replace(r) for r in _load(name)]


def load_problems(name_or_path: str) -> list[ProblemRecord]:
    """A shipped benchmark's problems by name, or those of a JSONL file of `ProblemRecord`s (`id`,
    `question`, `reference_answer`; `source` optional), each with a reference answer."""
    if name_or_path in BENCHMARKS:
        return load_benchmark(name_or_path)
    path = Path(name_or_path)
    if not path.is_file():
        raise InputError(
            f"{name_or_path!r}: neither a shipped benchmark ({', '.join(sorted(BENCHMARKS))}) nor a "
            "problems JSONL file; give one of those names or the path of such a file"
        )
    problems = []
    for line_no, obj in read_jsonl(path):
        problem = from_dict(ProblemRecord, obj, f"{path}:{line_no}")
        if not isinstance(problem.question, str) or not isinstance(problem.reference_answer, str):
            raise InputError(f"{path}:{line_no}: `question` and `reference_answer` must be strings")
        if not problem.reference_answer.strip():
            raise InputError(f"{path}:{line_no}: empty `reference_answer`; every problem needs its answer")
        problems.append(problem)
    if not problems:
        raise InputError(f"{path}: no problems in the file")
    return problems
