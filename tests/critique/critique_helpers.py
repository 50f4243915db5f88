"""Shared helpers for the critique tests: solution files, a teacher-like responder, running the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def write_solutions(path: Path, n: int, poison: set[int] = frozenset()) -> list[str]:
    """`n` SolutionRecords (odd ones wrong); those in `poison` carry POISON so a fault can target them."""
    ids = []
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            sid = f"sol-{i:04d}"
            ids.append(sid)
            marker = " POISON" if i in poison else ""
            record = {
                "id": sid,
                "problem_id": f"p{i % 3}",
                "question": f"What is {i} + {i}?",
                "solution": f"{i} + {i} = {2 * i + (i % 2)}. The answer is {2 * i + (i % 2)}.{marker}",
                "reference_answer": str(2 * i),
                "pred": str(2 * i + (i % 2)),
                "is_correct": i % 2 == 0,
            }
            f.write(json.dumps(record) + "\n")
    return ids


def teacher_responder(messages: list[dict], body: dict) -> str:
    """Judges the arithmetic in the solution the way a teacher would, ending with the verdict."""
    user = messages[-1]["content"]
    question = user.split("Question: ", 1)[1].split("\n", 1)[0]
    a = int(question.split(" ")[2])
    claimed = int(user.rsplit("The answer is ", 1)[1].split(".", 1)[0])
    verdict = "right" if claimed == 2 * a else "wrong"
    return f"The student computed {claimed}; the sum is {2 * a}.\nConclusion: {verdict} [END]"


def read_ids(path: Path, *, while_writing: bool = False) -> list[str]:
    """Ids of a JSONL output; every line must be complete unless the writer may be mid-line.

    `while_writing=True` is for polling a live (or just killed) writer: its last line may be torn
    (not yet ended by a newline), and the writer's contract is that such a line does not count.
    """
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    assert while_writing or not tail, f"{path} ends with a torn line: {tail[:80]!r}"
    return [json.loads(line)["id"] for line in lines if line.strip()]


def cli(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """`python -m cft_jax.critique ...` in a real subprocess."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "cft_jax.critique", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=REPO,
    )


def popen(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.Popen(
        [sys.executable, "-m", "cft_jax.critique", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=full_env,
        cwd=REPO,
    )
