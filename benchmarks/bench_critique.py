"""Throughput of the critique client and cost of its resume bookkeeping.

1. requests/s sustained by `teach` (client + runner + fsynced appends) against the local test
   server answering instantly, at concurrency 1, 8 and 64; and the same calls through the bare
   `ChatClient` (no records written), to separate the client from the bookkeeping.
2. The resume bookkeeping per record: `done_ids` on a large output, and an fsynced append.

    python benchmarks/bench_critique.py [--requests 2000] [--records 50000]

The server (tests/openai_server.py, the standard library's thread-per-request server) runs in its own
process on the same machine. It is the slower side, so besides the sustained rate the benchmark
reports the client's own CPU time per request: 1 / that is the rate one client core can drive.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cft_jax.critique.client import Accounting, ChatClient, RetryPolicy
from cft_jax.critique.config import spec_from_dict
from cft_jax.critique.teach import teach
from cft_jax.schema import JsonlAppender, SolutionRecord, done_ids

REPO = Path(__file__).resolve().parents[1]

SERVER = """
import sys
from openai_server import OpenAIServer
server = OpenAIServer(lambda messages, body: "The solution is right.\\nConclusion: right [END]").start()
print(server.base_url, flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def server_process():
    """The test server in its own process, so the client's CPU time can be measured apart."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER],
        cwd=REPO / "tests",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc.stdout.readline().strip()
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def write_solutions(path: Path, n: int) -> None:
    with JsonlAppender(path, fsync=False) as w:
        for i in range(n):
            w.write(
                SolutionRecord(
                    id=f"s{i}", problem_id=f"p{i}", question=f"q{i}", solution=f"a{i}", is_correct=True
                )
            )


async def bare_client(base_url: str, concurrency: int, n: int) -> tuple[float, float]:
    """(requests/s, client CPU ms per request) for `n` calls through ChatClient alone."""
    spec = spec_from_dict(
        {"model": "m", "base_url": base_url, "api_key_env": None, "concurrency": concurrency},
        role="teacher",
        where="bench",
    )
    client = ChatClient(spec.endpoint, RetryPolicy(), Accounting())
    messages = spec.template.render("q", "s")
    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client.chat(messages, **spec.params) for _ in range(n)))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    await client.close()
    return n / elapsed, cpu / n * 1e3


def bench_requests(n: int, tmp: Path) -> list[dict]:
    rows = []
    with server_process() as base_url:
        for concurrency in (1, 8, 64):
            count = n if concurrency > 1 else max(200, n // 4)
            solutions, out = tmp / f"s{concurrency}.jsonl", tmp / f"c{concurrency}.jsonl"
            write_solutions(solutions, count)
            spec = spec_from_dict(
                {"model": "m", "base_url": base_url, "api_key_env": None, "concurrency": concurrency},
                role="teacher",
                where="bench",
            )
            cpu = time.process_time()
            summary = asyncio.run(teach(solutions, out, tmp / "f.jsonl", [spec], RetryPolicy()))
            cpu = time.process_time() - cpu
            rate, client_ms = asyncio.run(bare_client(base_url, concurrency, count))
            rows.append(
                {
                    "concurrency": concurrency,
                    "requests": count,
                    "teach_records_per_s": round(summary.written / summary.seconds, 1),
                    "teach_cpu_ms_per_record": round(cpu / count * 1e3, 2),
                    "client_requests_per_s": round(rate, 1),
                    "client_cpu_ms_per_request": round(client_ms, 2),
                }
            )
    return rows


def bench_bookkeeping(n: int, tmp: Path) -> dict:
    record = {"id": "x" * 16, "question": "q" * 200, "solution": "s" * 800, "critique": "c" * 1500}
    path = tmp / "big.jsonl"
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({**record, "id": f"{i:016d}"}) + "\n")
    start = time.perf_counter()
    ids = done_ids(path)
    scan = time.perf_counter() - start
    assert len(ids) == n
    result = {"records": n, "done_ids_us_per_record": round(scan / n * 1e6, 2)}
    for fsync in (True, False):
        writes = 500 if fsync else 5000
        with JsonlAppender(tmp / f"append{fsync}.jsonl", fsync=fsync) as w:
            start = time.perf_counter()
            for i in range(writes):
                w.write({**record, "id": str(i)})
            result[f"append_us_per_record_fsync_{fsync}".lower()] = round(
                (time.perf_counter() - start) / writes * 1e6, 1
            )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--records", type=int, default=50000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps({"requests": bench_requests(args.requests, Path(tmp))}, indent=1))
        print(json.dumps({"bookkeeping": bench_bookkeeping(args.records, Path(tmp))}, indent=1))


if __name__ == "__main__":
    main()
