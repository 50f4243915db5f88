"""Packing tokenized examples into fixed-length rows, as a checkpointable Grain transformation.

A row is four int32 arrays of shape [seq_len]:

- `input_ids`: the examples one after another, then padding;
- `loss_mask`: each example's own mask (1 on its target), 0 on padding;
- `segment_ids`: 1, 2, ... n for the n examples of the row, 0 on padding; attention must stay
  within a segment (`segment_ids[q] == segment_ids[k] != 0`), which keeps packing exact;
- `positions`: 0, 1, ... restarting at each segment, so RoPE sees each example from position 0.

Rows are packed first-fit decreasing within a bounded buffer: `buffer_size` examples are read,
sorted longest first, each placed in the first row with room, and the rows emitted in the order
they were opened. The iterator state is (state of the parent at the buffer's start, rows already
emitted from the buffer): restoring re-reads the buffer and skips those rows, so resume is exact.
"""

from __future__ import annotations

import copy
from typing import Any

import grain
import numpy as np

Example = dict[str, np.ndarray]


def first_fit_decreasing(lengths: list[int], seq_len: int) -> list[list[int]]:
    """Bins of example indices, each bin's total length <= seq_len, in the order the bins opened."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = lengths[i]
        if n > seq_len:
            raise ValueError(f"an example of {n} tokens cannot be packed into rows of {seq_len}")
        for b, free in enumerate(room):
            if n <= free:
                bins[b].append(i)
                room[b] -= n
                break
        else:
            bins.append([i])
            room.append(seq_len - n)
    return bins


def make_row(examples: list[Example], seq_len: int, pad_id: int = 0) -> Example:
    """One row of [seq_len] int32 arrays from examples whose total length fits."""
    row = {
        "input_ids": np.full(seq_len, pad_id, np.int32),
        "loss_mask": np.zeros(seq_len, np.int32),
        "segment_ids": np.zeros(seq_len, np.int32),
        "positions": np.zeros(seq_len, np.int32),
    }
    start = 0
    for segment, ex in enumerate(examples, start=1):
        n = len(ex["input_ids"])
        row["input_ids"][start : start + n] = ex["input_ids"]
        row["loss_mask"][start : start + n] = ex["loss_mask"]
        row["segment_ids"][start : start + n] = segment
        row["positions"][start : start + n] = np.arange(n, dtype=np.int32)
        start += n
    return row


def packing_efficiency(lengths: list[int], seq_len: int, buffer_size: int) -> tuple[float, int]:
    """(fraction of row tokens that are real tokens, number of rows) when packing in this order."""
    rows = 0
    for start in range(0, len(lengths), buffer_size):
        rows += len(first_fit_decreasing(lengths[start : start + buffer_size], seq_len))
    return (sum(lengths) / (rows * seq_len) if rows else 0.0), rows


class PackIterDataset(grain.IterDataset):
    """Packs a stream of examples ({"input_ids", "loss_mask"}: [n] int32) into rows (see module doc)."""

    def __init__(self, parent: grain.IterDataset, seq_len: int, buffer_size: int = 256, pad_id: int = 0):
        super().__init__(parent)
        self._seq_len, self._buffer_size, self._pad_id = seq_len, buffer_size, pad_id

    def __iter__(self) -> grain.DatasetIterator:
        return _PackIterator(self._parent.__iter__(), self._seq_len, self._buffer_size, self._pad_id)

    def __str__(self) -> str:
        return f"PackIterDataset(seq_len={self._seq_len}, buffer_size={self._buffer_size})"


class _PackIterator(grain.DatasetIterator):
    def __init__(self, parent: grain.DatasetIterator, seq_len: int, buffer_size: int, pad_id: int):
        super().__init__(parent)
        self._seq_len, self._buffer_size, self._pad_id = seq_len, buffer_size, pad_id
        self._rows: list[Example] = []
        self._emitted = 0
        self._buffer_start: dict[str, Any] = {}

    def _fill(self) -> None:
        self._buffer_start = copy.deepcopy(self._parent.get_state())
        buffer: list[Example] = []
        for ex in self._parent:
            buffer.append(ex)
            if len(buffer) == self._buffer_size:
                break
        bins = first_fit_decreasing([len(ex["input_ids"]) for ex in buffer], self._seq_len)
        self._rows = [make_row([buffer[i] for i in b], self._seq_len, self._pad_id) for b in bins]
        self._emitted = 0

    def __next__(self) -> Example:
        if self._emitted == len(self._rows):
            self._fill()
            if not self._rows:
                raise StopIteration
        row = self._rows[self._emitted]
        self._emitted += 1
        return row

    def get_state(self) -> dict[str, Any]:
        if self._emitted == len(self._rows):
            return {"parent": copy.deepcopy(self._parent.get_state()), "emitted": 0}
        return {"parent": copy.deepcopy(self._buffer_start), "emitted": self._emitted}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self._rows, self._emitted = [], 0
        if state["emitted"]:
            self._fill()
            self._emitted = state["emitted"]


def pad_row(example: Example, seq_len: int, pad_id: int = 0) -> Example:
    """No packing: one example per row, padded to [seq_len]."""
    return make_row([example], seq_len, pad_id)
