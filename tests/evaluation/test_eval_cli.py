"""The evaluation commands end to end: generate (OpenAI endpoint), resume, grade, report, select.
vLLM and the transformers backend on the real SmolLM2 export, side by side: tests/vllm_cpu/."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import openai
import pytest

from cft_jax.evaluation.backends import OpenAIBackend, Sampling
from cft_jax.evaluation.cli import GradeOptions, generate, main
from cft_jax.evaluation.suites import load_benchmark
from cft_jax.schema import read_jsonl
from tests.openai_server import OpenAIServer

GSM8K = {p.question: p.reference_answer for p in load_benchmark("gsm8k")[:6]}


def answer_key(messages: list[dict], body: dict) -> str:
    """A model that knows the GSM8K answers, except that it gets question 1 wrong."""
    question = next(q for q in GSM8K if q in messages[-1]["content"])
    answer = GSM8K[question] if question != list(GSM8K)[1] else "-1"
    return f"Let me think. The answer is $\\boxed{{{answer}}}$.<|im_end|> trailing text"


def test_openai_backend_generates_grades_and_summarises(tmp_path: Path):
    with OpenAIServer(answer_key) as server:
        backend = OpenAIBackend(server.base_url, "test-model")
        summary = generate(
            backend, ["gsm8k"], tmp_path, limit=4, batch_size=2, grading=GradeOptions(workers=1)
        )
        assert server.stats.total_requests == 4
    records = [r for _, r in read_jsonl(tmp_path / "gsm8k.jsonl")]
    assert [r["correct"] for r in records] == [True, False, True, True]
    assert records[0]["response"].endswith("$.")  # cut at the first stop string
    assert summary["gsm8k"] == {"accuracy": 75.0, "problems": 4, "samples": 4}
    assert json.loads((tmp_path / "summary.json").read_text())[tmp_path.name]["avg"]["accuracy"] == 75.0


def test_a_crashed_generation_resumes_without_redoing_records(tmp_path: Path):
    def fail_from_third(request_number: int, body: dict) -> str | None:
        return "500" if request_number >= 3 else None

    with OpenAIServer(answer_key, fault=fail_from_third) as server:
        backend = OpenAIBackend(server.base_url, "test-model", concurrency=1)
        backend.client = backend.client.with_options(max_retries=0)
        with pytest.raises(openai.InternalServerError):
            generate(backend, ["gsm8k"], tmp_path, limit=5, batch_size=2, grading=GradeOptions(workers=1))
    assert [r["id"] for _, r in read_jsonl(tmp_path / "gsm8k.jsonl")] == ["gsm8k-0#0", "gsm8k-1#0"]

    with OpenAIServer(answer_key) as server:
        generate(OpenAIBackend(server.base_url, "test-model"), ["gsm8k"], tmp_path, limit=5, batch_size=2)
        assert server.stats.total_requests == 3  # only the missing problems
    ids = [r["id"] for _, r in read_jsonl(tmp_path / "gsm8k.jsonl")]
    assert ids == [f"gsm8k-{i}#0" for i in range(5)]


def test_small_sets_are_averaged_over_samples(tmp_path: Path):
    with OpenAIServer(lambda m, b: "\\boxed{204}") as server:
        summary = generate(
            OpenAIBackend(server.base_url, "test-model"),
            ["aime24"],
            tmp_path,
            limit=2,
            small_set_samples=4,
            sampling=Sampling(temperature=0.6),
        )
    # Problem 0's answer is 204 (4/4 right), problem 1's is not (0/4): mean 50%.
    assert summary["aime24"] == {"accuracy": 50.0, "problems": 2, "samples": 8}


def test_grade_command_writes_pred_and_correct(tmp_path: Path, capsys):
    responses = tmp_path / "responses.jsonl"
    rows = [
        {"id": "a", "benchmark": "math", "response": "so $\\boxed{\\dfrac{1}{2}}$", "answer": "0.5"},
        {"id": "b", "benchmark": "gsm8k", "response": "The answer is 17.", "answer": "18"},
    ]
    responses.write_text("".join(json.dumps(r) + "\n" for r in rows))
    main(["grade", str(responses), "--workers", "1"])
    graded = [r for _, r in read_jsonl(tmp_path / "responses.graded.jsonl")]
    assert [(r["pred"], r["correct"]) for r in graded] == [("\\frac{1}{2}", True), ("17", False)]
    assert (tmp_path / "summary.md").exists()


def test_grade_command_names_file_line_and_field_of_a_bad_record(tmp_path: Path):
    responses = tmp_path / "bad.jsonl"
    responses.write_text(json.dumps({"id": "a", "benchmark": "math", "response": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: missing field\(s\) \['answer'\]"):
        main(["grade", str(responses)])


def test_report_puts_runs_side_by_side(tmp_path: Path, capsys):
    for run, correct in (("base", [True, False]), ("cft", [True, True])):
        (tmp_path / run).mkdir()
        lines = [
            {"id": f"gsm8k-{i}#0", "benchmark": "gsm8k", "response": "", "answer": "1", "correct": c}
            for i, c in enumerate(correct)
        ]
        (tmp_path / run / "gsm8k.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    main(["report", str(tmp_path / "base"), str(tmp_path / "cft"), "--out", str(tmp_path / "report")])
    table = (tmp_path / "report" / "summary.md").read_text()
    assert "| gsm8k | 50.0 | 100.0 |" in table
    assert "| avg | 50.0 | 100.0 |" in table


@pytest.mark.slow
def test_select_names_the_best_exported_checkpoint(smollm2_transformers_dir: Path, tmp_path: Path, capsys):
    # The trainer's layout, WORKDIR/hf/step_N; step_10 sorts after step_2 by step, before it by name.
    for step in ("step_10", "step_2"):
        shutil.copytree(smollm2_transformers_dir, tmp_path / "hf" / step)
    main(
        ["select", "--run", str(tmp_path), "--benchmark", "gsm8k", "--backend", "transformers"]
        + ["--limit", "1", "--max-new-tokens", "2", "--workers", "1"]
    )
    selection = json.loads((tmp_path / "eval" / "selection.json").read_text())
    # Identical weights score the same; the tie goes to the earlier checkpoint.
    assert selection["best"] == "step_2"
    assert selection["best_dir"] == str(tmp_path / "hf" / "step_2")
    assert set(selection["accuracy"]) == {"step_2", "step_10"}
