"""build: a whole CFT data recipe from one JSON config, each stage resumable.

Two recipes (configs/critique/ has an example of each):
- "one-shot": problems (one seed problem in the paper) -> every generator x K samples -> every
  teacher critiques every solution -> filter (verdict and/or answer agreement, trim to ~600).
- "existing-solutions" (the 50K-style recipe): many problems with one existing solution each
  (SolutionRecords) -> one teacher -> filter (e.g. keep the longest N).
Stages write into `workdir`: solutions.jsonl, critiques.jsonl, cft.jsonl, filter_report.json, and
a failures file per stage. Rerunning the same config resumes where the last run stopped. Relative
paths in the config are relative to the config file. The whole config is checked before any call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

from cft_jax.critique.client import ConfigError, RetryPolicy
from cft_jax.critique.config import ModelSpec, retry_from_dict, spec_from_dict
from cft_jax.critique.filter import FilterConfig, filter_file
from cft_jax.critique.runner import failures_path_for

RECIPES = ("one-shot", "existing-solutions")
TEACH_MODES = ("online", "batch")
KEYS = ("recipe", "workdir", "problems", "solutions", "generators", "teachers", "retry", "filter")
KEYS += ("teach_mode", "batch_poll_seconds")


@dataclasses.dataclass(frozen=True)
class BuildPlan:
    recipe: str
    workdir: Path
    problems: Path | None
    solutions: Path
    generators: list[ModelSpec]
    teachers: list[ModelSpec]
    retry: RetryPolicy
    filter: FilterConfig
    teach_mode: str
    batch_poll_seconds: float


def load_plan(config_path: str | Path) -> BuildPlan:
    """The validated plan of a build config; errors name the file, the key and the fix."""
    config_path = Path(config_path)
    try:
        cfg = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{config_path}: cannot read build config ({e})") from None
    where, base = str(config_path), config_path.parent

    def path(value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else base / p

    unknown = sorted(set(cfg) - set(KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys are {sorted(KEYS)}")
    recipe, teach_mode = cfg.get("recipe"), cfg.get("teach_mode", "online")
    if recipe not in RECIPES:
        raise ConfigError(f"{where}: 'recipe' must be one of {list(RECIPES)}, got {recipe!r}")
    if teach_mode not in TEACH_MODES:
        raise ConfigError(f"{where}: 'teach_mode' must be one of {list(TEACH_MODES)}, got {teach_mode!r}")

    def specs(key: str, role: str) -> list[ModelSpec]:
        items = cfg.get(key) or []
        found = [
            spec_from_dict(o, role=role, where=f"{where}: {key}[{i}]", base=base) for i, o in enumerate(items)
        ]
        if not found:
            raise ConfigError(f"{where}: the {recipe} recipe needs at least one entry in '{key}'")
        return found

    teachers = specs("teachers", "teacher")
    workdir = path(cfg.get("workdir", "critique-build"))
    if recipe == "one-shot":
        if "problems" not in cfg:
            raise ConfigError(f"{where}: the one-shot recipe needs 'problems' (a ProblemRecord JSONL)")
        generators, problems, solutions = specs("generators", "generator"), path(cfg["problems"]), None
    else:
        if "solutions" not in cfg:
            raise ConfigError(
                f"{where}: the existing-solutions recipe needs 'solutions' (a SolutionRecord JSONL)"
            )
        generators, problems, solutions = [], None, path(cfg["solutions"])
    return BuildPlan(
        recipe=recipe,
        workdir=workdir,
        problems=problems,
        solutions=solutions or workdir / "solutions.jsonl",
        generators=generators,
        teachers=teachers,
        retry=retry_from_dict(cfg.get("retry"), where),
        filter=FilterConfig.from_dict(cfg.get("filter") or {}, f"{where}: filter"),
        teach_mode=teach_mode,
        batch_poll_seconds=float(cfg.get("batch_poll_seconds", 30.0)),
    )


def build(config_path: str | Path) -> dict[str, Any]:
    """Runs the recipe `config_path` describes; returns a summary of every stage."""
    plan = load_plan(config_path)
    plan.workdir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"recipe": plan.recipe, "workdir": str(plan.workdir), "failed": 0}
    if plan.problems is not None:
        from cft_jax.critique.sample import sample

        failures = failures_path_for(plan.solutions)
        sampled = sample(plan.problems, plan.solutions, failures, plan.generators, plan.retry)
        summary["sample"] = sampled.as_dict()
        summary["failed"] += sampled.failed

    critiques = plan.workdir / "critiques.jsonl"
    failures = failures_path_for(critiques)
    if plan.teach_mode == "batch":
        from cft_jax.critique.batch import teach_batch

        state = plan.workdir / "batch-state.json"
        taught = teach_batch(
            plan.solutions, critiques, failures, plan.teachers, state, poll_seconds=plan.batch_poll_seconds
        )
    else:
        from cft_jax.critique.teach import teach

        taught = asyncio.run(teach(plan.solutions, critiques, failures, plan.teachers, plan.retry))
    summary["teach"] = taught.as_dict()
    summary["failed"] += taught.failed

    report = filter_file(critiques, plan.workdir / "cft.jsonl", plan.filter)
    (plan.workdir / "filter_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    summary["filter"] = report
    return summary
