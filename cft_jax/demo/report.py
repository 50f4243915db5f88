"""The demo's report: a markdown before/after table and a PNG of the training and held-out loss curves."""

from __future__ import annotations

import json
from pathlib import Path

from cft_jax.demo.measure import Measurement


def read_metrics(metrics_path: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """([(step, train loss)], [(step, validation loss)]) from the trainer's metrics.jsonl."""
    train, held_out = [], []
    for line in metrics_path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if "loss" in row:
            train.append((row["step"], row["loss"]))
        if "eval_loss" in row:
            held_out.append((row["step"], row["eval_loss"]))
    return train, held_out


def plot_losses(metrics_path: Path, before: float, after: float, out_png: Path) -> None:
    """Train loss per step, validation loss at its steps, and the test loss before (step 0) and after."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt

    train, held_out = read_metrics(metrics_path)
    last_step = train[-1][0] if train else 0
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss (batch)", alpha=0.7)
    if held_out:
        ax.plot(*zip(*held_out, strict=True), "o-", label="validation loss")
    ax.plot([0, last_step], [before, after], "s--", label="test critique loss (before / after)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("mean target-token NLL")
    ax.set_title("CFT of SmolLM2-135M-Instruct on RealCritic critiques")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def _verdict_cell(m: Measurement) -> str:
    low, high = (100 * x for x in m.accuracy_interval)
    return f"{m.verdict_correct}/{m.verdicts} ({100 * m.accuracy:.1f}%, 95% CI {low:.1f}-{high:.1f}%)"


def write_report(
    out_md: Path,
    *,
    before: Measurement,
    after: Measurement,
    png_name: str,
    settings: dict[str, object],
    timings: dict[str, float],
    paths: dict[str, Path],
) -> None:
    """The markdown report: settings, the before/after table, step timings and where the files are."""
    rows = [
        ("held-out critique loss (test, lower is better)", f"{before.loss:.4f}", f"{after.loss:.4f}"),
        ("verdict accuracy (missing conclusion = wrong)", _verdict_cell(before), _verdict_cell(after)),
        (
            "... on solutions labelled correct",
            f"{before.verdict_correct_on_right}/{before.labelled_right}",
            f"{after.verdict_correct_on_right}/{after.labelled_right}",
        ),
        (
            "... on solutions labelled wrong",
            f"{before.verdict_correct_on_wrong}/{before.labelled_wrong}",
            f"{after.verdict_correct_on_wrong}/{after.labelled_wrong}",
        ),
        ("critiques with no parsable conclusion", str(before.verdict_missing), str(after.verdict_missing)),
        ("generated tokens", str(before.generated_tokens), str(after.generated_tokens)),
    ]
    lines = [
        "# CFT demo: SmolLM2-135M-Instruct on RealCritic critiques",
        "",
        "| measurement | base model | after CFT |",
        "|---|---|---|",
        *(f"| {name} | {b} | {a} |" for name, b, a in rows),
        "",
        f"Held-out loss over {before.loss_examples} test critiques ({before.loss_tokens} target tokens); "
        f"verdicts on {before.verdicts} held-out labelled GSM8K model solutions "
        f"({before.labelled_right} correct, {before.labelled_wrong} wrong), with 95% Wilson intervals: "
        "half the solutions are correct, so an interval that holds 50% is no evidence of judging better "
        "than a coin.",
        "",
        f"![loss curves]({png_name})",
        "",
        "## Settings",
        "",
        *(f"- {key}: {value}" for key, value in settings.items()),
        "",
        "## Wall time",
        "",
        "| step | seconds |",
        "|---|---|",
        *(f"| {name} | {seconds:.1f} |" for name, seconds in timings.items()),
        "",
        "## Files",
        "",
        *(f"- {name}: `{path}`" for name, path in paths.items()),
        "",
    ]
    out_md.write_text("\n".join(lines), encoding="utf-8")
