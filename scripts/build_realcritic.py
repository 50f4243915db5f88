"""Regenerates the real CFT demo data shipped in `cft_jax/data/assets/` from ../shared/data/critique.

    python scripts/build_realcritic.py [--shared ../shared/data/critique]

Writes (gzip JSONL, native schema of `cft_jax.schema`):
- realcritic_critiques.jsonl.gz: CritiqueRecords, o1-mini's step-by-step critiques of MATH solutions
  (RealCritic `o1mini_outputs`); the critiqued solution is cut out of the critique prompt, the
  verdict is the critique's "Conclusion of Critique: The solution is Correct/Incorrect".
- realcritic_solutions.jsonl.gz: SolutionRecords with correctness labels (RealCritic `mix_*.jsonl`).
- gsm8k_model_solutions.jsonl.gz: SolutionRecords, 4 GPT-3 solutions per GSM8K test question,
  labelled (GSM8K `example_model_solutions.jsonl`).
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
from pathlib import Path

from cft_jax.schema import CritiqueRecord, SolutionRecord, stable_id, to_json

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "cft_jax" / "data" / "assets"

_VERDICT = re.compile(r"Conclusion of Critique\**\s*\n+\s*The solution is \**(Correct|Incorrect)")
_STUDENT = "## Student Solution\n"


def _write(path: Path, records: list) -> None:
    # mtime=0: the same input gives byte-identical archives.
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=9) as f:
        for r in records:
            f.write((to_json(r) + "\n").encode("utf-8"))
    print(f"{path.relative_to(REPO)}: {len(records)} records")


def _strip_fence(text: str) -> str:
    text = text.strip()
    if text.startswith("```") and text.endswith("```"):
        text = text[3:-3].strip()
    return text


def critiques(src: Path) -> list[CritiqueRecord]:
    out, skipped = [], 0
    for path in sorted((src / "realcritic" / "o1mini_outputs").glob("*.jsonl")):
        subset = "halfhalf" if path.name.startswith("halfhalf") else "onwrong"
        for line in path.open(encoding="utf-8"):
            row = json.loads(line)
            user = row["message"][-1]["content"]
            if user.count(_STUDENT) != 1:
                skipped += 1  # a broken prompt without the solution: nothing to pair the critique with
                continue
            solution = user.split(_STUDENT, 1)[1].strip()
            critique = _strip_fence(row["critic"][0])
            m = _VERDICT.search(critique)
            verdict = {"Correct": "right", "Incorrect": "wrong"}[m.group(1)] if m else None
            out.append(
                CritiqueRecord(
                    id=stable_id("realcritic-o1mini", subset, row["idx"]),
                    question=row["question"],
                    solution=solution,
                    critique=critique,
                    verdict=verdict,
                    reference_answer=row["gt"],
                    # The "onwrong" subset holds only wrong solutions; "halfhalf" mixes them unlabelled.
                    is_correct=False if subset == "onwrong" else None,
                    provenance={
                        "source": f"RealCritic o1mini_outputs/{path.name}",
                        "idx": row["idx"],
                        "critic_model": "o1-mini",
                        "level": row.get("level"),
                        "correction_is_correct": row["score"][0],
                    },
                )
            )
    print(f"critiques: skipped {skipped} rows whose prompt holds no student solution")
    return out


def realcritic_solutions(src: Path) -> list[SolutionRecord]:
    out = []
    for path in sorted((src / "realcritic").glob("mix_*.jsonl")):
        bench = path.stem[len("mix_") :]
        for line in path.open(encoding="utf-8"):
            row = json.loads(line)
            problem_id = stable_id("realcritic", bench, row["idx"])
            out.append(
                SolutionRecord(
                    id=stable_id(problem_id, row["model"], row["reasoning"]),
                    problem_id=problem_id,
                    question=row["question"],
                    solution=row["reasoning"],
                    reference_answer=str(row["gt"]),
                    pred=None if row.get("pred") is None else str(row["pred"]),
                    is_correct=bool(row["previous_score"][0]),
                    provenance={
                        "source": f"RealCritic {path.name}",
                        "idx": row["idx"],
                        "model": row["model"],
                    },
                )
            )
    return out


def gsm8k_solutions(src: Path) -> list[SolutionRecord]:
    out = []
    path = src / "gsm8k_example_model_solutions" / "example_model_solutions.jsonl"
    for number, line in enumerate(path.open(encoding="utf-8")):
        row = json.loads(line)
        problem_id = stable_id("gsm8k-test", number)
        reference = row["ground_truth"].rsplit("A:", 1)[-1].strip()
        for model in ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification"):
            sol = row[model]
            pred = sol["solution"].rsplit("A:", 1)[-1].strip() if "A:" in sol["solution"] else None
            out.append(
                SolutionRecord(
                    id=stable_id(problem_id, model),
                    problem_id=problem_id,
                    question=row["question"],
                    solution=sol["solution"],
                    reference_answer=reference,
                    pred=pred,
                    is_correct=bool(sol["is_correct"]),
                    provenance={
                        "source": "GSM8K example_model_solutions.jsonl",
                        "line": number + 1,
                        "model": model,
                    },
                )
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data" / "critique")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    _write(OUT / "realcritic_critiques.jsonl.gz", critiques(args.shared))
    _write(OUT / "realcritic_solutions.jsonl.gz", realcritic_solutions(args.shared))
    _write(OUT / "gsm8k_model_solutions.jsonl.gz", gsm8k_solutions(args.shared))
    shutil.copyfile(args.shared / "realcritic" / "LICENSE", OUT / "LICENSE.realcritic")


if __name__ == "__main__":
    main()
