"""Accuracy summaries: per benchmark, the unweighted average, and several runs side by side.

A problem's score is the mean correctness of its samples (one for greedy runs, n for the small
sets), a benchmark's accuracy the mean over its problems x100, one decimal, as the papers report.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cft_jax.errors import InputError
from cft_jax.schema import JsonlError, read_jsonl


def summarize(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """{benchmark: {accuracy, problems, samples}} plus "avg" (unweighted mean of benchmark accuracies)."""
    by_problem: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.get("correct") is None:
            continue
        problem = r["id"].rsplit("#", 1)[0]
        by_problem[r["benchmark"]][problem].append(bool(r["correct"]))
    summary: dict[str, dict[str, float]] = {}
    for bench in sorted(by_problem):
        scores = [sum(s) / len(s) for s in by_problem[bench].values()]
        summary[bench] = {
            "accuracy": round(100 * sum(scores) / len(scores), 1),
            "problems": len(scores),
            "samples": sum(len(s) for s in by_problem[bench].values()),
        }
    if summary:
        accuracies = [s["accuracy"] for s in summary.values()]
        summary["avg"] = {
            "accuracy": round(sum(accuracies) / len(accuracies), 1),
            "benchmarks": len(accuracies),
        }
    return summary


def summarize_dir(run_dir: str | Path) -> dict[str, dict[str, float]]:
    """The summary of every per-benchmark JSONL in a run directory; names the file and line of a bad one."""
    paths = sorted(Path(run_dir).glob("*.jsonl"))
    if not paths:
        # An empty report would look like a run that scored nothing.
        raise InputError(
            f"{run_dir}: no <benchmark>.jsonl files; give a run directory written by "
            "`python -m cft_jax.eval generate --out DIR`"
        )
    records = []
    for path in paths:
        for line_no, obj in read_jsonl(path):
            for field in ("id", "benchmark"):
                if not isinstance(obj.get(field), str):
                    raise JsonlError(
                        path,
                        line_no,
                        f"field {field!r} must be a string, got {obj.get(field)!r}; "
                        "a response record needs id, benchmark, response, answer",
                    )
            records.append(obj)
    return summarize(records)


def markdown_table(summaries: dict[str, dict[str, dict[str, float]]]) -> str:
    """One row per benchmark, one column per run; the last row is the average."""
    runs = list(summaries)
    benches = sorted({b for s in summaries.values() for b in s if b != "avg"})
    lines = ["| benchmark | " + " | ".join(runs) + " |", "|---" * (len(runs) + 1) + "|"]
    for bench in [*benches, "avg"]:
        cells = [f"{summaries[r][bench]['accuracy']:.1f}" if bench in summaries[r] else "-" for r in runs]
        lines.append(f"| {bench} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(summaries: dict[str, dict[str, dict[str, float]]], out_dir: str | Path) -> tuple[Path, Path]:
    """Writes `summary.md` and `summary.json` into `out_dir`; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "summary.md", out / "summary.json"
    md.write_text(markdown_table(summaries), encoding="utf-8")
    js.write_text(json.dumps(summaries, indent=2) + "\n", encoding="utf-8")
    return md, js


def run_names(dirs: Sequence[str | Path]) -> list[str]:
    """Short unique column names for run directories (their last path components)."""
    names = [Path(d).name or str(d) for d in dirs]
    return names if len(set(names)) == len(names) else [str(d) for d in dirs]
