"""Grading: extract a response's final answer and decide it against the reference, under a time limit.

Every equivalence check runs in a worker process that is killed when it overruns: sympy can spend
minutes (or forever) on one pathological expression, and such an item is scored False, as the
reference toolkits score a timeout. Workers are started with `spawn`, so grading is safe to call
from a process that already runs torch or tokenizer threads.

Public API (the critique tool uses it too):
  extract_answer(text, benchmark=None) -> str
  is_equivalent(pred, reference, *, grader="qwen25-math", timeout=3.0) -> bool
  grade_many(pairs, *, workers, timeout, grader) -> list[bool]
  grade_responses(responses, references, *, benchmark, workers) -> list[bool]
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing as mp
import os
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait

from cft_jax.errors import InputError
from cft_jax.evaluation.answer_extraction import KEEP_UNITS, extract_answer, strip_string
from cft_jax.evaluation.equivalence import GRADERS

__all__ = ["GRADERS", "extract_answer", "grade_many", "grade_responses", "is_equivalent", "normalise_pair"]

# The per-item limit of the CFT / Qwen2.5-Math evaluation scripts.
DEFAULT_TIMEOUT = 3.0


def normalise_pair(pred: str, reference: str, benchmark: str | None = None) -> tuple[str, str]:
    """Both answers as the toolkit compares them (Minerva answers keep their units).

    A reference that normalisation would erase entirely (a unit word such as "east") is compared
    with units kept on both sides instead of matching every empty prediction.
    """
    skip_unit = benchmark in KEEP_UNITS
    ref = strip_string(reference, skip_unit=skip_unit)
    if not ref and reference.strip():
        skip_unit, ref = True, strip_string(reference, skip_unit=True)
    return strip_string(pred, skip_unit=skip_unit), ref


def _check(grader: str, pred: str, reference: str) -> bool:
    try:
        return GRADERS[grader](pred, reference)
    except Exception:  # noqa: BLE001 - an answer the grader cannot handle is not a correct answer
        return False


def _worker(conn: Connection) -> None:
    # Import the parsers before reporting ready, so an item's time limit never pays for imports.
    import latex2sympy2_extended  # noqa: F401
    import math_verify  # noqa: F401
    import sympy  # noqa: F401

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    conn.send("ready")
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        conn.send(_check(*task))


class _Worker:
    def __init__(self, ctx: mp.context.BaseContext):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker, args=(child,), daemon=True)
        self.process.start()
        child.close()
        self.conn.recv()  # "ready"
        self.item: int | None = None
        self.deadline = 0.0

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()


class GradingPool:
    """Worker processes that each check one item at a time and are replaced when they overrun."""

    def __init__(self, workers: int):
        if workers < 1:
            raise InputError(f"workers must be >= 1, got {workers}")
        self._ctx = mp.get_context("spawn")
        self._workers = [_Worker(self._ctx) for _ in range(workers)]

    def run(self, tasks: Sequence[tuple[str, str, str]], timeout: float) -> list[bool]:
        """Verdicts for (grader, pred, reference) tasks; an item past `timeout` seconds is False."""
        results: list[bool] = [False] * len(tasks)
        pending = iter(range(len(tasks)))
        busy: dict[Connection, _Worker] = {}

        def assign(worker: _Worker) -> None:
            item = next(pending, None)
            if item is None:
                return
            worker.item, worker.deadline = item, time.monotonic() + timeout
            worker.conn.send(tasks[item])
            busy[worker.conn] = worker

        for worker in self._workers:
            assign(worker)
        while busy:
            wait_s = max(0.0, min(w.deadline for w in busy.values()) - time.monotonic())
            for conn in wait(list(busy), timeout=wait_s):
                worker = busy.pop(conn)
                results[worker.item] = conn.recv()
                assign(worker)
            now = time.monotonic()
            for conn, worker in list(busy.items()):
                if now >= worker.deadline:
                    # Too slow: the item stays False and a fresh worker takes the slot.
                    del busy[conn]
                    worker.kill()
                    fresh = _Worker(self._ctx)
                    self._workers[self._workers.index(worker)] = fresh
                    assign(fresh)
        return results

    def close(self) -> None:
        for worker in self._workers:
            worker.kill()
        self._workers = []


_pools: dict[int, GradingPool] = {}


def _pool(workers: int) -> GradingPool:
    if workers not in _pools:
        _pools[workers] = GradingPool(workers)
    return _pools[workers]


@atexit.register
def _close_pools() -> None:
    for pool in _pools.values():
        pool.close()
    _pools.clear()


def grade_many(
    pairs: Sequence[tuple[str, str]],
    *,
    workers: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    grader: str = "qwen25-math",
    benchmark: str | None = None,
) -> list[bool]:
    """Verdicts for (extracted prediction, reference answer) pairs, in order.

    `workers` defaults to the CPU count; each item may take at most `timeout` seconds.
    """
    if grader not in GRADERS:
        raise InputError(f"unknown grader {grader!r}; choose one of {sorted(GRADERS)}")
    tasks = [(grader, *normalise_pair(p, r, benchmark)) for p, r in pairs]
    if not tasks:
        return []
    return _pool(workers or os.cpu_count() or 1).run(tasks, timeout)


def grade_responses(
    responses: Sequence[str],
    references: Sequence[str],
    *,
    benchmark: str | None = None,
    workers: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    grader: str = "qwen25-math",
) -> list[bool]:
    """Verdicts for whole model responses: each one's final answer extracted, then checked against its
    reference (what `eval generate` does per record; the trainer's validation calls it)."""
    preds = [extract_answer(text, benchmark) for text in responses]
    pairs = list(zip(preds, references, strict=True))
    return grade_many(pairs, workers=workers, timeout=timeout, grader=grader, benchmark=benchmark)


def is_equivalent(
    pred: str,
    reference: str,
    *,
    grader: str = "qwen25-math",
    timeout: float = DEFAULT_TIMEOUT,
    benchmark: str | None = None,
) -> bool:
    """Whether an extracted prediction equals the reference answer (False past `timeout` seconds)."""
    return grade_many([(pred, reference)], workers=1, timeout=timeout, grader=grader, benchmark=benchmark)[0]
