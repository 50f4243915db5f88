"""Tokenized examples stored once in ArrayRecord, so large runs do not re-tokenize.

`python -m cft_jax.data prepare` writes `NAME.array_record` and a sidecar `NAME.array_record.json`
holding how it was tokenized (tokenizer, template, objective, seq_len, length policy) and each
example's length. The pipeline refuses a prepared file made under different settings.

One record is a JSON header line (`id`, `where`, `n`) followed by the raw bytes of `input_ids`
([n] int32, little-endian) and `loss_mask` ([n] uint8).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from cft_jax.data.templates import Encoded
from cft_jax.errors import InputError

PREPARED_FORMAT = "cft_jax.prepared.v1"


def _sidecar(path: str | Path) -> Path:
    return Path(f"{path}.json")


def is_prepared(path: str) -> bool:
    """True for an ArrayRecord file written by `write_prepared` (it has the sidecar)."""
    return str(path).endswith(".array_record") and _sidecar(path).exists()


def write_prepared(encoded: list[Encoded], path: str | Path, settings: dict[str, Any]) -> Path:
    """Writes the examples and the sidecar; returns the ArrayRecord path."""
    from array_record.python.array_record_module import ArrayRecordWriter

    path = Path(path)
    if path.suffix != ".array_record":
        raise InputError(f"{path}: a prepared file must end in .array_record")
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = ArrayRecordWriter(str(path), "group_size:1")
    for e in encoded:
        header = json.dumps({"id": e.id, "where": e.where, "n": len(e.input_ids)}).encode("utf-8")
        ids = e.input_ids.astype("<i4").tobytes()
        writer.write(header + b"\n" + ids + e.loss_mask.astype(np.uint8).tobytes())
    writer.close()
    meta = {
        "format": PREPARED_FORMAT,
        "settings": settings,
        "count": len(encoded),
        "lengths": [len(e.input_ids) for e in encoded],
        "target_tokens": int(sum(int(e.loss_mask.sum()) for e in encoded)),
    }
    _sidecar(path).write_text(json.dumps(meta))
    return path


def decode_record(data: bytes) -> dict[str, Any]:
    """{"input_ids": [n] int32, "loss_mask": [n] int32, "id", "where"} from one stored record."""
    cut = data.index(b"\n")
    header = json.loads(data[:cut])
    n = header["n"]
    body = data[cut + 1 :]
    ids = np.frombuffer(body[: 4 * n], dtype="<i4").astype(np.int32)
    mask = np.frombuffer(body[4 * n : 5 * n], dtype=np.uint8).astype(np.int32)
    return {"input_ids": ids, "loss_mask": mask, "id": header["id"], "where": header["where"]}


class PreparedSource:
    """Random access to a prepared file; pickles as its path, so Grain workers reopen it."""

    def __init__(self, path: str, expect: dict[str, Any] | None = None):
        self.path = str(path)
        try:
            self.meta = json.loads(_sidecar(path).read_text())
        except json.JSONDecodeError:
            self.meta = {}  # refused just below, with the fix
        if not isinstance(self.meta, dict) or self.meta.get("format") != PREPARED_FORMAT:
            raise InputError(f"{_sidecar(path)}: not a {PREPARED_FORMAT} sidecar; re-run prepare")
        if expect is not None:
            got = self.meta["settings"]
            diff = {k: (got.get(k), v) for k, v in expect.items() if got.get(k) != v}
            if diff:
                raise InputError(
                    f"{path} was prepared with different settings (prepared, wanted): {diff}; "
                    "re-run `python -m cft_jax.data prepare` with this config or change the config"
                )
        self._source = None

    def _open(self) -> Any:
        if self._source is None:
            from array_record.python.array_record_data_source import ArrayRecordDataSource

            self._source = ArrayRecordDataSource([self.path])
        return self._source

    def __len__(self) -> int:
        return self.meta["count"]

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        rec = decode_record(self._open()[index])
        return {"input_ids": rec["input_ids"], "loss_mask": rec["loss_mask"]}

    def lengths(self) -> list[int]:
        return list(self.meta["lengths"])

    def target_tokens(self) -> int:
        return int(self.meta["target_tokens"])

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "meta": self.meta, "_source": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
