"""Run by test_resume.py in a fresh process: take k batches and save the states, or restore and continue.

    python resume_worker.py save CONFIG_JSON K STATE_JSON
    python resume_worker.py restore CONFIG_JSON N STATE_JSON OUT_NPZ

Both simulated hosts (process_index 0 and 1 of 2) run side by side, each with its own iterator.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from cft_jax.config import DataConfig
from cft_jax.data.pipeline import make_iterator


def main() -> None:
    mode, cfg_json, n, state_path = sys.argv[1:5]
    cfg = DataConfig(**json.loads(cfg_json))
    its = [make_iterator(cfg, per_host_batch=2, process_index=h, process_count=2) for h in (0, 1)]
    if mode == "save":
        for it in its:
            for _ in range(int(n)):
                next(it)
        with open(state_path, "w") as f:
            json.dump([it.get_state() for it in its], f)
    else:
        with open(state_path) as f:
            for it, state in zip(its, json.load(f), strict=True):
                it.set_state(state)
        arrays = {}
        for h, it in enumerate(its):
            for i in range(int(n)):
                arrays.update({f"{h}_{i}_{k}": v for k, v in next(it).items()})
        np.savez(sys.argv[5], **arrays)
    for it in its:
        it.close()


if __name__ == "__main__":
    main()
