"""Grader throughput: answers graded per second on real responses.

Responses: RealCritic model solutions (`reasoning`, graded against `gt`) when a RealCritic folder is
given, topped up with the shipped MATH reference solutions (graded against their own answer, so
every item goes through extraction, normalisation and equivalence).

    python benchmarks/bench_grader.py --workers 2 --n 5000 [--realcritic ../shared/data/critique/realcritic]
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

from cft_jax.evaluation.grader import extract_answer, grade_many
from cft_jax.evaluation.suites import BENCHMARKS, DATA_DIR, load_benchmark


def responses(realcritic: Path | None, n: int) -> list[tuple[str, str, str]]:
    """(benchmark, response, reference) triples."""
    items = []
    if realcritic is not None:
        for path in sorted(realcritic.glob("mix_*.jsonl")):
            bench = path.stem.removeprefix("mix_")
            for line in path.read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                items.append((bench, row["reasoning"], str(row["gt"])))
    with gzip.open(DATA_DIR / BENCHMARKS["math"].file, "rt", encoding="utf-8") as f:
        solutions = [json.loads(line)["solution"] for line in f]
    items += [("math", s, p.reference_answer) for s, p in zip(solutions, load_benchmark("math"), strict=True)]
    return items[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--grader", default="qwen25-math")
    parser.add_argument("--realcritic", type=Path)
    args = parser.parse_args()
    items = responses(args.realcritic, args.n)
    grade_many([("1", "1")], workers=args.workers)  # start the worker processes outside the timing
    start = time.perf_counter()
    by_bench: dict[str, list[tuple[str, str]]] = {}
    for bench, response, reference in items:
        by_bench.setdefault(bench, []).append((extract_answer(response, bench), reference))
    correct = sum(
        sum(grade_many(pairs, workers=args.workers, timeout=args.timeout, grader=args.grader, benchmark=b))
        for b, pairs in by_bench.items()
    )
    elapsed = time.perf_counter() - start
    print(
        f"{len(items)} responses, grader {args.grader}, {args.workers} workers: {elapsed:.1f} s, "
        f"{len(items) / elapsed:.0f} answers/s, {100 * correct / len(items):.1f}% judged correct"
    )


if __name__ == "__main__":
    main()
