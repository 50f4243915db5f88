"""Reading the schema's records from JSONL, and text clean-up shared by sample and teach."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from cft_jax.schema import from_dict, read_jsonl

T = TypeVar("T")

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


def read_records(path: str | Path, cls: type[T]) -> Iterator[T]:
    """Records of dataclass `cls` from JSONL; a bad line raises naming the file, line and field."""
    for line_no, obj in read_jsonl(path):
        yield from_dict(cls, obj, where=f"{path}:{line_no}")


def strip_reasoning(text: str) -> str:
    """The text without `<think>...</think>` blocks.

    Some servers start the answer inside the reasoning (the chat template opened `<think>`), so a
    lone `</think>` drops everything before it.
    """
    text = _THINK.sub("", text)
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    return text.strip()
