"""The training loop's bookkeeping: which steps log, evaluate, save and export, and each step's
numbers read one step late, so the host never waits for the device before dispatching the next step.

JAX dispatches a jitted step asynchronously: the call returns at once and the arrays fill in when the
device is done. Turning a step's metrics into Python floats blocks until then, so reading them right
after the call would leave the device idle while the host fetches and shards the next batch. The
trainer therefore dispatches step n+1 first and reads step n's metrics after (`StepMeter.swap`),
except at the steps whose state it needs at once (evaluation, validation, checkpoints, exports, a
SIGTERM), where it reads the step it just ran (`StepMeter.take`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from cft_jax.training import metrics as metrics_lib


@dataclasses.dataclass(frozen=True)
class Policy:
    """When the loop does what, from the config's every_steps settings (0: never)."""

    total_steps: int  # the schedule's length
    halt_at: int  # the step this run stops after (training.halt_at_step, else total_steps)
    log_every: int
    eval_every: int
    validate_every: int  # validation accuracy (evaluation.generate_every_steps)
    save_every: int
    export_every: int
    export_at_end: bool

    @classmethod
    def from_config(cls, config: Any, total_steps: int) -> Policy:
        return cls(
            total_steps=total_steps,
            halt_at=min(config.training.halt_at_step or total_steps, total_steps),
            log_every=config.logging.every_steps,
            eval_every=config.evaluation.every_steps,
            validate_every=config.evaluation.generate_every_steps,
            save_every=config.checkpoint.every_steps,
            export_every=config.export.every_steps,
            export_at_end=config.export.at_end,
        )

    def logs(self, step: int) -> bool:
        return step % self.log_every == 0

    def evaluates(self, step: int) -> bool:
        return bool(self.eval_every) and step % self.eval_every == 0

    def validates(self, step: int) -> bool:
        """Validation accuracy at this step (never at step 0: the best must be a step with a checkpoint)."""
        return bool(self.validate_every) and step > 0 and step % self.validate_every == 0

    def saves(self, step: int) -> bool:
        """Checkpoint steps; every validated step is one, so whichever turns out best can be kept."""
        every = bool(self.save_every) and step % self.save_every == 0
        return every or self.validates(step) or step == self.halt_at

    def exports(self, step: int) -> bool:
        return bool(self.export_every) and step % self.export_every == 0

    def needs_state(self, step: int) -> bool:
        """Whether this step's parameters are used at once (so its metrics are read at once too)."""
        return self.evaluates(step) or self.validates(step) or self.saves(step) or self.exports(step)

    def exports_at_end(self, step: int) -> bool:
        """The final export, unless the run stopped early or the last step was exported already."""
        return self.export_at_end and step == self.total_steps and not self.exports(step)


def read_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Device metrics -> floats; blocks until the step that produced them is done."""
    return {name: float(value) for name, value in metrics.items()}


class StepMeter:
    """Holds the last dispatched step's metrics until they are read; adds wall time, throughput, MFU.

    A step's `step_time_s` is the wall time between its numbers and the previous step's becoming
    available: with steps dispatched ahead, that is the rate the run really goes at (the first one
    includes compilation).
    """

    def __init__(self, tokens_per_step: int, flops_per_token: float, num_devices: int, peak_flops: float):
        self.tokens_per_step = tokens_per_step
        self.flops_per_token = flops_per_token
        self.num_devices = num_devices
        self.peak_flops = peak_flops
        self._pending: tuple[int, dict[str, Any]] | None = None
        self._last_read = time.perf_counter()

    def swap(self, step: int, metrics: dict[str, Any]) -> tuple[int, dict[str, float]] | None:
        """Keeps step `step`'s metrics for later; returns the previous step's, read now (or None)."""
        previous = self.take()
        self._pending = (step, metrics)
        return previous

    def take(self) -> tuple[int, dict[str, float]] | None:
        """(step, its metrics as floats) of the step waiting to be read, or None when there is none."""
        if self._pending is None:
            return None
        step, metrics = self._pending
        self._pending = None
        record = read_metrics(metrics)
        now = time.perf_counter()
        record["step_time_s"] = now - self._last_read
        self._last_read = now
        record["tokens_per_s"] = self.tokens_per_step / record["step_time_s"]
        record["mfu"] = metrics_lib.mfu(
            self.flops_per_token, record["tokens_per_s"], self.num_devices, self.peak_flops
        )
        return step, record
