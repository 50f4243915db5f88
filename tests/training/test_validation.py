"""`Validation` on its own: a tiny decoder's parameters on an FSDP mesh of 8 devices sample the
validation prompts with one compiled program across validations, the evaluation tool's grader scores
the answers in the background, and the checkpoints of the best step and of those being graded are
pinned. `BestStep` keeps the earliest of equal scores and what a resumed run may keep. A bad
validation set fails at once, naming the key, the file and the line."""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import pytest

from cft_jax.config import ConfigError, build_config
from cft_jax.evaluation.grader import grade_responses
from cft_jax.models.sharding import make_mesh, shard_model
from cft_jax.sampling import SampleConfig
from cft_jax.sampling.sampler import _sample
from cft_jax.train import validation_task
from cft_jax.training.step import model_parts
from cft_jax.training.validation import BEST_FILE, BestStep, Score, Validation, ValidationTask
from tests.sampling.test_sampler import PROMPTS, tiny_decoder
from tests.training.conftest import TINY

CONFIG = SampleConfig(max_new_tokens=4)


def spell(ids: list[int]) -> str:
    """The answer text of generated ids: the ids as numbers, so the grader's last-number rule reads the
    last generated id."""
    return " ".join(str(i) for i in ids)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs XLA_FLAGS=--xla_force_host_platform_device_count=8")
def test_validation_samples_the_given_parameters_compiles_once_and_grades_in_the_background(tmp_path):
    prompts = PROMPTS[:5]
    mesh = make_mesh(1, 8, 1, devices=jax.devices()[:8])
    graphdef, params, rest = model_parts(shard_model(tiny_decoder(), mesh))
    task = ValidationTask(
        benchmark="tiny",
        ids=tuple(f"tiny-{i}" for i in range(5)),
        prompts=tuple(map(tuple, prompts)),
        references=("",) * 5,
        sample_config=CONFIG,
        decode=spell,
        grade=lambda answers, refs: grade_responses(answers, refs, workers=1),
    )
    compiled = _sample._cache_size()
    expected = Validation(task, mesh=mesh, graphdef=graphdef, rest=rest, batch_size=3).sample(params)
    # Problems 0, 2 and 4 are answered right by these weights (their reference is the last id they write).
    references = tuple(str(out[-1]) if i % 2 == 0 else "999" for i, out in enumerate(expected))
    task = dataclasses.replace(task, references=references)
    validation = Validation(task, mesh=mesh, graphdef=graphdef, rest=rest, batch_size=3, answers_dir=tmp_path)
    assert validation.batch_size == 8  # rounded up to the 8 devices the rows are split over

    validation.start(2, params)
    assert validation.pinned() == {2}  # being graded: its checkpoint must stay
    wrong = jax.tree.map(lambda x: -x, params)  # other weights, other answers, the same program
    validation.start(4, wrong)
    assert _sample._cache_size() == compiled + 1  # one program for the three calls

    validation._pending[4].result()  # graded, but step 4 has no checkpoint yet: a best one could not be
    assert validation.collect(wait_below=math.inf, saved=0) == []  # exported from it, so nothing is taken
    scores = validation.collect(wait_below=math.inf, saved=4)
    assert [(s.step, s.correct, s.total) for s, _ in scores[:1]] == [(2, 3, 5)]
    assert scores[0][1] and scores[1][0].correct < 3 and not scores[1][1]
    assert validation.pinned() == {2}  # the best now, no longer being graded
    answers = [json.loads(line) for line in (tmp_path / "step_2.jsonl").open()]
    assert [a["response"] for a in answers] == [spell(out) for out in expected]
    assert [a["correct"] for a in answers] == [True, False, True, False, True]
    validation.close()


def test_the_best_step_is_the_earliest_of_the_highest_scores_and_a_resume_keeps_only_earlier_steps(tmp_path):
    best = BestStep("math-500", 4)
    assert [best.add(Score(step, correct, 4)) for step, correct in ((2, 1), (4, 3), (6, 3), (8, 2))] == [
        True,
        True,
        False,
        False,
    ]
    assert best.best == Score(4, 3, 4)
    best.write(tmp_path)
    saved = json.loads((tmp_path / BEST_FILE).read_text())
    assert (saved["step"], saved["score"], saved["benchmark"], saved["n"]) == (4, 0.75, "math-500", 4)

    resumed = BestStep.load(tmp_path, benchmark="math-500", total=4, resumed_step=6)
    assert sorted(resumed.scores) == [2, 4, 6] and resumed.best == Score(4, 3, 4)  # step 8 is trained again
    assert BestStep.load(tmp_path, benchmark="math-500", total=4, resumed_step=0).scores == {}  # a fresh run
    other = BestStep.load(tmp_path, benchmark="math-500", total=8, resumed_step=6)  # another validation set
    assert other.scores == {}


def test_a_bad_validation_set_is_refused_before_anything_loads_naming_the_key_file_and_line(tmp_path):
    problems = tmp_path / "val.jsonl"
    problems.write_text(
        '{"id": "a", "question": "1 + 1?", "reference_answer": "2"}\n{"id": "b", "question": "3?"}\n'
    )
    model = {"init_config": TINY}
    config = build_config(
        {"model": model, "evaluation": {"generate_every_steps": 2, "benchmark": str(problems)}}
    )
    with pytest.raises(ConfigError, match=r"evaluation\.benchmark=.*val\.jsonl:2: .*reference_answer"):
        validation_task(config)
    with pytest.raises(ConfigError, match="evaluation.generate_every_steps=2 with no benchmark"):
        build_config({"model": model, "evaluation": {"generate_every_steps": 2}})
