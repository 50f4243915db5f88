"""kill -9 mid-run then rerun loses and duplicates nothing; keys never leak; no JAX import."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time

from critique_helpers import REPO, cli, popen, read_ids, teacher_responder, write_solutions
from openai_server import OpenAIServer, fail_every, fail_when

SECRET = "sk-test-Zq8VfX3sEcReT-4411aa22bb33cc44"


def test_kill_9_at_a_random_moment_then_rerun_has_every_record_exactly_once(tmp_path):
    solutions, out = tmp_path / "solutions.jsonl", tmp_path / "critiques.jsonl"
    ids = write_solutions(solutions, 150)
    rng = random.Random()
    args = [
        "teach",
        "--solutions",
        str(solutions),
        "--out",
        str(out),
        "--model",
        "test-model",
        "--no-api-key",
    ]
    args += ["--concurrency", "6"]
    with OpenAIServer(teacher_responder, latency=0.01, fault=fail_every(10, "500")) as server:
        for _ in range(2):  # two kills at random moments, then a run to completion
            # A kill may tear the last line; the rerun must cut it off (the final read is strict).
            kill_after = len(read_ids(out, while_writing=True)) + rng.randint(5, 60)  # 150 is never reached
            proc = popen([*args, "--base-url", server.base_url], env={})
            deadline = time.monotonic() + 60
            while (
                len(read_ids(out, while_writing=True)) < kill_after
                and proc.poll() is None
                and time.monotonic() < deadline
            ):
                time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
            assert proc.returncode == -signal.SIGKILL
        final = cli([*args, "--base-url", server.base_url])
    assert final.returncode == 0, final.stderr
    written = read_ids(out)
    assert len(written) == len(set(written)) == 150
    solution_ids = [json.loads(line)["provenance"]["solution_id"] for line in out.read_text().splitlines()]
    assert sorted(solution_ids) == ids


def test_api_key_never_appears_in_outputs_failures_or_logs(tmp_path):
    solutions, out = tmp_path / "solutions.jsonl", tmp_path / "critiques.jsonl"
    write_solutions(solutions, 8, poison={3})
    poisoned = fail_when(lambda body: "POISON" in body["messages"][-1]["content"], "500")
    args = ["teach", "--solutions", str(solutions), "--out", str(out), "--model", "test-model"]
    args += ["--api-key-env", "CFT_TEST_TEACHER_KEY", "--max-attempts", "2", "--progress", "1"]
    logs = []
    with OpenAIServer(teacher_responder, fault=poisoned, api_key=SECRET) as server:
        run = cli([*args, "--base-url", server.base_url], env={"CFT_TEST_TEACHER_KEY": SECRET})
        logs += [run.stdout, run.stderr]
        assert run.returncode == 3 and server.stats.authorization_headers == {f"Bearer {SECRET}"}
    # A wrong key: the server's 401 must not carry it into the failure record either.
    with OpenAIServer(teacher_responder, api_key="another-key") as server:
        wrong = cli(
            [*args, "--base-url", server.base_url, "--out", str(tmp_path / "c2.jsonl")],
            env={"CFT_TEST_TEACHER_KEY": SECRET},
        )
        logs += [wrong.stdout, wrong.stderr]
        assert wrong.returncode == 3
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name.endswith("failures.jsonl") for p in written)
    for p in written:
        assert SECRET not in p.read_text(encoding="utf-8"), p
        assert SECRET[-8:] not in p.read_text(encoding="utf-8"), p
    for text in logs:
        assert SECRET not in text and SECRET[-8:] not in text


def test_missing_key_variable_is_named_in_the_error(tmp_path):
    solutions = tmp_path / "solutions.jsonl"
    write_solutions(solutions, 1)
    run = cli(
        [
            "teach",
            "--solutions",
            str(solutions),
            "--out",
            str(tmp_path / "c.jsonl"),
            "--model",
            "m",
            "--api-key-env",
            "CFT_TEST_UNSET_KEY",
        ],
        env={"CFT_TEST_UNSET_KEY": ""},
    )
    assert run.returncode == 2
    assert "CFT_TEST_UNSET_KEY is not set" in run.stderr


def test_the_side_tool_never_imports_jax():
    modules = [
        "__main__",
        "client",
        "config",
        "prompts",
        "records",
        "runner",
        "sample",
        "teach",
        "filter",
        "build",
        "batch",
    ]
    code = "import sys\n" + "".join(f"import cft_jax.critique.{m}\n" for m in modules)
    code += "bad = [m for m in sys.modules if m == 'jax' or m.startswith(('jax.', 'flax', 'torch'))]\n"
    code += "assert not bad, bad\n"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)
