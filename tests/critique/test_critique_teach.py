"""teach against a real HTTP server on 127.0.0.1 with injected faults: every record exactly once."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter

import pytest
from critique_helpers import cli, read_ids, teacher_responder, write_solutions
from openai_server import OpenAIServer, fail_first, fail_when

from cft_jax.critique.client import RetryPolicy
from cft_jax.critique.config import spec_from_dict
from cft_jax.critique.teach import teach

FAST_RETRY = RetryPolicy(max_attempts=8, base_delay=0.01, max_delay=0.2)


def teacher(server: OpenAIServer, **overrides) -> object:
    obj = {"model": "test-model", "base_url": server.base_url, "api_key_env": None, "concurrency": 4}
    return spec_from_dict({**obj, **overrides}, role="teacher", where="test")


def faults_on_early_attempts() -> object:
    """Record i's first attempt fails with kind i % 6 (or succeeds), its second with 429 when i % 4 == 0.

    Faults are tied to each record's attempt count, not to request order, so every record is
    guaranteed to succeed within three attempts whatever the interleaving.
    """
    kinds = ["429", "500", "malformed", "drop", "slow", None]
    attempts: Counter = Counter()
    lock = threading.Lock()

    def fault(number: int, body: dict) -> str | None:
        content = body["messages"][-1]["content"]
        i = int(content.split("What is ", 1)[1].split(" ", 1)[0])
        with lock:
            attempts[content] += 1
            attempt = attempts[content]
        if attempt == 1:
            return kinds[i % 6]
        return "429" if attempt == 2 and i % 4 == 0 else None

    return fault


def test_every_record_written_once_through_every_kind_of_fault(tmp_path):
    solutions, out = tmp_path / "solutions.jsonl", tmp_path / "critiques.jsonl"
    ids = write_solutions(solutions, 30)
    with OpenAIServer(teacher_responder, fault=faults_on_early_attempts(), slow_seconds=1.0) as server:
        spec = teacher(server, timeout=0.4)
        summary = asyncio.run(teach(solutions, out, tmp_path / "f.jsonl", [spec], FAST_RETRY))
        assert set(server.stats.faults) == {"429", "500", "malformed", "drop", "slow"}
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["provenance"]["solution_id"] for r in records) == ids
    assert len({r["id"] for r in records}) == 30
    assert summary.failed == 0 and summary.written == 30
    assert summary.usage["test-model"]["retries"] >= 5
    for r in records:
        assert r["verdict"] == ("right" if r["is_correct"] else "wrong")


def test_concurrency_limit_is_never_exceeded(tmp_path):
    solutions, out = tmp_path / "solutions.jsonl", tmp_path / "critiques.jsonl"
    write_solutions(solutions, 60)
    fault = lambda n, body: "429" if n % 7 == 0 else ("500" if n % 11 == 0 else None)  # noqa: E731
    with OpenAIServer(teacher_responder, fault=fault, latency=0.05) as server:
        summary = asyncio.run(
            teach(solutions, out, tmp_path / "f.jsonl", [teacher(server, concurrency=5)], FAST_RETRY)
        )
        assert server.stats.max_in_flight == 5  # reached, and never more
    assert summary.written == 60


def test_retry_after_is_honoured(tmp_path):
    solutions = tmp_path / "solutions.jsonl"
    write_solutions(solutions, 1)
    retry = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=5)
    with OpenAIServer(teacher_responder, fault=fail_first(1, "429"), retry_after=0.4) as server:
        start = time.monotonic()
        summary = asyncio.run(
            teach(solutions, tmp_path / "c.jsonl", tmp_path / "f.jsonl", [teacher(server)], retry)
        )
        assert time.monotonic() - start >= 0.4
    assert summary.written == 1 and summary.usage["test-model"]["retries"] == 1


def test_rerun_skips_records_already_written(tmp_path):
    solutions, out = tmp_path / "solutions.jsonl", tmp_path / "critiques.jsonl"
    write_solutions(solutions, 10)
    with OpenAIServer(teacher_responder) as server:
        asyncio.run(teach(solutions, out, tmp_path / "f.jsonl", [teacher(server)], FAST_RETRY))
        first = server.stats.completion_requests
        again = asyncio.run(teach(solutions, out, tmp_path / "f.jsonl", [teacher(server)], FAST_RETRY))
        assert server.stats.completion_requests == first
    assert again.skipped == 10 and again.written == 0
    assert len(read_ids(out)) == 10


def test_several_teachers_give_one_critique_each(tmp_path):
    solutions, out = tmp_path / "solutions.jsonl", tmp_path / "critiques.jsonl"
    write_solutions(solutions, 5)
    with OpenAIServer(teacher_responder, models=("a", "b")) as server:
        specs = [teacher(server, model="a"), teacher(server, model="b", temperature=0.7)]
        summary = asyncio.run(teach(solutions, out, tmp_path / "f.jsonl", specs, FAST_RETRY))
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary.written == 10 and len({r["id"] for r in records}) == 10
    by_teacher = {r["provenance"]["teacher"]["name"] for r in records}
    assert by_teacher == {"a", "b"}
    prov = records[0]["provenance"]
    assert {"requested_at", "finished_at", "usage", "solution_id", "generator"} <= set(prov)
    assert set(prov["teacher"]) >= {"params", "prompt_sha256", "model"}


def test_record_failing_past_the_budget_goes_to_failures_then_rerun_recovers(tmp_path):
    solutions, out = tmp_path / "solutions.jsonl", tmp_path / "critiques.jsonl"
    failures = tmp_path / "critiques.failures.jsonl"
    ids = write_solutions(solutions, 6, poison={2, 4})
    poisoned = fail_when(lambda body: "POISON" in body["messages"][-1]["content"], "500")
    common = ["teach", "--solutions", str(solutions), "--out", str(out), "--model", "test-model"]
    common += ["--no-api-key", "--max-attempts", "2"]
    with OpenAIServer(teacher_responder, fault=poisoned) as server:
        run = cli([*common, "--base-url", server.base_url])
    assert run.returncode == 3, run.stderr
    assert json.loads(run.stdout)["failed"] == 2
    assert "2 record(s) failed" in run.stderr
    failed = [json.loads(line) for line in failures.read_text().splitlines()]
    assert sorted(f["solution_id"] for f in failed) == ["sol-0002", "sol-0004"]
    assert all("InternalServerError" in f["error"] and f["attempts"] == 2 for f in failed)
    assert len(read_ids(out)) == 4
    with OpenAIServer(teacher_responder) as server:
        rerun = cli([*common, "--base-url", server.base_url])
        assert server.stats.completion_requests == 2
    assert rerun.returncode == 0, rerun.stderr
    assert len(read_ids(out)) == len(set(read_ids(out))) == len(ids)


def test_bad_request_is_not_retried(tmp_path):
    solutions = tmp_path / "solutions.jsonl"
    write_solutions(solutions, 1)
    with OpenAIServer(teacher_responder, api_key="the-right-key") as server:
        spec = teacher(server, api_key_env="CFT_TEST_WRONG_KEY")
        import os

        os.environ["CFT_TEST_WRONG_KEY"] = "not-the-key"
        try:
            summary = asyncio.run(
                teach(solutions, tmp_path / "c.jsonl", tmp_path / "f.jsonl", [spec], FAST_RETRY)
            )
        finally:
            del os.environ["CFT_TEST_WRONG_KEY"]
        assert server.stats.completion_requests == 0 and server.stats.by_path["/v1/chat/completions"] == 1
    assert summary.failed == 1


@pytest.mark.parametrize("bad", ['{"id": "x"}\n', "not json\n"])
def test_bad_input_line_names_file_and_line(tmp_path, bad):
    solutions = tmp_path / "solutions.jsonl"
    write_solutions(solutions, 2)
    with open(solutions, "a") as f:
        f.write(bad)
    run = cli(
        [
            "teach",
            "--solutions",
            str(solutions),
            "--out",
            str(tmp_path / "c.jsonl"),
            "--model",
            "m",
            "--no-api-key",
            "--base-url",
            "http://127.0.0.1:9/v1",
        ]
    )
    assert run.returncode == 2
    assert f"{solutions}:3" in run.stderr
