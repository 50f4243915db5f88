"""The Batch API flow against the local server's /v1/files and /v1/batches endpoints."""

from __future__ import annotations

import json
import signal
import time

from critique_helpers import cli, popen, read_ids, teacher_responder, write_solutions
from openai_server import OpenAIServer, fail_when

from cft_jax.critique.batch import teach_batch
from cft_jax.critique.config import spec_from_dict


def teacher(server: OpenAIServer) -> object:
    obj = {"model": "test-model", "base_url": server.base_url, "api_key_env": None}
    return spec_from_dict(obj, role="teacher", where="test")


def test_batch_submits_polls_collects_and_sends_error_lines_to_failures(tmp_path):
    solutions, out, failures = tmp_path / "s.jsonl", tmp_path / "c.jsonl", tmp_path / "f.jsonl"
    write_solutions(solutions, 10, poison={1, 7})
    poisoned = fail_when(lambda body: "POISON" in body["messages"][-1]["content"], "500")
    state = tmp_path / "state.json"
    with OpenAIServer(teacher_responder, fault=poisoned, batch_seconds=0.2) as server:
        summary = teach_batch(solutions, out, failures, [teacher(server)], state, poll_seconds=0.05)
        assert server.stats.by_path["/v1/files"] == 1 and server.stats.by_path["/v1/batches"] == 1
        assert summary.written == 8 and summary.failed == 2
        failed = [json.loads(line) for line in failures.read_text().splitlines()]
        assert sorted(f["solution_id"] for f in failed) == ["sol-0001", "sol-0007"]
        assert not {f["id"] for f in failed} & set(read_ids(out))
        server.fault = None
        # The rerun resubmits only the two that failed.
        again = teach_batch(solutions, out, failures, [teacher(server)], state, poll_seconds=0.05)
        assert server.stats.by_path["/v1/batches"] == 2
    assert again.written == 2 and again.skipped == 8
    assert len(read_ids(out)) == len(set(read_ids(out))) == 10
    assert [b["collected"] for b in json.loads(state.read_text())["batches"]] == [True, True]


def test_batch_killed_while_polling_resumes_the_same_batch(tmp_path):
    solutions, out = tmp_path / "s.jsonl", tmp_path / "c.jsonl"
    write_solutions(solutions, 6)
    state = tmp_path / "c.jsonl.batch-state.json"
    with OpenAIServer(teacher_responder, batch_seconds=1.5) as server:
        args = [
            "teach",
            "--batch",
            "--solutions",
            str(solutions),
            "--out",
            str(out),
            "--model",
            "test-model",
            "--no-api-key",
            "--base-url",
            server.base_url,
            "--poll-seconds",
            "0.05",
        ]
        proc = popen(args, env={})
        deadline = time.monotonic() + 30
        while not state.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL and read_ids(out) == []
        rerun = cli(args)
        assert rerun.returncode == 0, rerun.stderr
        assert server.stats.by_path["/v1/batches"] == 1  # polled, never resubmitted
    assert len(read_ids(out)) == len(set(read_ids(out))) == 6
