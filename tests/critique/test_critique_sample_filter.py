"""sample (graded with the evaluation grader), filter rules, and build for both recipes."""

from __future__ import annotations

import itertools
import json
import re

import pytest
from critique_helpers import REPO, read_ids
from openai_server import OpenAIServer, fail_every

from cft_jax.critique.build import build, load_plan
from cft_jax.critique.client import ConfigError, RetryPolicy
from cft_jax.critique.config import spec_from_dict
from cft_jax.critique.filter import FilterConfig, filter_records
from cft_jax.critique.records import strip_reasoning
from cft_jax.critique.sample import sample
from cft_jax.schema import CritiqueRecord

FAST_RETRY = RetryPolicy(max_attempts=6, base_delay=0.01, max_delay=0.1)


def solver(messages: list[dict], body: dict) -> str:
    """Adds the two numbers of 'What is a + b?'; a high temperature adds one (a wrong answer)."""
    a, b = map(int, re.findall(r"\d+", messages[-1]["content"])[:2])
    wrong = int(body.get("temperature", 0) > 0.5)
    return f"<think>hmm, {a} plus {b}</think>We add: {a} + {b} = {a + b + wrong}. \\boxed{{{a + b + wrong}}}"


def teacher(messages: list[dict], body: dict) -> str:
    user = messages[-1]["content"]
    a, b = map(int, re.findall(r"\d+", user)[:2])
    claimed = int(re.findall(r"\\boxed\{(\d+)\}", user)[-1])
    verdict = "right" if claimed == a + b else "wrong"
    return f"Critique: {a} + {b} is \\boxed{{{a + b}}}{'.' * (a % 5)}\nConclusion: {verdict} [END]"


def write_problems(path, n: int) -> None:
    with open(path, "w") as f:
        for i in range(n):
            f.write(
                json.dumps(
                    {"id": f"p{i}", "question": f"What is {i} + {i + 3}?", "reference_answer": str(2 * i + 3)}
                )
            )
            f.write("\n")


def generator(server: OpenAIServer, **kw) -> object:
    obj = {"model": "test-model", "base_url": server.base_url, "api_key_env": None, "k": 3, **kw}
    return spec_from_dict(obj, role="generator", where="test")


def test_sample_grades_strips_reasoning_and_resumes(tmp_path):
    problems, out = tmp_path / "problems.jsonl", tmp_path / "solutions.jsonl"
    write_problems(problems, 2)
    with OpenAIServer(solver, fault=fail_every(4, "500")) as server:
        gens = [
            generator(server, name="cold", temperature=0.2),
            generator(server, name="hot", temperature=0.9),
        ]
        summary = sample(problems, out, tmp_path / "f.jsonl", gens, FAST_RETRY)
        again = sample(problems, out, tmp_path / "f.jsonl", gens, FAST_RETRY)
    assert summary.written == 12 and again.skipped == 12 and again.written == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len({r["id"] for r in records}) == 12
    for r in records:
        hot = r["provenance"]["name"] == "hot"
        assert r["is_correct"] is (not hot)
        assert "<think>" not in r["solution"] and r["solution"].startswith("We add")
        assert r["pred"] == r["solution"].rsplit("{", 1)[1].rstrip("}")
        assert r["provenance"]["params"]["temperature"] == (0.9 if hot else 0.2)
        assert len(r["provenance"]["prompt_sha256"]) == 64
    assert sorted({r["provenance"]["sample_index"] for r in records}) == [0, 1, 2]


def test_strip_reasoning_handles_an_unopened_think_block():
    assert strip_reasoning("a <think>x</think> b") == "a  b"
    assert strip_reasoning("reasoning started by the template</think>\nAnswer 4") == "Answer 4"
    assert strip_reasoning("no reasoning") == "no reasoning"


def critique(
    i: int, verdict: str | None, is_correct: bool | None, text: str = "", ref: str = "4"
) -> CritiqueRecord:
    body = text or f"Critique {i}. " + "x" * i + f" Conclusion: {verdict} [END]"
    return CritiqueRecord(
        id=f"c{i}",
        question="q",
        solution=f"s{i}",
        critique=body,
        verdict=verdict,
        reference_answer=ref,
        is_correct=is_correct,
    )


def test_filter_verdict_rule_and_dedupe_report_what_they_removed():
    records = [
        critique(0, "right", True),
        critique(1, "wrong", True),
        critique(2, None, False),
        critique(3, "wrong", False),
        critique(3, "wrong", False),
    ]
    kept, report = filter_records(records, FilterConfig(require=("verdict",)))
    assert [r.id for r in kept] == ["c0", "c3"]
    assert report["removed"] == {"duplicate": 1, "require_all": 2}
    assert report["failed_rule"] == {"verdict": 2} and report["kept"] == 2


def test_filter_answer_rule_uses_the_grader():
    records = [
        critique(0, "right", True, "the answer is \\boxed{4}. Conclusion: right"),
        critique(1, "right", True, "the answer is \\boxed{5}. Conclusion: right"),
        critique(2, "wrong", True, "so \\boxed{2+2}. Conclusion: wrong"),
    ]
    kept, _ = filter_records(records, FilterConfig(require=("answer",)))
    assert [r.id for r in kept] == ["c0", "c2"]
    kept, report = filter_records(records, FilterConfig(require=("verdict", "answer"), combine="all"))
    assert [r.id for r in kept] == ["c0"] and report["failed_rule"] == {"verdict": 1, "answer": 1}
    kept, _ = filter_records(records, FilterConfig(require=("verdict", "answer"), combine="any"))
    assert [r.id for r in kept] == ["c0", "c1", "c2"]


def test_filter_balances_then_trims_both_ends_or_keeps_longest():
    records = [critique(i, "right" if i % 5 else "wrong", None) for i in range(1, 21)]  # 16 right, 4 wrong
    kept, report = filter_records(records, FilterConfig(require=(), balance_ratio=2.0))
    assert report["verdicts"] == {"right": 8, "wrong": 4, "none": 0} and report["removed"]["balance"] == 8
    kept, _ = filter_records(records, FilterConfig(require=(), target=10, trim="ends"))
    assert [int(r.id[1:]) for r in kept] == list(range(6, 16))  # 5 longest and 5 shortest gone
    kept, _ = filter_records(records, FilterConfig(require=(), target=10, trim="longest"))
    assert [int(r.id[1:]) for r in kept] == list(range(11, 21))


def test_filter_config_rejects_unknown_rule():
    with pytest.raises(ConfigError, match="unknown rule"):
        FilterConfig(require=("vibes",))


def test_build_one_shot_recipe_end_to_end(tmp_path):
    write_problems(tmp_path / "problem.jsonl", 1)
    variants = itertools.count()

    def respond(messages: list[dict], body: dict) -> str:
        """Distinct texts per request, as real sampling gives (identical ones would be deduped)."""
        if "Solution" in messages[-1]["content"]:
            return f"[t={body['temperature']:.1f}] " + teacher(messages, body)
        return f"Attempt {next(variants)}. " + solver(messages, body)

    with OpenAIServer(respond) as server:
        url = server.base_url
        config = {
            "recipe": "one-shot",
            "workdir": "run",
            "problems": "problem.jsonl",
            "generators": [
                {
                    "name": f"g{t}",
                    "model": "test-model",
                    "base_url": url,
                    "api_key_env": None,
                    "k": 4,
                    "temperature": t,
                }
                for t in (0.2, 0.9)
            ],
            "teachers": [
                {
                    "name": f"t{i}",
                    "model": "test-model",
                    "base_url": url,
                    "api_key_env": None,
                    "temperature": 0.1 * i,
                }
                for i in range(3)
            ],
            "retry": {"max_attempts": 3, "base_delay": 0.01},
            "filter": {"require": ["verdict", "answer"], "target": 20, "trim": "ends"},
        }
        (tmp_path / "oneshot.json").write_text(json.dumps(config))
        summary = build(tmp_path / "oneshot.json")
    assert summary["sample"]["written"] == 8 and summary["teach"]["written"] == 24
    assert summary["filter"]["input"] == 24 and summary["filter"]["kept"] == 20
    assert len(read_ids(tmp_path / "run" / "cft.jsonl")) == 20
    assert json.loads((tmp_path / "run" / "filter_report.json").read_text())["kept"] == 20


def test_build_existing_solutions_recipe_through_the_batch_api(tmp_path):
    solutions = tmp_path / "solutions.jsonl"
    with open(solutions, "w") as f:
        for i in range(12):
            f.write(
                json.dumps(
                    {
                        "id": f"s{i}",
                        "problem_id": f"p{i}",
                        "question": f"What is {i} + 1?",
                        "solution": f"It is \\boxed{{{i + 1 + i % 2}}}",
                        "is_correct": i % 2 == 0,
                    }
                )
                + "\n"
            )
    with OpenAIServer(teacher) as server:
        config = {
            "recipe": "existing-solutions",
            "workdir": "run",
            "solutions": "solutions.jsonl",
            "teachers": [{"model": "test-model", "base_url": server.base_url, "api_key_env": None}],
            "teach_mode": "batch",
            "batch_poll_seconds": 0.05,
            "filter": {"require": [], "target": 6, "trim": "longest"},
        }
        (tmp_path / "fiftyk.json").write_text(json.dumps(config))
        summary = build(tmp_path / "fiftyk.json")
        assert server.stats.by_path["/v1/batches"] == 1
    assert summary["teach"]["written"] == 12 and summary["filter"]["kept"] == 6
    kept = [json.loads(line) for line in (tmp_path / "run" / "cft.jsonl").read_text().splitlines()]
    assert all(r["provenance"]["batch_id"] for r in kept)


def test_build_config_errors_name_the_key(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"recipe": "one-shot", "teachers": [{"modle": "x"}]}))
    with pytest.raises(ConfigError, match=r"teachers\[0\].*unknown key\(s\) \['modle'\]"):
        build(tmp_path / "bad.json")


@pytest.mark.parametrize("name", ["one_shot.json", "fifty_k.json"])
def test_shipped_build_configs_are_valid(name):
    plan = load_plan(REPO / "configs" / "critique" / name)
    assert plan.teachers and plan.filter.target in (600, 50000)
    assert plan.recipe == ("one-shot" if name == "one_shot.json" else "existing-solutions")
