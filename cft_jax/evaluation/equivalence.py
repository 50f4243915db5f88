"""Is a predicted answer equal to the reference? The three graders the evaluation tool offers.

| grader        | behaviour                                                                      |
|---------------|--------------------------------------------------------------------------------|
| `qwen25-math` | the Qwen2.5-Math toolkit's `math_equal`: strings, choice letters, numbers      |
|               | (rel 1e-4, also x100 and /100 for percentages), tuples / intervals element     |
|               | by element, matrices, equations, then sympy symbolic equality                  |
| `cft`         | the CFT repository's more lenient variant: also numbers equal to one decimal,  |
|               | scientific notation (`3\\times10^{8}` = `3e8`), the right-hand sides of any     |
|               | equations, and closeness to the fewer significant digits of the two            |
| `math-verify` | Hugging Face's math-verify parser and verifier                                 |

Both inputs are already normalised by `answer_extraction.strip_string`. These functions carry no
time limit of their own: `grader.grade_many` runs each call in a worker process it can kill.
sympy's own `parse_latex` needs an ANTLR runtime pinned to 4.11, which conflicts with
latex2sympy2-extended; the latter (the maintained successor of the latex2sympy2 the toolkit
uses) parses the LaTeX here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

CHOICES = ("A", "B", "C", "D", "E")
_LIST = re.compile(r"(\(|\[).+(\)|\])")
_MATRIX_OPEN = ("\\begin{pmatrix}", "\\begin{bmatrix}")
_MATRIX_CLOSE = ("\\end{pmatrix}", "\\end{bmatrix}")


def clean_choice(pred: str) -> str:
    """The last standalone letter A-E of a multiple-choice answer, else the stripped answer."""
    pred = pred.strip("\n").rstrip(".").rstrip("/").strip(" ").lstrip(":")
    letters = re.findall(r"\b(A|B|C|D|E)\b", pred.upper())
    last = letters[-1] if letters else pred.strip().strip(".")
    return last.rstrip(".").rstrip("/")


def parse_number(text: str) -> float | None:
    """`1,000` -> 1000.0, `10%` / `10\\%` -> 0.1; None when it is not a plain number."""
    text = str(text).replace(",", "")
    try:
        return float(text)
    except ValueError:
        pass
    if text.endswith("%"):
        text = text[:-1].removesuffix("\\")
        try:
            return float(text) / 100
        except ValueError:
            return None
    return None


def numbers_close(pred: float, ref: float) -> bool:
    return math.isclose(ref, pred, rel_tol=1e-4)


def _numbers_equal(pred: str, ref: str) -> bool | None:
    """None when either side is not a number; otherwise equal within tolerance, percent included."""
    p, r = parse_number(pred), parse_number(ref)
    if p is None or r is None:
        return None
    # A model may answer 25 for 25% (= 0.25) or the other way round.
    return any(numbers_close(p, target) for target in (r / 100, r, r * 100))


def _to_pmatrix(text: str) -> str:
    """`{1,2}` -> `\\begin{pmatrix}1\\2\\end{pmatrix}`, for references written as braces."""
    rows = [m.strip("{}") for m in re.findall(r"\{.*,.*\}", text.strip())]
    return ", ".join("\\begin{pmatrix}" + m.replace(",", "\\") + "\\end{pmatrix}" for m in rows)


def _is_matrix(text: str) -> bool:
    return text.startswith(_MATRIX_OPEN) and text.endswith(_MATRIX_CLOSE)


def _matrix_cells(text: str) -> list[list[str]]:
    body = text[len("\\begin{pmatrix}") : -len("\\end{pmatrix}")]
    return [line.strip().split("&") for line in body.split("\\\\") if line.strip()]


def _without_brackets(pred: str, ref: str) -> tuple[str, str]:
    """Both sides without grouping brackets: `(1,2)` = `1,2`, but `[1,2)` stays an interval."""
    if (pred.startswith("[") and pred.endswith("]") and not (ref.startswith("(") and ref.endswith(")"))) or (
        pred.startswith("(") and pred.endswith(")") and not (ref.startswith("[") and ref.endswith("]"))
    ):
        pred, ref = pred.strip("[]()"), ref.strip("[]()")
    table = str.maketrans("", "", "{}()")
    return pred.translate(table), ref.translate(table)


def _as_difference(equation: str) -> str:
    lhs, rhs = equation.split("=")
    return f"{lhs.strip()} - ({rhs.strip()})"


def _is_simple_equation(text: str) -> bool:
    """`x = 3`, `k=5`: one `=` with a short name on the left."""
    return text.count("=") == 1 and len(text.split("=")[0].strip()) <= 2


def _parse_sympy(text: str):
    """A sympy object for LaTeX or plain math text; the text itself when nothing parses it."""
    from latex2sympy2_extended import latex2sympy
    from sympy.parsing.sympy_parser import parse_expr

    for parse in (latex2sympy, parse_expr):
        for candidate in (text.replace("\\\\", "\\"), text):
            try:
                return parse(candidate)
            except Exception:  # noqa: BLE001 - any parser failure means "try the next parser"
                continue
    return text


def symbolic_equal(pred: str, ref: str) -> bool:
    """Equal as sympy objects: identical, simplifying to zero difference, equal equations, equal
    numerically (rel 1e-4), or equal matrices to three decimals."""
    from sympy import N, simplify

    a, b = _parse_sympy(pred), _parse_sympy(ref)
    # Each attempt may raise on objects that do not support it (a string, an equation, a matrix);
    # that attempt then simply does not prove equality.
    attempts: tuple[Callable[[], bool], ...] = (
        lambda: str(a) == str(b) or a == b,
        lambda: a.equals(b) or simplify(a - b) == 0,
        lambda: abs(a.lhs - a.rhs).equals(abs(b.lhs - b.rhs)),
        lambda: numbers_close(float(N(a)), float(N(b))),
        lambda: (
            a.shape == b.shape
            and a.applyfunc(lambda x: round(x, 3)).equals(b.applyfunc(lambda x: round(x, 3)))
        ),
    )
    for attempt in attempts:
        try:
            if attempt():
                return True
        except Exception:  # noqa: BLE001 - see above
            continue
    return False


def qwen25_math_equal(pred: str, ref: str) -> bool:
    """The Qwen2.5-Math toolkit's verdict for two normalised answers."""
    if pred.strip().lower() == ref.strip().lower():
        return True
    if ref in CHOICES and clean_choice(pred) == ref:
        return True
    if _numbers_equal(pred, ref):
        return True
    if not pred:
        return False
    pred, ref = pred.strip(), ref.strip()
    if "pmatrix" in pred and "pmatrix" not in ref:
        ref = _to_pmatrix(ref)
    bare_pred, bare_ref = _without_brackets(pred, ref)
    if bare_pred.lower() == bare_ref.lower():
        return True
    if _LIST.match(pred) and _LIST.match(ref):
        return _all_equal(pred[1:-1].split(","), ref[1:-1].split(","), qwen25_math_equal)
    if _is_matrix(pred) and _is_matrix(ref):
        return _matrices_equal(pred, ref, qwen25_math_equal)
    if pred.count("=") == 1 and ref.count("=") == 1:
        p, r = _as_difference(pred), _as_difference(ref)
        return symbolic_equal(p, r) or symbolic_equal(f"-({p})", r)
    if _is_simple_equation(pred) and "=" not in ref:
        return qwen25_math_equal(pred.split("=")[1], ref)
    if _is_simple_equation(ref) and "=" not in pred:
        return qwen25_math_equal(pred, ref.split("=")[1])
    return symbolic_equal(pred, ref)


def _all_equal(preds: list[str], refs: list[str], equal: Callable[[str, str], bool]) -> bool:
    return len(preds) == len(refs) and all(equal(p, r) for p, r in zip(preds, refs, strict=True))


def _matrices_equal(pred: str, ref: str, equal: Callable[[str, str], bool]) -> bool:
    pred_rows, ref_rows = _matrix_cells(pred), _matrix_cells(ref)
    return len(pred_rows) == len(ref_rows) and all(
        _all_equal(p, r, equal) for p, r in zip(pred_rows, ref_rows, strict=True)
    )


_TIMES_TEN = re.compile(r"(\d+\.?\d*?)\\times10\^\{?([+-]?\d+)\}?")


def _scientific_value(text: str) -> float | None:
    """`3e8`, `3\\times10^{8}`, `10^{-3}` as a number; None otherwise."""
    text = text.replace(",", "")
    if "e" in text.lower().replace("times", ""):
        try:
            return float(text)
        except ValueError:
            return None
    if m := _TIMES_TEN.fullmatch(text):
        return float(m.group(1)) * 10 ** int(m.group(2))
    if m := re.fullmatch(r"10\^\{([+-]?\d+)\}", text):
        return 10.0 ** int(m.group(1))
    return None


def _significant_digits(text: str) -> int:
    text = text.lower()
    if "e" in text:
        text = f"{float(text):f}"
    return sum(c.isdigit() for c in text.rstrip("0").rstrip("."))


def _close_to_stated_precision(pred: str, ref: str) -> bool:
    """Equal to half a unit in the last significant digit of the less precise side."""
    p, r = _scientific_value(pred), _scientific_value(ref)
    p = p if p is not None else parse_number(pred.replace("\\", ""))
    r = r if r is not None else parse_number(ref.replace("\\", ""))
    if p is None or r is None:
        return False
    scale = max(abs(p), abs(r))
    if scale == 0:
        return True
    digits = min(_significant_digits(pred), _significant_digits(ref))
    return abs(p - r) / scale <= 0.5 * 10 ** (-(digits - 1))


def cft_math_equal(pred: str, ref: str) -> bool:
    """The CFT repository's lenient verdict: the toolkit's, plus the looser numeric readings."""
    p, r = parse_number(pred), parse_number(ref)
    if p is not None and r is not None:
        # Plain numbers: equal to one decimal, or the toolkit's tolerance; nothing else applies.
        return round(p, 1) == round(r, 1) or bool(_numbers_equal(pred, ref))
    if qwen25_math_equal(pred, ref):
        return True
    sp, sr = _scientific_value(pred), _scientific_value(ref)
    if sp is not None and sp == sr:
        return True
    if ("=" in pred or "=" in ref) and cft_math_equal(
        pred.split("=")[-1].replace("{", "("), ref.split("=")[-1].replace("{", "(")
    ):
        return True
    return _close_to_stated_precision(pred, ref)


def math_verify_equal(pred: str, ref: str) -> bool:
    """math-verify's verdict; both answers are parsed as the content of a `\\boxed{}`."""
    from math_verify import parse, verify

    # math-verify's own signal-based time limits are off: the worker running this is killed instead.
    gold = parse(f"\\boxed{{{ref}}}", parsing_timeout=None)
    answer = parse(f"\\boxed{{{pred}}}", parsing_timeout=None)
    return bool(gold and answer and verify(gold, answer, timeout_seconds=None))


GRADERS: dict[str, Callable[[str, str], bool]] = {
    "qwen25-math": qwen25_math_equal,
    "cft": cft_math_equal,
    "math-verify": math_verify_equal,
}
