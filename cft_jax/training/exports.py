"""Pruning a run's HF exports (`WORKDIR/hf/step_N`): the newest `export.keep` stay, and the best.

A 7B export is ~15 GB and the CFT recipe exports every 2 updates, so a run's exports would fill a
disk (or a bucket) without this. The best export is the one `python -m cft_jax.eval select` named in
`WORKDIR/eval/selection.json` (its `best`); it is never deleted, whatever its age. Local or `gs://`.
"""

from __future__ import annotations

import json
import sys

from etils import epath

SELECTION = ("eval", "selection.json")  # the path cft_jax.evaluation.cli writes the selection to


def export_steps(hf_dir: epath.Path) -> list[int]:
    """The steps of the complete exports in `hf_dir` (a `step_N` with its config.json), oldest first."""
    steps = []
    for path in hf_dir.glob("step_*/config.json"):
        digits = path.parent.name.removeprefix("step_")
        if digits.isdigit():
            steps.append(int(digits))
    return sorted(steps)


def best_export(workdir: epath.Path) -> str | None:
    """The `step_N` name the run's selection marks best, or None when there is no selection."""
    path = workdir.joinpath(*SELECTION)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text()).get("best")
    except (ValueError, AttributeError):
        print(
            f"warning: {path} is not a selection JSON object; no export is kept as the best", file=sys.stderr
        )
        return None


def prune_exports(workdir: epath.Path, keep: int) -> list[str]:
    """Deletes all but the newest `keep` exports of `workdir/hf` (and the best); returns those deleted.

    `keep` <= 0 keeps everything. Only exports with a config.json count: the exporter writes it after
    the weights, so one still being written is neither counted nor deleted.
    """
    if keep <= 0:
        return []
    hf_dir = workdir / "hf"
    steps = export_steps(hf_dir)
    best = best_export(workdir)
    deleted = []
    for step in steps[:-keep]:
        name = f"step_{step}"
        if name == best:
            continue
        (hf_dir / name).rmtree()
        deleted.append(name)
    return deleted
