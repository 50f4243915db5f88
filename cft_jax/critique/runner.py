"""The resumable job loop shared by `sample` and `teach`: skip done ids, bound concurrency, append.

Every job has a stable id decided before any call is made. Ids already in the output file are
skipped, so a rerun after `kill -9` only pays for what was not yet written. Results are appended by
one writer thread (never two writers at once), one fsynced line per record; the fsync (milliseconds
on a busy disk) happens off the event loop, so requests keep flowing while it waits. A job that
fails for good goes to the failures file with its error; the summary counts it and the CLI turns
the count into a non-zero exit status.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cft_jax.critique.client import RequestFailed
from cft_jax.schema import JsonlAppender, done_ids


@dataclasses.dataclass
class Job:
    """One record to produce: `make()` returns it, or raises RequestFailed."""

    id: str
    make: Callable[[], Awaitable[Any]]
    context: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class RunSummary:
    written: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    usage: dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def failures_path_for(out: str | Path) -> Path:
    """The default failures file next to an output: `x.jsonl` -> `x.failures.jsonl`."""
    out = Path(out)
    return out.with_name(out.name.removesuffix(".jsonl") + ".failures.jsonl")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


async def run_jobs(
    jobs: Iterable[Job],
    out: str | Path,
    failures: str | Path,
    *,
    concurrency: int,
    progress_every: int = 0,
) -> RunSummary:
    """Runs the jobs not yet in `out`, at most `concurrency` at a time; returns the counts."""
    started = time.monotonic()
    summary = RunSummary()
    done = done_ids(out)
    semaphore = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task] = set()
    loop = asyncio.get_running_loop()
    with (
        JsonlAppender(out) as writer,
        JsonlAppender(failures) as failure_log,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="jsonl-writer") as write_thread,
    ):

        async def run_one(job: Job) -> None:
            try:
                record = await job.make()
            except RequestFailed as e:
                failure = {"id": job.id, "error": str(e), "attempts": e.attempts, "time": now()}
                await loop.run_in_executor(write_thread, failure_log.write, {**failure, **job.context})
                summary.failed += 1
            else:
                await loop.run_in_executor(write_thread, writer.write, record)
                summary.written += 1
                if progress_every and summary.written % progress_every == 0:
                    print(f"[critique] {summary.written} written, {summary.failed} failed", file=sys.stderr)
            finally:
                semaphore.release()

        for job in jobs:
            if job.id in done:
                summary.skipped += 1
                continue
            done.add(job.id)  # the same id twice in the input is produced once
            await semaphore.acquire()
            task = asyncio.create_task(run_one(job))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    summary.seconds = round(time.monotonic() - started, 3)
    return summary
