"""The demo's CFT dataset: the shipped RealCritic critiques split by question into train / validation / test.

Each question goes to exactly one split, so no test critique shares a question with a training one.
Questions are ordered by a content hash (`cft_jax.data.splits.split_by_key`, which `data.val_fraction`
splits with too), which makes the split deterministic and independent of file order; the first
`test_fraction` of them are the test split, the next `validation_fraction` the validation split, the
rest train.

The critique file labels only its "onwrong" half (`is_correct=False`); its "halfhalf" half is
unlabelled there, but those are exactly RealCritic's `mix_math` solutions, which the shipped
`realcritic_solutions` file labels. Copying those labels onto the critique records gives test
solutions of both classes, without which verdict accuracy would reward a model that always says
"wrong".

The training target is each critique's judgement: its "## Conclusion of Critique" section (the
verdict and the first wrong step), the teacher's own words. Whole critiques run 400-1,300 tokens and
put that section after the step-by-step review, so on two CPU cores a few minutes of training on
whole critiques never reaches a verdict; the full-length recipe is what `configs/qwen7b_v5p.py`
trains. The 9 critiques without such a section are left out and counted.

The verdict measurement judges other solutions (`verdict_solutions`): GSM8K model solutions,
labelled by GSM8K's answers, whose problems no training critique has (those are all MATH problems).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
from collections.abc import Callable
from pathlib import Path

from cft_jax.data import asset_path
from cft_jax.data.splits import split_by_key
from cft_jax.schema import CritiqueRecord, SolutionRecord, from_dict, stable_id, to_json

SPLITS = ("train", "validation", "test")
_CONCLUSION = re.compile(r"^#+\s*Conclusion of (?:the )?Critique\s*$", re.MULTILINE | re.IGNORECASE)
_NEXT_SECTION = re.compile(r"^#+ ", re.MULTILINE)


def judgement(critique: str) -> str | None:
    """The critique's "## Conclusion of Critique" section, heading included, or None if it has none."""
    found = _CONCLUSION.search(critique)
    if found is None:
        return None
    rest = critique[found.end() :]
    after = _NEXT_SECTION.search(rest)
    body = (rest[: after.start()] if after else rest).strip()
    return f"## Conclusion of Critique\n{body}" if body else None


@dataclasses.dataclass(frozen=True)
class SplitReport:
    """Questions and critique records per split (the files are `<dir>/<split>.jsonl`)."""

    questions: dict[str, int]
    records: dict[str, int]
    labelled_from_solutions: int
    without_judgement: int


def _read_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_critiques() -> list[CritiqueRecord]:
    """The shipped critiques, with `is_correct` filled in from the labelled solution file where it matches."""
    labels = {
        (s["question"], s["solution"].strip()): s["is_correct"]
        for s in _read_gz(asset_path("realcritic_solutions"))
    }
    records = []
    for line, obj in enumerate(_read_gz(asset_path("realcritic_critiques")), start=1):
        record = from_dict(CritiqueRecord, obj, where=f"realcritic_critiques:{line}")
        if record.is_correct is None:
            record.is_correct = labels.get((record.question, record.solution.strip()))
        records.append(record)
    return records


def judgement_records(records: list[CritiqueRecord]) -> list[CritiqueRecord]:
    """The records whose critique has a judgement section, with the critique cut down to it."""
    out = []
    for record in records:
        target = judgement(record.critique)
        if target is not None:
            provenance = {**record.provenance, "demo_target": "the critique's Conclusion of Critique section"}
            out.append(dataclasses.replace(record, critique=target, provenance=provenance))
    return out


def split_by_question(
    records: list[CritiqueRecord], *, validation_fraction: float, test_fraction: float
) -> dict[str, list[CritiqueRecord]]:
    """{split: records}; every question's records land in one split."""
    split_of = split_by_key(
        (r.question for r in records),
        {"test": test_fraction, "validation": validation_fraction},
        rest="train",
        salt="demo-split",
    )
    out: dict[str, list[CritiqueRecord]] = {name: [] for name in SPLITS}
    for record in records:
        out[split_of[record.question]].append(record)
    return out


def write_splits(
    out_dir: Path, *, validation_fraction: float = 0.1, test_fraction: float = 0.1
) -> SplitReport:
    """Writes `train.jsonl`, `validation.jsonl`, `test.jsonl` (native CritiqueRecords) under `out_dir`."""
    all_records = load_critiques()
    records = judgement_records(all_records)
    splits = split_by_question(records, validation_fraction=validation_fraction, test_fraction=test_fraction)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, split in splits.items():
        tmp = out_dir / f"{name}.jsonl.tmp"
        tmp.write_text("".join(to_json(r) + "\n" for r in split), encoding="utf-8")
        tmp.rename(out_dir / f"{name}.jsonl")
    shipped_labels = {
        r["id"] for r in _read_gz(asset_path("realcritic_critiques")) if r["is_correct"] is not None
    }
    return SplitReport(
        questions={name: len({r.question for r in split}) for name, split in splits.items()},
        records={name: len(split) for name, split in splits.items()},
        labelled_from_solutions=sum(r.is_correct is not None and r.id not in shipped_labels for r in records),
        without_judgement=len(all_records) - len(records),
    )


def split_paths(data_dir: Path) -> dict[str, Path]:
    return {name: data_dir / f"{name}.jsonl" for name in SPLITS}


def verdict_solutions(count: int, fits: Callable[[SolutionRecord], bool]) -> list[SolutionRecord]:
    """`count` labelled solutions to judge (rounded down to even), half correct and half wrong: the
    labelled test critiques hold only 2 correct solutions that fit a training row, too few to measure.

    The shipped GSM8K model solutions: one per question, those whose critique prompt `fits`, in
    content-hash order (stable, independent of the file's order), alternating correct / wrong.
    Held out by construction: every training critique is of a MATH problem.
    """
    half = count // 2
    seen: set[str] = set()
    right: list[SolutionRecord] = []
    wrong: list[SolutionRecord] = []
    rows = _read_gz(asset_path("gsm8k_model_solutions"))
    for line, obj in sorted(enumerate(rows, start=1), key=lambda r: stable_id("demo-verdicts", r[1]["id"])):
        record = from_dict(SolutionRecord, obj, where=f"gsm8k_model_solutions:{line}")
        pool = right if record.is_correct else wrong
        if record.question in seen or record.is_correct is None or len(pool) == half or not fits(record):
            continue
        seen.add(record.question)
        pool.append(record)
    if min(len(right), len(wrong)) < half:
        raise ValueError(
            f"{count} verdicts: only {len(right)} correct and {len(wrong)} wrong solutions fit; ask for fewer"
        )
    return [r for pair in zip(right, wrong, strict=True) for r in pair]
