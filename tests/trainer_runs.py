"""What the tests that run `python -m cft_jax.train` as real processes share.

`SMALL_RUN`: the CPU demo config shrunk to 6 updates of 4 rows x 64 tokens, checkpointed at steps 3
and 6 synchronously, one log line per step (tests add what they vary). `trainer_env`: the
environment of such a process on CPU, with a persistent compilation cache shared by the test's
processes so only the first pays for compiling.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMALL_RUN = [
    "--config",
    str(REPO / "configs" / "cpu_demo.py"),
    "--config.data.seq_len=64",
    "--config.training.global_batch=4",
    "--config.training.max_steps=6",
    "--config.checkpoint.every_steps=3",
    "--config.checkpoint.async_save=false",
    "--config.logging.progress_bar=false",
]


def xla_flags(devices: int) -> str:
    """This process's XLA_FLAGS (e.g. a capped CPU ISA the suite runs under) with `devices` CPU devices."""
    kept = [f for f in os.environ.get("XLA_FLAGS", "").split() if "force_host_platform_device_count" not in f]
    return " ".join([*kept, f"--xla_force_host_platform_device_count={devices}"])


def trainer_env(cache: Path, *, devices: int = 1, extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus `extra`, for a trainer on `devices` CPU devices."""
    return {
        **os.environ,
        **(extra or {}),
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": xla_flags(devices),
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
