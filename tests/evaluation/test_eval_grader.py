"""The grader reproduces the Qwen2.5-Math toolkit's verdicts on published equivalence cases."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from cft_jax.evaluation.equivalence import GRADERS
from cft_jax.evaluation.grader import extract_answer, grade_many, is_equivalent

# (prediction as a model writes it, reference, toolkit verdict). Sources: the MATH repository's
# `is_equiv` tests, the Qwen2.5-Math grader's unit tests and documented examples.
EQUIVALENCE_CASES = [
    # fractions and \dfrac
    ("\\dfrac{1}{2}", "\\frac{1}{2}", True),
    ("\\tfrac{3}{4}", "\\frac34", True),
    ("1/2", "\\frac{1}{2}", True),
    ("0.5", "\\frac{1}{2}", True),
    ("0.0833333333333333", "\\frac{1}{12}", True),
    ("\\frac{x}{7}+\\frac{2}{7}", "\\frac{x+2}{7}", True),
    ("\\frac{1}{3}", "\\frac{1}{2}", False),
    # units and \text{}
    ("5 \\text{ cm}", "5", True),
    ("10\\text{ inches}", "10", True),
    ("\\text{(C)}", "C", True),
    ("\\$18.90", "18.90", True),
    ("18 feet", "18", True),
    ("18 dollars", "18", False),
    # percentages
    ("10\\%", "10", True),
    ("10%", "0.1", True),
    ("25", "0.25", True),
    ("10%", "0.2", False),
    # numbers: thousands separators, tolerance, scientific notation
    ("1,000", "1000", True),
    ("3.14159", "3.1416", True),
    ("2.5", "2.6", False),
    ("1.2 \\times 10^{5}", "120000", True),
    ("4.5\\times10^{33}", "4.5 \\times 10^{33}", True),
    # intervals and tuples, element by element
    ("(1, 4.5)", "(1,\\frac{9}{2})", True),
    ("[1, 2, 3]", "[1, 2, 3]", True),
    ("[1, 2, 3]", "[1, 2, 4]", False),
    ("(-\\infty, 3]", "(-\\infty,3]", True),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", True),
    ("(2, 3)", "(3, 2)", False),
    # matrices
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", True),
    ("\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", True),
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&5\\end{pmatrix}", False),
    ("\\begin{pmatrix}0.5\\\\1\\end{pmatrix}", "\\begin{pmatrix}\\frac{1}{2}\\\\1\\end{pmatrix}", True),
    # equations
    ("x = 3", "3", True),
    ("3", "x=3", True),
    ("k = 10", "10", True),
    ("y = 2x + 1", "y = 1 + 2x", True),
    ("x = y", "x = z", False),
    # degrees, pi, symbols
    ("90^\\circ", "90", True),
    ("45^{\\circ}", "45", True),
    ("2\\pi", "2 \\pi", True),
    ("\\pi", "3.14159265", True),
    ("\\sqrt2", "\\sqrt{2}", True),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}", True),
    ("2\\sqrt{2}", "\\sqrt{8}", True),
    ("p-q", "-q+p", True),
    ("x^2+2x+1", "(x+1)^2", True),
    ("\\cos^2(y)", "1-\\sin^2(y)", True),
    # choices, words, booleans
    ("(B)", "B", True),
    ("B.", "B", True),
    ("five", "5", True),
    ("\\text{Evelyn}", "Evelyn", True),
    ("True", "True", True),
    ("\\text{east}", "\\text{east}", True),
    ("", "\\text{east}", False),
    ("7", "8", False),
]


@pytest.mark.parametrize(("pred", "reference", "verdict"), EQUIVALENCE_CASES)
def test_qwen25_math_verdicts_on_published_cases(pred: str, reference: str, verdict: bool):
    assert grade_many([(pred, reference)], workers=1, grader="qwen25-math")[0] is verdict


def test_all_graders_agree_on_the_clear_cases():
    pairs = [("\\dfrac{1}{2}", "0.5"), ("x = 3", "3"), ("(1,2)", "(1,2)"), ("7", "8")]
    for grader in GRADERS:
        assert grade_many(pairs, workers=2, grader=grader) == [True, True, True, False], grader


def test_cft_grader_is_more_lenient_on_rounding_and_scientific_notation():
    pairs = [("1.33", "1.3"), ("4.5e33", "4.5\\times10^{33}")]
    assert grade_many(pairs, workers=1, grader="qwen25-math") == [False, False]
    assert grade_many(pairs, workers=1, grader="cft") == [True, True]


def test_a_pathological_sympy_expression_is_cut_off_and_scored_false():
    # sympy's simplify on this runs for minutes; the worker is killed after the limit.
    start = time.monotonic()
    verdicts = grade_many([("\\sin(x)^{300}+\\cos(x)^{300}", "1"), ("2", "2")], workers=1, timeout=1.0)
    assert verdicts == [False, True]
    assert time.monotonic() - start < 20
    # The replacement worker still grades.
    assert is_equivalent("\\frac{2}{4}", "\\frac12")


@pytest.mark.parametrize(
    ("response", "answer"),
    [
        ("So the total is $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("First \\boxed{3}, then corrected: \\boxed{\\{1,2\\}}", "{1,2}"),
        ("Final Answer: The final answer is $42$. I hope it is correct.", "42"),
        ("Adding up, the answer is 1,234.", "1,234"),
        ("She pays 3 + 4 = 7 dollars, and then 12 more.", "12"),
        ("no digits at all", ""),
        ("\\boxed 5$ done", "5"),
    ],
)
def test_extract_answer_follows_the_toolkit_order(response: str, answer: str):
    assert extract_answer(response) == answer


def test_minerva_answers_keep_their_units():
    assert extract_answer("\\boxed{1.6 cm}", "minerva_math") == "1.6cm"
    assert extract_answer("\\boxed{1.6 cm}") == "1.6"


def test_unknown_grader_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="qwen25-math"):
        grade_many([("1", "1")], grader="exact")


def test_the_evaluation_tool_never_imports_jax():
    code = (
        "import sys, cft_jax.evaluation.grader, cft_jax.evaluation.suites, cft_jax.evaluation.cli, "
        "cft_jax.eval; assert 'jax' not in sys.modules, 'jax imported'; assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
