"""Safetensors files: reading one (memory-mapped, bfloat16 included) and writing a sharded HF set of them.

Files are read through their documented header plus `numpy.memmap` rather than
`safetensors.safe_open(framework="numpy")`, because the latter cannot return bfloat16 tensors, the dtype
most HF checkpoints are stored in. Writing uses `safetensors.numpy.save_file`, through `etils.epath`:
the output directory may be a `gs://` URI (each shard is written to a local temporary file, then streamed
up). An HF directory holds one `model.safetensors`, or shards listed in `model.safetensors.index.json`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
from etils import epath
from safetensors.numpy import save_file

from cft_jax.errors import InputError
from cft_jax.remote import is_remote, pathlib_if_local

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class CheckpointError(InputError):
    """An HF checkpoint that cannot be read into the decoder; the message names the file and tensor."""


# Safetensors dtype names -> numpy dtypes (bfloat16 and float8 via ml_dtypes).
_ST_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn,
    "F8_E5M2": ml_dtypes.float8_e5m2,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


class SafetensorsFile:
    """One safetensors file, header parsed and validated, tensors memory-mapped on demand."""

    def __init__(self, path: Path):
        self.path = path
        size = path.stat().st_size
        with path.open("rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, no header)")
            (header_len,) = struct.unpack("<Q", raw)
            if 8 + header_len > size:
                raise CheckpointError(f"{path}: truncated safetensors file (header of {header_len} bytes)")
            try:
                header = json.loads(f.read(header_len))
            except json.JSONDecodeError as e:
                raise CheckpointError(f"{path}: corrupt safetensors header: {e}") from None
        header.pop("__metadata__", None)
        self.data_start = 8 + header_len
        self.entries: dict[str, dict[str, Any]] = header
        for name, entry in header.items():
            begin, end = entry["data_offsets"]
            if self.data_start + end > size:
                raise CheckpointError(
                    f"{path}: truncated safetensors file: tensor {name!r} ends at byte "
                    f"{self.data_start + end} but the file has {size} bytes; re-download or re-export it"
                )
            if entry["dtype"] not in _ST_DTYPES:
                raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {entry['dtype']}")

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.entries[name]["shape"])

    def tensor(self, name: str) -> np.ndarray:
        """The tensor as a read-only memmap: slicing it reads only the pages the slice touches."""
        entry = self.entries[name]
        dtype = np.dtype(_ST_DTYPES[entry["dtype"]])
        shape = tuple(entry["shape"])
        if math.prod(shape) == 0:
            return np.zeros(shape, dtype)
        offset = self.data_start + entry["data_offsets"][0]
        return np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=shape)


def parse_size(size: str | int) -> int:
    """'5GB' -> 5 * 10**9 bytes, '2GiB' -> 2 * 2**30 (transformers' convention)."""
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", size, re.IGNORECASE)
    if not m:
        raise InputError(f"max_shard_size={size!r}: use a byte count or e.g. '500MB', '5GB', '2GiB'")
    unit = (m.group(2) or "B").upper()
    scale = 1 if unit == "B" else (1024 if "I" in unit else 1000) ** ("KMGT".index(unit[0]) + 1)
    return int(float(m.group(1)) * scale)


@dataclasses.dataclass(frozen=True)
class PlannedTensor:
    """One tensor of an HF checkpoint to write: its name, shape, dtype, and how to produce it."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    produce: Callable[[], np.ndarray]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _save_shard(arrays: dict[str, np.ndarray], target: epath.Path) -> None:
    """One safetensors file; a remote target gets it through a local temporary file (safetensors
    writes to a filename), copied up in blocks so the shard is never held twice in memory."""
    metadata = {"format": "pt"}
    if not is_remote(target):
        save_file(arrays, target, metadata=metadata)
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / target.name
        save_file(arrays, local, metadata=metadata)
        with local.open("rb") as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 24)


def write_safetensors(
    tensors: list[PlannedTensor],
    out_dir: str | Path | epath.Path,
    max_shard_size: str | int,
    *,
    write: bool = True,
) -> list[Path | epath.Path]:
    """Writes tensors as HF safetensors shards of at most `max_shard_size` bytes each (a single tensor
    larger than that gets a shard of its own), plus `model.safetensors.index.json` when there are several.

    Tensors are produced and held one shard at a time, so host memory stays about one shard.
    `write=False` produces every tensor in the same order (and checks its shape) but drops it and writes
    nothing: the part of a multi-process export whose producers are collectives on every process.
    Returns the shard paths either way.
    """
    out_dir = epath.Path(out_dir)
    if write:
        out_dir.mkdir(parents=True, exist_ok=True)
    limit = parse_size(max_shard_size)
    shards: list[list[PlannedTensor]] = [[]]
    for tensor in tensors:
        if shards[-1] and sum(t.nbytes for t in shards[-1]) + tensor.nbytes > limit:
            shards.append([])
        shards[-1].append(tensor)
    n = len(shards)
    files = [SINGLE_FILE] if n == 1 else [f"model-{k + 1:05d}-of-{n:05d}.safetensors" for k in range(n)]
    weight_map = {}
    for shard, file in zip(shards, files, strict=True):
        arrays = {}
        for t in shard:
            array = np.asarray(t.produce())
            if array.shape != t.shape:
                raise CheckpointError(f"tensor {t.name!r}: produced shape {array.shape}, planned {t.shape}")
            if write:
                arrays[t.name] = np.ascontiguousarray(array, dtype=t.dtype)
            del array
            weight_map[t.name] = file
        if write:
            _save_shard(arrays, out_dir / file)
        del arrays
    if write and n > 1:
        index = {"metadata": {"total_size": sum(t.nbytes for t in tensors)}, "weight_map": weight_map}
        (out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return [pathlib_if_local(out_dir / f) for f in files]
