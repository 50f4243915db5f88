"""The JSONL contract between the JAX core and the side tools.

Standard library only: the critique tool, the evaluation tool and the data pipeline all import
this module, and the side tools must never pull in JAX or torch through it.

Every record has a stable `id` so each stage can resume (skip ids already written) and dedupe.

| record          | written by              | read by                          |
|-----------------|-------------------------|----------------------------------|
| ProblemRecord   | user / benchmarks       | critique sample                  |
| SolutionRecord  | critique sample         | critique teach                   |
| CritiqueRecord  | critique teach / filter | data pipeline (native CFT schema) |
| ResponseRecord  | eval generate           | eval grade / report              |
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cft_jax.errors import InputError

VERDICTS = ("right", "wrong")


@dataclasses.dataclass
class ProblemRecord:
    id: str
    question: str
    reference_answer: str | None = None
    source: str | None = None


@dataclasses.dataclass
class SolutionRecord:
    """A candidate solution to a problem; `is_correct` is graded against the reference."""

    id: str
    problem_id: str
    question: str
    solution: str
    reference_answer: str | None = None
    pred: str | None = None
    is_correct: bool | None = None
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class CritiqueRecord:
    """The native CFT training record: [question; solution] -> critique.

    `verdict` is the critique's own conclusion ("right" / "wrong"), `is_correct` the solution's
    graded label; a filter keeps critiques whose verdict agrees with the label.
    """

    id: str
    question: str
    solution: str
    critique: str
    verdict: str | None = None
    reference_answer: str | None = None
    is_correct: bool | None = None
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ResponseRecord:
    """One model response to one benchmark problem, graded or not yet."""

    id: str
    benchmark: str
    response: str
    answer: str
    prompt: str | None = None
    pred: str | None = None
    correct: bool | None = None
    sample: int = 0
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)


class JsonlError(InputError):
    """A bad JSONL line; the message names the file, the line and what to fix."""

    def __init__(self, path: str | os.PathLike, line: int, message: str):
        self.path, self.line = str(path), line
        super().__init__(f"{path}:{line}: {message}")


def stable_id(*parts: object) -> str:
    """A short content hash: the same inputs always give the same id."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8"))
    return h.hexdigest()[:16]


_CONCLUSION = re.compile(r"conclusion", re.IGNORECASE)


def parse_verdict(critique: str) -> str | None:
    """The critique's judgement: the text after its last "Conclusion", as the CFT papers parse it.

    "wrong" / "incorrect" -> "wrong"; "right" / "correct" -> "right"; no conclusion -> None.
    """
    matches = list(_CONCLUSION.finditer(critique))
    if not matches:
        return None
    tail = critique[matches[-1].end() :].lower()
    if "wrong" in tail or "incorrect" in tail:
        return "wrong"
    if "right" in tail or "correct" in tail:
        return "right"
    return None


def to_json(record: Any) -> str:
    """One JSONL line (without the newline) for a record dataclass or a plain dict."""
    obj = dataclasses.asdict(record) if dataclasses.is_dataclass(record) else record
    return json.dumps(obj, ensure_ascii=False)


def from_dict(cls: type, obj: dict[str, Any], where: str = "record") -> Any:
    """Builds a record dataclass from a dict, with an error naming the field and the fix."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    required = [
        name
        for name, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [name for name in required if name not in obj]
    if missing:
        raise InputError(
            f"{where}: missing field(s) {missing} for {cls.__name__}; every one needs {required}"
        )
    unknown = sorted(set(obj) - set(fields))
    if unknown:
        raise InputError(
            f"{where}: unknown field(s) {unknown} for {cls.__name__}; "
            f"known fields are {sorted(fields)} (put extra data under 'provenance')"
        )
    return cls(**obj)


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields (line_number, object) for each non-blank line; bad lines raise JsonlError."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise JsonlError(path, line_no, f"not UTF-8 ({e}); re-encode the file") from None
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise JsonlError(path, line_no, f"invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise JsonlError(path, line_no, f"expected a JSON object, got {type(obj).__name__}")
            yield line_no, obj


def done_ids(path: str | os.PathLike) -> set[str]:
    """Ids already written to an append-only JSONL output (empty if the file does not exist).

    A torn last line (the writer was killed mid-write) is ignored here and repaired by
    `JsonlAppender`, so the record is simply produced again.
    """
    ids: set[str] = set()
    p = Path(path)
    if not p.exists():
        return ids
    with open(p, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            try:
                ids.add(json.loads(raw)["id"])
            except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
                continue
    return ids


class JsonlAppender:
    """Append-only JSONL writer, flushed and fsynced per record so `kill -9` loses nothing written.

    On open, a torn final line left by a killed writer is cut off: it was never complete, so its
    record is not in `done_ids` and will be produced again.
    """

    def __init__(self, path: str | os.PathLike, fsync: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._repair_torn_tail()
        # Held open across writes (closed by close() / __exit__), so not a with-block.
        self._f = open(self.path, "ab")  # noqa: SIM115

    def _repair_torn_tail(self) -> None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as f:
            data = f.read()
            if data.endswith(b"\n"):
                return
            f.truncate(data.rfind(b"\n") + 1)

    def write(self, record: Any) -> None:
        self._f.write((to_json(record) + "\n").encode("utf-8"))
        self._f.flush()
        if self._fsync:
            os.fsync(self._f.fileno())

    def write_all(self, records: Iterable[Any]) -> None:
        for r in records:
            self.write(r)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
