"""filter: keep the critiques worth training on, and report what each rule removed.

Rules, in order:
1. dedupe: the same (question, solution, critique) text once.
2. require: "verdict" keeps critiques whose verdict agrees with the solution's graded label;
   "answer" keeps critiques whose own final answer matches the reference (the one-shot recipe's
   check, done here with the evaluation grader instead of a judge model). `combine` = "all" needs
   every listed rule, "any" one of them.
3. balance: the majority verdict is cut to at most `balance_ratio` times the minority.
4. trim to `target`: "ends" drops the longest and the shortest critiques in turn (one-shot CFT's
   trim to 600); "longest" keeps the longest (how the 50K set was cut from a larger pool).
The output keeps the input order, and is rewritten whole (filtering is cheap and deterministic).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
from pathlib import Path
from typing import Any

from cft_jax.critique.client import ConfigError
from cft_jax.critique.records import read_records
from cft_jax.schema import CritiqueRecord, JsonlAppender

RULES = ("verdict", "answer")
TRIMS = ("ends", "longest")


@dataclasses.dataclass(frozen=True)
class FilterConfig:
    require: tuple[str, ...] = ("verdict",)
    combine: str = "all"
    dedupe: bool = True
    balance_ratio: float | None = None
    target: int | None = None
    trim: str = "ends"
    seed: int = 0
    grader_timeout: float = 3.0

    def __post_init__(self) -> None:
        bad = [r for r in self.require if r not in RULES]
        if bad:
            raise ConfigError(f"filter: unknown rule(s) {bad} in 'require'; choose from {list(RULES)}")
        if self.combine not in ("all", "any"):
            raise ConfigError(f"filter: 'combine' must be 'all' or 'any', got {self.combine!r}")
        if self.trim not in TRIMS:
            raise ConfigError(f"filter: 'trim' must be one of {list(TRIMS)}, got {self.trim!r}")
        if self.balance_ratio is not None and self.balance_ratio < 1:
            raise ConfigError(
                f"filter: 'balance_ratio' must be >= 1 (majority/minority), got {self.balance_ratio}"
            )

    @classmethod
    def from_dict(cls, obj: dict[str, Any], where: str) -> FilterConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(obj) - fields)
        if unknown:
            raise ConfigError(f"{where}: unknown filter key(s) {unknown}; known keys are {sorted(fields)}")
        obj = {**obj, "require": tuple(obj.get("require", cls.require))}
        return cls(**obj)


def _text_key(r: CritiqueRecord) -> str:
    parts = (" ".join(s.split()) for s in (r.question, r.solution, r.critique))
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def verdict_agrees(r: CritiqueRecord) -> bool:
    """The critique's verdict matches the graded label (False when either is missing)."""
    return r.verdict is not None and r.is_correct is not None and (r.verdict == "right") == r.is_correct


def answers_match(records: list[CritiqueRecord], timeout: float) -> list[bool]:
    """Whether each critique's own final answer is equivalent to the reference."""
    from cft_jax.evaluation.grader import extract_answer, grade_many

    pairs = [(extract_answer(r.critique), r.reference_answer or "") for r in records]
    verdicts = grade_many(pairs, timeout=timeout) if pairs else []
    return [ok and r.reference_answer is not None for ok, r in zip(verdicts, records, strict=True)]


def _balance(records: list[CritiqueRecord], ratio: float, rng: random.Random) -> list[CritiqueRecord]:
    groups = {v: [i for i, r in enumerate(records) if r.verdict == v] for v in ("right", "wrong")}
    small, large = sorted(groups.values(), key=len)
    cap = int(ratio * len(small))
    if len(large) <= cap:
        return records
    drop = set(rng.sample(large, len(large) - cap))
    return [r for i, r in enumerate(records) if i not in drop]


def _trim(records: list[CritiqueRecord], target: int, how: str) -> list[CritiqueRecord]:
    if len(records) <= target:
        return records
    order = sorted(range(len(records)), key=lambda i: (len(records[i].critique), records[i].id))
    if how == "longest":
        keep = set(order[len(order) - target :])
    else:
        lo, hi, longest_next = 0, len(order), True
        while hi - lo > target:
            if longest_next:
                hi -= 1
            else:
                lo += 1
            longest_next = not longest_next
        keep = set(order[lo:hi])
    return [r for i, r in enumerate(records) if i in keep]


def filter_records(records: list[CritiqueRecord], config: FilterConfig) -> tuple[list[CritiqueRecord], dict]:
    """The kept records and a report: how many each rule removed, and the verdict counts kept."""
    report: dict[str, Any] = {"input": len(records), "removed": {}, "failed_rule": {}}
    if config.dedupe:
        seen: set[str] = set()
        unique = []
        for r in records:
            key = _text_key(r)
            if key not in seen:
                seen.add(key)
                unique.append(r)
        report["removed"]["duplicate"] = len(records) - len(unique)
        records = unique
    if config.require:
        checks = {}
        if "verdict" in config.require:
            checks["verdict"] = [verdict_agrees(r) for r in records]
        if "answer" in config.require:
            checks["answer"] = answers_match(records, config.grader_timeout)
        for rule, ok in checks.items():
            report["failed_rule"][rule] = ok.count(False)
        combine = all if config.combine == "all" else any
        kept = [r for i, r in enumerate(records) if combine(ok[i] for ok in checks.values())]
        report["removed"]["require_" + config.combine] = len(records) - len(kept)
        records = kept
    if config.balance_ratio is not None:
        balanced = _balance(records, config.balance_ratio, random.Random(config.seed))
        report["removed"]["balance"] = len(records) - len(balanced)
        records = balanced
    if config.target is not None:
        trimmed = _trim(records, config.target, config.trim)
        report["removed"]["trim_" + config.trim] = len(records) - len(trimmed)
        records = trimmed
    report["kept"] = len(records)
    report["verdicts"] = {v: sum(r.verdict == v for r in records) for v in ("right", "wrong", None)}
    report["verdicts"]["none"] = report["verdicts"].pop(None)
    return records, report


def filter_file(critiques: str | Path, out: str | Path, config: FilterConfig) -> dict[str, Any]:
    """Filters a CritiqueRecord JSONL into `out` (written to a temporary file, then renamed)."""
    records = list(read_records(critiques, CritiqueRecord))
    kept, report = filter_records(records, config)
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.unlink(missing_ok=True)
    with JsonlAppender(tmp, fsync=False) as writer:
        writer.write_all(kept)
    os.replace(tmp, out)
    report["out"] = str(out)
    return report
