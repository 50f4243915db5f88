"""Every shipped benchmark loads with a non-empty ground truth, parsed as the toolkit parses it."""

from __future__ import annotations

import pytest

from cft_jax.evaluation.suites import BENCHMARKS, DATA_DIR, load_benchmark

SIZES = {
    "math": 5000,
    "math-500": 500,
    "oneshotcft_math-500-validation": 500,
    "minerva_math": 272,
    "gsm8k": 1319,
    "olympiadbench": 675,
    "aime24": 30,
    "aime25": 30,
    "amc23": 40,
    "theoremqa": 800,
}


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_every_problem_has_a_question_and_a_ground_truth(name: str):
    problems = load_benchmark(name)
    assert len(problems) == SIZES[name]
    assert all(p.question and p.reference_answer for p in problems)
    assert len({p.id for p in problems}) == len(problems)
    assert {p.source for p in problems} == {name}


@pytest.mark.parametrize(
    ("name", "index", "answer"),
    [
        ("math", 0, "2"),  # last \boxed{} of the solution
        ("math-500", 0, "(3,\\frac{\\pi}{2})"),
        ("gsm8k", 0, "18"),  # after ####
        ("olympiadbench", 5, "(1,8,19),(2,7,13),(4,5,7)"),  # final_answer[0], without $
        ("aime24", 0, "204"),
        ("amc23", 0, "27"),  # the float 27.0
        ("theoremqa", 0, "11760"),
        ("minerva_math", 1, "4.5e33"),  # boxed, units kept
    ],
)
def test_ground_truth_parsing_per_benchmark(name: str, index: int, answer: str):
    assert load_benchmark(name)[index].reference_answer == answer


def test_ids_are_stable_and_true_false_questions_say_so():
    theoremqa = load_benchmark("theoremqa")
    assert theoremqa[12].id == "theoremqa-12"
    assert theoremqa[12].reference_answer == "False"
    assert theoremqa[12].question.endswith("(True or False)")


def test_license_notice_ships_with_the_data():
    notice = (DATA_DIR / "NOTICE.md").read_text(encoding="utf-8")
    for spec in BENCHMARKS.values():
        assert spec.file in notice or spec.file.split(".")[0] in notice


def test_unknown_benchmark_names_the_choices():
    with pytest.raises(KeyError, match="gsm8k"):
        load_benchmark("gsm9k")
