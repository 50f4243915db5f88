"""Weights & Biases as a metrics sink beside JSONL and TensorBoard (`logging.wandb_project`).

Imported only when a project is set, on process 0 only (`MetricsWriter`), so a run that does not
ask for W&B never imports it. The run logs the scalars the other sinks get, at the same steps, and
the resolved config as its run config. The API key is W&B's business: it reads WANDB_API_KEY or
the `wandb login` file itself, and nothing here passes, stores or logs one. WANDB_MODE=offline
writes the run under WANDB_DIR (else the work dir) for a later `wandb sync`, with no network.

A resumed training run continues its W&B run: the id is kept in `workdir/wandb_run_id`. W&B steps
only go forward: the steps a crashed run had logged past its last checkpoint, which the resumed run
logs again, are dropped by W&B with a warning, so for those few steps its curve keeps the crashed
run's values (metrics.jsonl and TensorBoard hold the resumed run's). For the same reason a
validation score, which arrives some steps after the step it scored, is logged into the current
step with that step as `val_step`, the axis W&B plots `val_accuracy` against (`define_metric`).
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from etils import epath

from cft_jax.remote import is_remote

RUN_ID_FILE = "wandb_run_id"
LATE = ("val_accuracy",)  # metrics written after later steps (cft_jax.training.validation)


class WandbSink:
    """One W&B run: `write` logs a step's scalars, `close` finishes the run."""

    def __init__(
        self,
        workdir: epath.Path,
        *,
        project: str,
        entity: str = "",
        name: str = "",
        config: dict[str, Any] | None = None,
        initial_step: int = 0,
    ):
        import wandb

        id_file = workdir / RUN_ID_FILE
        resumed = initial_step > 0 and id_file.exists()
        run_id = id_file.read_text().strip() if resumed else secrets.token_hex(4)  # W&B's id alphabet
        id_file.write_text(run_id + "\n")
        # WANDB_DIR, else the work dir where it is local (a gs:// one cannot hold them: then ./wandb). Passed
        # each time: W&B reads its environment once per process.
        local_dir = os.environ.get("WANDB_DIR") or (None if is_remote(workdir) else str(workdir))
        self._run = wandb.init(
            project=project,
            entity=entity or None,
            name=name or None,
            id=run_id,
            resume="allow",
            dir=local_dir,
            config=config or {},
            # The console is a progress bar redrawn in place: a noisy log; its numbers are logged anyway.
            settings=wandb.Settings(console="off"),
        )
        self._run.define_metric("val_step")
        for name in LATE:
            self._run.define_metric(name, step_metric="val_step")

    @property
    def run_dir(self) -> str:
        """Where W&B keeps this run's files (its .wandb transaction log among them)."""
        return self._run.dir

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if any(name in metrics for name in LATE):
            self._run.log({**metrics, "val_step": step}, commit=False)
        else:
            self._run.log(dict(metrics), step=step)

    def close(self) -> None:
        self._run.finish()
