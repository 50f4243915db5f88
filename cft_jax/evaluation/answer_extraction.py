"""Final-answer extraction and string normalisation, as the Qwen2.5-Math evaluation toolkit does them.

Reimplements the behaviour of that toolkit's `evaluation/parser.py` (`extract_answer`,
`strip_string`) so that our verdicts match the published tables. Quirks are kept on purpose, e.g.
"and" is deleted anywhere in an answer and `x=` prefixes are dropped: changing them would change
the verdicts the papers report.
"""

from __future__ import annotations

import re

from word2number import w2n

# Benchmarks whose answers keep their units (the toolkit's STRIP_EXCEPTIONS).
KEEP_UNITS = ("minerva_math",)

# Unit words the toolkit strips from answers (gathered there from MathQA), in its order, plus plurals.
# They are regexes, not literals: "q ." matches "q" then any character, as in the toolkit.
_UNITS = (
    "east", "degree", "mph", "kmph", "ft", "m sqaure", " m east", "sq m", "deg", "mile", "q .",
    "monkey", "prime", "ratio", "profit of rs", "rd", "o", "gm", "p . m", "lb", "tile", "per", "dm",
    "lt", "gain", "ab", "way", "west", "a .", "b .", "c .", "d .", "e .", "f .", "g .", "h .", "t",
    "a", "h", "no change", "men", "soldier", "pie", "bc", "excess", "st", "inches", "noon", "percent",
    "by", "gal", "kmh", "c", "acre", "rise", "a . m", "th", "π r 2", "sq", "mark", "l", "toy", "coin",
    "sq . m", "gallon", "° f", "profit", "minw", "yr", "women", "feet", "am", "pm", "hr", "cu cm",
    "square", "v â € ™", "are", "rupee", "rounds", "cubic", "cc", "mtr", "s", "ohm", "number", "kmph",
    "day", "hour", "minute", "min", "second", "man", "woman", "sec", "cube", "mt", "sq inch", "mp",
    "∏ cm ³", "hectare", "more", "sec", "unit", "cu . m", "cm 2", "rs .", "rs", "kg", "g", "month",
    "km", "m", "cm", "mm", "apple", "liter", "loss", "yard", "pure", "year", "increase", "decrease",
    "d", "less", "Surface", "litre", "pi sq m", "s .", "metre", "meter", "inch",
)  # fmt: skip
# A unit counts only between non-word characters or string ends.
_ALL_UNITS = (*_UNITS, *(u + "s" for u in _UNITS))
_UNIT_PATTERNS = [re.compile(r"(^|\W)" + u + r"($|\W)") for u in _ALL_UNITS]
# Most answers hold no unit word; one combined search lets them skip the 300 ordered substitutions.
_ANY_UNIT = re.compile(r"(^|\W)(" + "|".join(_ALL_UNITS) + r")($|\W)")


def _fix_fracs(s: str) -> str:
    """`\\frac12` -> `\\frac{1}{2}`, `\\frac1{72}` -> `\\frac{1}{72}`; bad input is returned unchanged."""
    head, *tails = s.split("\\frac")
    out = head
    for tail in tails:
        out += "\\frac"
        if tail.startswith("{"):
            out += tail
            continue
        if len(tail) < 2:
            return s
        a, b, rest = tail[0], tail[1], tail[2:]
        out += "{" + a + "}" + (b + rest if b == "{" else "{" + b + "}" + rest)
    return out


def _fix_a_slash_b(s: str) -> str:
    """`3/4` (two integers) -> `\\frac{3}{4}`."""
    parts = s.split("/")
    if len(parts) != 2:
        return s
    a, b = parts
    try:
        a = a if "sqrt" in a else str(int(a))
        b = b if "sqrt" in b else str(int(b))
    except ValueError:
        return s
    return f"\\frac{{{a}}}{{{b}}}" if s == f"{a}/{b}" else s


def _word_number(s: str) -> str:
    """ "five" -> "5"; anything word2number cannot read is kept as it is."""
    try:
        return str(w2n.word_to_num(s))
    except (ValueError, IndexError, TypeError):
        return s


def strip_string(s: str, skip_unit: bool = False) -> str:
    """Normalises a LaTeX answer string so that equal answers usually compare equal as strings."""
    s = str(s).strip().replace("\n", "").rstrip(".").replace("\\!", "")
    s = re.sub(r"\\begin\{array\}\{.*?\}", r"\\begin{pmatrix}", s)
    s = re.sub(r"\\end\{array\}", r"\\end{pmatrix}", s).replace("bmatrix", "pmatrix")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\neq", "\\ne").replace("\\leq", "\\le").replace("\\geq", "\\ge")
    s = s.replace("\\left", "").replace("\\right", "").replace("\\{", "{").replace("\\}", "}")
    # A trailing \text{...} is a unit ("5 \text{ miles}") unless it is the whole answer.
    without_unit = re.sub(r"\\text{.*?}$", "", s).strip()
    if without_unit:
        s = without_unit
    if not skip_unit and _ANY_UNIT.search(s):
        for _ in range(2):
            for pattern in _UNIT_PATTERNS:
                stripped = pattern.sub(r"\1\2", s)
                if stripped:
                    s = stripped
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "").replace("$", "").replace("\\(", "").replace("\\)", "")
    s = _word_number(s)
    s = re.sub(r"\\text\{(.*?)\}", r"\1", s)
    for key in ("x=", "y=", "z=", "x\\in", "y\\in", "z\\in", "x\\to", "y\\to", "z\\to"):
        s = s.replace(key, "")
    s = s.replace("\\emptyset", "{}").replace("(-\\infty,\\infty)", "\\mathbb{R}")
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    s = s.replace("infinity", "\\infty")
    if "\\infty" not in s:
        s = s.replace("inf", "\\infty")
    s = s.replace("+\\inity", "\\infty").replace("and", "").replace("\\mathbf", "")
    s = re.sub(r"\\mbox{.*?}", "", s)
    if "j" in s and "i" not in s:
        s = s.replace("j", "i")
    # 5.000 -> 5 and 5.0x -> 5x: trailing zeros after a decimal point carry no value.
    s = re.sub(r"(\d+)\.0*([^\d])", r"\1\2", s)
    s = re.sub(r"(\d+)\.0*$", r"\1", s)
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        s = sides[1]
    s = re.sub(r"\\sqrt(\w+)", r"\\sqrt{\1}", s).replace(" ", "")
    return _fix_a_slash_b(_fix_fracs(s))


def last_boxed(text: str) -> str | None:
    """Contents of the last `\\boxed{...}` (brace-matched), or of `\\boxed 5$`; None if there is none."""
    if "boxed" not in text:
        return None
    tail = text.split("boxed")[-1]
    if not tail.startswith("{"):
        return tail.split("$")[0].strip()
    depth, out = 1, []
    for c in tail[1:]:
        depth += (c == "{") - (c == "}")
        if depth == 0:
            break
        out.append(c)
    return "".join(out)


_LAST_NUMBER = re.compile(r"-?\d*\.?\d+")


def extract_answer(text: str, benchmark: str | None = None) -> str:
    """The final answer of a response, normalised; "" when there is none.

    Order: Minerva's "final answer is $...$. I hope"; the last `\\boxed{}`; "the answer is";
    "final answer is"; the last number.
    """
    text = text.replace("\u043a\u0438", "")
    if "final answer is $" in text and "$. I hope" in text:
        pred = text.split("final answer is $", 1)[1].split("$. I hope", 1)[0].strip()
    elif (boxed := last_boxed(text)) is not None:
        pred = boxed
    elif "he answer is" in text:
        pred = text.split("he answer is")[-1].strip()
    elif "final answer is" in text:
        pred = text.split("final answer is")[-1].strip()
    else:
        numbers = _LAST_NUMBER.findall(text.replace(",", ""))
        pred = numbers[-1] if numbers else ""
    pred = re.sub(r"\n\s*", "", pred)
    if pred.startswith(":"):
        pred = pred[1:]
    if pred.endswith("."):
        pred = pred[:-1]
    if pred.endswith("/"):
        pred = pred[:-1]
    return strip_string(pred, skip_unit=benchmark in KEEP_UNITS)
