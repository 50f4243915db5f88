"""Reading CFT / SFT training records from every format they are published in.

Every reader turns a record into a `Sample`: the text of the last user turn (`prompt`) and of the
assistant turn that answers it (`target`), the earlier exchanges of a multi-turn conversation
(`history`), the system message the data itself carries, if any, and the question the record is
about (what a validation split holds out). Templates (`templates.py`) render a `Sample`; nothing
here knows about tokens.

Record formats (`fmt`), auto-detected from the first record's keys unless given:

| fmt             | keys                                             | as published by                    |
|-----------------|--------------------------------------------------|------------------------------------|
| `cft`           | `cft_jax.schema.CritiqueRecord` fields           | this project (critique tool)       |
| `solution`      | `cft_jax.schema.SolutionRecord` fields           | this project; SFT baselines        |
| `alpaca`        | `instruction`, `input`, `output`                 | WebInstruct-CFT, MetaMath-CFT, ... |
| `messages`      | `messages`: [system?, user, assistant, ...] (`role`, `content`)| one-shot CFT (ms-swift)|
| `conversations` | the same turns as `from` (system, human, gpt), `value` | ShareGPT                     |

A conversation alternates user and assistant turns after an optional system turn and ends with
an assistant turn; every assistant turn trains unless `train_on="last_assistant"` (templates.py).

Sources: JSONL (`.jsonl`, `.jsonl.gz`), JSON arrays (`.json`), Parquet / Arrow files and
`save_to_disk` directories of Hugging Face `datasets`, TFDS builders (`tfds:NAME[/CONFIG][:SPLIT]`
with `tfds_data_dir`), and ArrayRecord files whose records are JSON objects. JSONL and JSON files may
be `gs://` URIs (read through `etils.epath`).

Bad input raises `RecordError` naming the file, the line (or record number), the field and the
fix; with `skip_bad=True` the record goes to a rejects JSONL file instead and is counted.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from etils import epath

from cft_jax.errors import InputError
from cft_jax.schema import CritiqueRecord, SolutionRecord, stable_id

FORMATS = ("cft", "solution", "alpaca", "messages", "conversations")
OBJECTIVES = ("cft", "sft")

# The WebInstruct-CFT instruction, and how a native record's question and solution fill the
# alpaca `input` (recipe.md section 2). LLaMA-Factory joins instruction and input with "\n".
CFT_INSTRUCTION = "Please critique whether the following solution to the question is correct.\n\n"
CFT_INPUT = "Question:\n{question}\n\nSolution:\n{solution}\n"


def cft_prompt(question: str, solution: str) -> str:
    """The user turn of a CFT example, exactly as WebInstruct-CFT renders it."""
    return CFT_INSTRUCTION + "\n" + CFT_INPUT.format(question=question, solution=solution)


_CFT_QUESTION = re.compile(r"Question:\n(.*?)\n\nSolution:\n", re.DOTALL)


def question_of(user_turn: str) -> str:
    """The question a user turn asks: the `Question:` part of a CFT prompt (so the critiques of every
    solution to one question share it), else the whole turn."""
    found = _CFT_QUESTION.search(user_turn)
    return found.group(1) if found else user_turn


@dataclasses.dataclass(frozen=True)
class Sample:
    """One training conversation before templating: the last user turn and the assistant turn that
    answers it, after the (user, assistant) exchanges of `history` (empty for a single turn)."""

    id: str
    prompt: str
    target: str
    system: str | None = None
    verdict: str | None = None
    is_correct: bool | None = None
    where: str = ""
    target_field: str = "target"
    history: tuple[tuple[str, str], ...] = ()
    question: str | None = None  # what a validation split holds out by; None: the prompt

    @property
    def question_key(self) -> str:
        return self.question if self.question is not None else question_of(self.prompt)


class RecordError(InputError):
    """A bad record: names the file, the line (or record number), the field and the fix."""

    def __init__(self, path: str, line: int, field: str | None, message: str, unit: str = "line"):
        self.path, self.line, self.field, self.unit = path, line, field, unit
        self.where = f"{path}:{line}" if unit == "line" else f"{path}:{unit} {line}"
        what = f"field '{field}': " if field else ""
        super().__init__(f"{self.where}: {what}{message}")


@dataclasses.dataclass
class ReadReport:
    """What happened to every record read: nothing silently vanishes."""

    read: int = 0
    kept: int = 0
    rejected: int = 0
    filtered_incorrect: int = 0
    rejects_path: str | None = None
    formats: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ReadOptions:
    fmt: str = "auto"
    objective: str = "cft"
    sft_only_correct: bool = False
    max_record_chars: int = 1_000_000
    tfds_data_dir: str | None = None


# --------------------------------------------------------------------------------------------
# Raw sources: each yields (line_or_record_number, object_or_error_text, raw_text_for_rejects).


@dataclasses.dataclass
class _Raw:
    number: int
    obj: dict[str, Any] | None
    error: str | None
    raw: str


def _jsonl_lines(path: str) -> Iterator[_Raw]:
    with epath.Path(path).open("rb") as raw, gzip.open(raw) if path.endswith(".gz") else raw as f:
        for number, line in enumerate(f, start=1):
            yield _decode_json(number, line, "JSONL line")


def _decode_json(number: int, data: bytes, what: str) -> _Raw:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = data[max(0, e.start - 10) : e.end + 10]
        return _Raw(
            number, None, f"not UTF-8 (byte {e.start}: {bad!r}); re-encode the file as UTF-8", repr(data)
        )
    if not text.strip():
        return _Raw(number, None, None, text)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return _Raw(number, None, f"invalid JSON ({e.msg} at column {e.colno}); fix the {what}", text)
    if not isinstance(obj, dict):
        return _Raw(number, None, f"expected a JSON object, got {type(obj).__name__}", text)
    return _Raw(number, obj, None, text)


def _json_array(path: str) -> Iterator[_Raw]:
    data = epath.Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise RecordError(
            path, line, None, f"not UTF-8 (byte {e.start}); re-encode the file as UTF-8"
        ) from None
    if not text.strip():
        return
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise RecordError(path, e.lineno, None, f"invalid JSON ({e.msg} at column {e.colno})") from None
    if isinstance(obj, dict):
        # Some exports wrap the list: {"data": [...]} / {"train": [...]}.
        lists = [v for v in obj.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise RecordError(path, 1, None, "expected a JSON array of records (or JSONL: rename to .jsonl)")
        obj = lists[0]
    if not isinstance(obj, list):
        raise RecordError(path, 1, None, f"expected a JSON array of records, got {type(obj).__name__}")
    for number, item in enumerate(obj, start=1):
        if isinstance(item, dict):
            yield _Raw(number, item, None, "")
        else:
            yield _Raw(number, None, f"expected a JSON object, got {type(item).__name__}", json.dumps(item))


def _hf_rows(path: str) -> Iterator[_Raw]:
    import datasets

    p = Path(path)
    if p.is_dir():
        ds = datasets.load_from_disk(str(p))
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise RecordError(path, 0, None, f"a DatasetDict without 'train'; splits are {list(ds)}")
            ds = ds["train"]
    elif p.suffix == ".parquet":
        ds = datasets.Dataset.from_parquet(str(p))
    else:
        ds = datasets.Dataset.from_file(str(p))
    for number, row in enumerate(ds, start=1):
        yield _Raw(number, {k: v for k, v in row.items() if v is not None}, None, "")


def _array_record_rows(path: str) -> Iterator[_Raw]:
    from array_record.python.array_record_data_source import ArrayRecordDataSource

    source = ArrayRecordDataSource([path])
    for i in range(len(source)):
        yield _decode_json(i + 1, source[i], "ArrayRecord record")


def _tfds_rows(spec: str, data_dir: str | None) -> Iterator[_Raw]:
    """`tfds:NAME[:SPLIT]`: a prepared TFDS builder stored as ArrayRecord (no TensorFlow needed)."""
    import tensorflow_datasets as tfds

    name, _, split = spec[len("tfds:") :].partition(":")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise InputError(
            f"{spec}: no prepared TFDS builder {name!r} in {data_dir or 'the default TFDS data directory'}; "
            "build it (`tfds build`) or give its directory with tfds_data_dir (CLI --tfds-data-dir)"
        ) from None
    source = builder.as_data_source(split=split or "train")
    for i in range(len(source)):
        yield _Raw(i + 1, {k: _tfds_value(v) for k, v in source[i].items()}, None, "")


def _tfds_value(value: Any) -> Any:
    # TFDS text features come back as bytes; sequences of dicts as dicts of lists.
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, dict):
        cols = {k: [_tfds_value(x) for x in v] for k, v in value.items()}
        return [dict(zip(cols, row, strict=True)) for row in zip(*cols.values(), strict=True)]
    if hasattr(value, "tolist"):
        return _tfds_value(value.tolist())
    if isinstance(value, list):
        return [_tfds_value(x) for x in value]
    return value


def source_kind(path: str) -> str:
    """How a path is read: jsonl, json, hf, array_record or tfds."""
    if path.startswith("tfds:"):
        return "tfds"
    name = path.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        return "jsonl"
    if name.endswith(".json"):
        return "json"
    if name.endswith((".parquet", ".arrow")) or Path(path).is_dir():
        return "hf"
    if name.endswith(".array_record") or ".array_record-" in name:
        return "array_record"
    raise InputError(
        f"{path}: cannot tell how to read this file; use .jsonl, .json, .parquet, .arrow, "
        "a datasets save_to_disk directory, .array_record, or tfds:NAME"
    )


def _raw_records(path: str, opts: ReadOptions) -> Iterator[_Raw]:
    kind = source_kind(path)
    if kind != "tfds" and not epath.Path(path).exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if kind == "jsonl":
        return _jsonl_lines(path)
    if kind == "json":
        return _json_array(path)
    if kind == "hf":
        return _hf_rows(path)
    if kind == "array_record":
        return _array_record_rows(path)
    return _tfds_rows(path, opts.tfds_data_dir)


# --------------------------------------------------------------------------------------------
# Record -> Sample, per format.


def detect_format(obj: dict[str, Any]) -> str | None:
    """The record format implied by a record's keys, or None if no format matches."""
    if "messages" in obj:
        return "messages"
    if "conversations" in obj:
        return "conversations"
    if "instruction" in obj and "output" in obj:
        return "alpaca"
    if "critique" in obj:
        return "cft"
    if "solution" in obj and "problem_id" in obj:
        return "solution"
    return None


class _Bad(Exception):
    def __init__(self, field: str | None, message: str):
        self.field, self.message = field, message
        super().__init__(message)


def _text(obj: dict[str, Any], field: str, *, required: bool = True, empty_ok: bool = False) -> str | None:
    if field not in obj or obj[field] is None:
        if required:
            raise _Bad(field, "missing; every record needs it")
        return None
    value = obj[field]
    if not isinstance(value, str):
        raise _Bad(field, f"must be a string, got {type(value).__name__} ({str(value)[:40]!r})")
    if not empty_ok and not value.strip():
        raise _Bad(field, "is empty; remove the record or fill the field")
    return value


def _optional_bool(obj: dict[str, Any], field: str) -> bool | None:
    value = obj.get(field)
    if value is not None and not isinstance(value, bool):
        raise _Bad(field, f"must be true, false or null, got {value!r}")
    return value


def _native(cls: type, obj: dict[str, Any]) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(obj) - known)
    if unknown:
        raise _Bad(unknown[0], f"unknown field for {cls.__name__}; put extra data under 'provenance'")
    for name in ("reference_answer", "verdict", "pred"):
        if name in known:
            _text(obj, name, required=False, empty_ok=True)
    if "provenance" in obj and not isinstance(obj["provenance"], dict):
        raise _Bad("provenance", f"must be an object, got {type(obj['provenance']).__name__}")
    _optional_bool(obj, "is_correct")
    return cls(**obj)


def _to_sample(obj: dict[str, Any], fmt: str, opts: ReadOptions, where: str) -> Sample | None:
    """A Sample, or None when the objective filters the record out (sft_only_correct)."""
    if fmt == "cft":
        for name in ("id", "question", "solution", "critique"):
            _text(obj, name)
        rec: CritiqueRecord = _native(CritiqueRecord, obj)
        if rec.verdict is not None and rec.verdict not in ("right", "wrong"):
            raise _Bad("verdict", f"must be 'right', 'wrong' or null, got {rec.verdict!r}")
        if opts.objective == "sft":
            if opts.sft_only_correct and rec.is_correct is not True:
                return None
            return Sample(
                rec.id, rec.question, rec.solution, None, None, rec.is_correct, where, "solution",
                question=rec.question,
            )  # fmt: skip
        prompt = cft_prompt(rec.question, rec.solution)
        return Sample(
            rec.id, prompt, rec.critique, None, rec.verdict, rec.is_correct, where, "critique",
            question=rec.question,
        )  # fmt: skip
    if fmt == "solution":
        for name in ("id", "problem_id", "question", "solution"):
            _text(obj, name)
        sol: SolutionRecord = _native(SolutionRecord, obj)
        if opts.objective == "cft":
            raise _Bad(
                "critique", "SolutionRecords have no critique; use objective 'sft' or critique them first"
            )
        if opts.sft_only_correct and sol.is_correct is not True:
            return None
        return Sample(
            sol.id, sol.question, sol.solution, None, None, sol.is_correct, where, "solution",
            question=sol.question,
        )  # fmt: skip
    if fmt == "alpaca":
        instruction = _text(obj, "instruction")
        query = _text(obj, "input", required=False, empty_ok=True)
        output = _text(obj, "output")
        system = _text(obj, "system", required=False)
        prompt = instruction + "\n" + query if query else instruction
        rid = obj.get("id")
        rid = str(rid) if rid is not None else stable_id(prompt, output)
        return Sample(rid, prompt, output, system, _verdict_of(output), None, where, "output")
    if fmt in _TURNS:
        return _conversation_sample(obj, fmt, where)
    raise InputError(f"unknown record format {fmt!r}; choose one of {FORMATS} or 'auto'")


# A conversational format: (its list's key, the role key, the text key, {its role name: role}).
_TURNS = {
    "messages": (
        "messages", "role", "content", {"system": "system", "user": "user", "assistant": "assistant"}
    ),
    "conversations": (
        "conversations", "from", "value", {"system": "system", "human": "user", "gpt": "assistant"}
    ),
}  # fmt: skip


def _conversation_sample(obj: dict[str, Any], fmt: str, where: str) -> Sample:
    """[system?] then user and assistant turns alternating, ending with an assistant turn."""
    key, role_key, text_key, names = _TURNS[fmt]
    spelled = {role: name for name, role in names.items()}  # errors use the data's own role names
    turns = obj[key]
    if not isinstance(turns, list) or not turns:
        raise _Bad(key, f"must be a non-empty list of {{{role_key}, {text_key}}} objects")
    roles, texts = [], []
    for i, turn in enumerate(turns):
        at = f"{key}[{i}]"
        if not isinstance(turn, dict):
            raise _Bad(at, f"must be an object with '{role_key}' and '{text_key}', got {type(turn).__name__}")
        role = turn.get(role_key)
        if not isinstance(role, str) or role not in names:
            raise _Bad(f"{at}.{role_key}", f"{role!r} is not a role here; use one of {list(names)}")
        roles.append(names[role])
        try:
            texts.append(_text(turn, text_key, empty_ok=roles[-1] == "system"))
        except _Bad as e:
            raise _Bad(f"{at}.{e.field}", e.message) from None
    start = 1 if roles[0] == "system" else 0
    for i in range(start, len(roles)):
        expected = "user" if (i - start) % 2 == 0 else "assistant"
        if roles[i] != expected:
            why = "a system turn may only come first" if roles[i] == "system" else "turns must alternate"
            raise _Bad(
                f"{key}[{i}].{role_key}",
                f"{turns[i][role_key]!r}: expected {spelled[expected]!r} ({why}: "
                f"[{spelled['system']}?, {spelled['user']}, {spelled['assistant']}, {spelled['user']}, ...])",
            )
    if roles[-1] != "assistant":
        raise _Bad(
            f"{key}[{len(turns) - 1}].{role_key}",
            f"the conversation must end with the {spelled['assistant']!r} turn that trains; "
            "drop the unanswered last turn",
        )
    system = texts[0] if start else None
    body = texts[start:]
    pairs = list(zip(body[0::2], body[1::2], strict=True))
    (prompt, target), history = pairs[-1], tuple(pairs[:-1])
    rid = obj.get("id")
    rid = str(rid) if rid is not None else stable_id(system, *body)
    last = f"{key}[{len(turns) - 1}].{text_key}"
    return Sample(
        rid, prompt, target, system, _verdict_of(target), None, where, last, history, question_of(body[0])
    )


def _verdict_of(critique: str) -> str | None:
    from cft_jax.schema import parse_verdict

    return parse_verdict(critique)


# --------------------------------------------------------------------------------------------


class Rejects:
    """The rejects JSONL file of a `skip_bad` run: one line per rejected record, with the reason.

    Created (truncated) by the first reject, appended to by the next ones (`append`: by all of them,
    for a split read after another that filed its rejects there); rejects are rare, so each write
    opens the file, and nothing is left open if reading fails half-way.
    """

    def __init__(self, path: str | os.PathLike | None, *, append: bool = False):
        self.path = None if path is None else Path(path)
        self._started = append

    def write(self, error: RecordError, raw: str) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"where": error.where, "field": error.field, "error": str(error), "raw": raw}
        with open(self.path, "a" if self._started else "w", encoding="utf-8") as f:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._started = True


def read_samples(
    paths: list[str] | tuple[str, ...],
    opts: ReadOptions = ReadOptions(),
    *,
    skip_bad: bool = False,
    rejects: Rejects | None = None,
    report: ReadReport | None = None,
    limit: int | None = None,
) -> list[Sample]:
    """Reads, validates and converts every record of `paths` (in order) into Samples.

    Raises RecordError on the first bad record unless `skip_bad`, in which case it is written to
    `rejects` and counted in `report`. `limit`: only the first `limit` records of each path (a cheap
    look at the head of the files; a JSON array is still parsed whole).
    """
    if opts.objective not in OBJECTIVES:
        raise InputError(f"unknown objective {opts.objective!r}; choose one of {OBJECTIVES}")
    report = report if report is not None else ReadReport()
    rejects = rejects or Rejects(None)
    samples: list[Sample] = []
    for path in paths:
        path = str(path)
        kind = source_kind(path)
        unit = "line" if kind == "jsonl" else "record"
        fmt = None if opts.fmt == "auto" else opts.fmt
        count = 0
        for raw in _raw_records(path, opts):
            if raw.obj is None and raw.error is None:
                continue  # blank JSONL line
            if limit is not None and count >= limit:
                break
            count += 1
            report.read += 1
            try:
                if raw.error is not None:
                    raise RecordError(path, raw.number, None, raw.error, unit)
                sample = _convert(raw, path, unit, fmt, opts)
                if fmt is None:
                    fmt = detect_format(raw.obj)
            except RecordError as e:
                if not skip_bad:
                    raise
                report.rejected += 1
                rejects.write(e, raw.raw or json.dumps(raw.obj, ensure_ascii=False, default=str))
                continue
            if sample is None:
                report.filtered_incorrect += 1
                continue
            samples.append(sample)
            report.kept += 1
        if count == 0:
            raise RecordError(path, 0, None, "no records: the file is empty; remove it from the paths", unit)
        report.formats[path] = fmt or "unknown"
    return samples


def _convert(raw: _Raw, path: str, unit: str, fmt: str | None, opts: ReadOptions) -> Sample | None:
    obj = raw.obj
    size = sum(len(v) for v in obj.values() if isinstance(v, str))
    if size > opts.max_record_chars:
        raise RecordError(
            path,
            raw.number,
            None,
            f"record is {size} characters, over max_record_chars={opts.max_record_chars}; "
            "split or drop it, or raise the limit",
            unit,
        )
    fmt = fmt or detect_format(obj)
    if fmt is None:
        raise RecordError(
            path,
            raw.number,
            None,
            f"cannot detect the record format from keys {sorted(obj)}; expected one of: CritiqueRecord "
            "(id, question, solution, critique), SolutionRecord, alpaca (instruction, input, output), "
            "messages, conversations; or set the format explicitly",
            unit,
        )
    try:
        return _to_sample(obj, fmt, opts, f"{path}:{raw.number}")
    except _Bad as e:
        raise RecordError(path, raw.number, e.field, e.message, unit) from None
    except KeyError as e:
        raise RecordError(
            path, raw.number, str(e.args[0]), f"missing; required by format '{fmt}'", unit
        ) from None
