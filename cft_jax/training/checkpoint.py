"""Orbax checkpoints of a training run: one composite checkpoint per saved step.

Items of a checkpoint `WORKDIR/checkpoints/<step>/` (the layout of `cft_jax/convert/checkpoint.py`, whose
`hf/` directory beside the steps holds the model's config.json and tokenizer):
  model      the trainable parameters as a pure nested dict (our parameter paths, see
             cft_jax/models/CONTRACT.md), what `python -m cft_jax.convert export` reads;
  opt_state  the optax state (AdamW moments and counters);
  data_iter  every process's Grain iterator state, `process_{i}-of-{n}.json` (Grain's own layout), so
             each host's data resumes at its next unseen batch;
  meta       JSON: step, RNG key data, the resolved config, the model's HF config, data fingerprints
             and the code version.
Restoring takes the abstract arrays with the *current* run's shardings, so a checkpoint written on
one mesh shape restores onto another (the data iterator states need the same process count). Saves
are asynchronous; the newest `keep` stay. The directory is any `etils.epath` path: local, or `gs://`
(Orbax writes arrays through tensorstore, the JSON items through epath).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import signal
import threading
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from cft_jax.convert.checkpoint import HF_ASSETS, MODEL_ITEM, as_path
from cft_jax.models.hf import copy_tokenizer

ITEMS = (MODEL_ITEM, "opt_state", "data_iter", "meta")


def _process_file() -> str:
    return f"process_{jax.process_index()}-of-{jax.process_count()}.json"


class ProcessStateHandler(ocp.CheckpointHandler):
    """One JSON document per process, `process_{i}-of-{n}.json`: every host's own data iterator state.

    Orbax's JSON handler writes from process 0 only, which would lose the other hosts' positions in
    their shards of the data. The file names are Grain's checkpoint handler's.
    """

    def save(self, directory: epath.Path, args: ProcessStateSave) -> None:
        (directory / _process_file()).write_text(json.dumps(args.state))

    def restore(self, directory: epath.Path, args: ProcessStateRestore | None = None) -> dict[str, Any]:
        path = directory / _process_file()
        if not path.exists():
            written = sorted(p.name for p in directory.iterdir())
            raise FileNotFoundError(
                f"{path}: no data iterator state for this process (the checkpoint has {written}); resume "
                "with the process count that wrote it"
            )
        return json.loads(path.read_text())


@ocp.args.register_with_handler(ProcessStateHandler, for_save=True)
@dataclasses.dataclass
class ProcessStateSave(ocp.args.CheckpointArgs):
    state: dict[str, Any]


@ocp.args.register_with_handler(ProcessStateHandler, for_restore=True)
@dataclasses.dataclass
class ProcessStateRestore(ocp.args.CheckpointArgs):
    pass


class Checkpointer:
    """Saves and restores the composite checkpoints of one run directory (local or `gs://`)."""

    def __init__(self, directory: str | Path | epath.Path, *, keep: int, async_save: bool):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=True
        )
        self.directory = as_path(directory)
        self.manager = ocp.CheckpointManager(self.directory, item_names=ITEMS, options=options)

    def write_hf_assets(self, hf_config: dict[str, Any], tokenizer_dir: Path | epath.Path | None) -> None:
        """`hf/config.json` and the tokenizer files beside the steps: what `cft_jax.convert export` reads."""
        if jax.process_index() != 0:
            return
        assets = self.directory / HF_ASSETS
        assets.mkdir(parents=True, exist_ok=True)
        (assets / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
        if tokenizer_dir is not None:
            copy_tokenizer(tokenizer_dir, assets)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(
        self,
        step: int,
        *,
        params: nnx.State,
        opt_state: Any,
        data_iter_state: dict[str, Any],
        meta: dict[str, Any],
    ) -> None:
        """Starts saving step `step` (returns before the write finishes when saves are async)."""
        args = ocp.args.Composite(
            model=ocp.args.StandardSave(params.to_pure_dict()),
            opt_state=ocp.args.StandardSave(opt_state),
            data_iter=ProcessStateSave(data_iter_state),
            meta=ocp.args.JsonSave({**meta, "step": step}),
        )
        self.manager.save(step, args=args, force=True)

    def restore(
        self, step: int, *, abstract_params: nnx.State, abstract_opt_state: Any
    ) -> tuple[nnx.State, Any, dict[str, Any], dict[str, Any]]:
        """(params, opt_state, this process's data iterator state, meta) of `step`, laid out as the
        abstract arrays say.

        abstract_*: trees of jax.ShapeDtypeStruct carrying the target NamedShardings.
        """
        args = ocp.args.Composite(
            model=ocp.args.StandardRestore(abstract_params.to_pure_dict()),
            opt_state=ocp.args.StandardRestore(abstract_opt_state),
            data_iter=ProcessStateRestore(),
            meta=ocp.args.JsonRestore(),
        )
        restored = self.manager.restore(step, args=args)
        params = jax.tree.map(lambda x: x, abstract_params)
        nnx.replace_by_pure_dict(params, restored.model)
        return params, restored.opt_state, restored.data_iter, restored.meta

    def wait(self) -> None:
        """Blocks until every started save is on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def data_fingerprints(paths: tuple[str, ...]) -> dict[str, str]:
    """sha256 of each data file, local or `gs://` (directories and dataset names are recorded as given)."""
    fingerprints = {}
    for path in paths:
        if path.startswith("tfds:") or not epath.Path(path).is_file():
            fingerprints[path] = "not a file"
            continue
        digest = hashlib.sha256()
        with epath.Path(path).open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        fingerprints[path] = digest.hexdigest()
    return fingerprints


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
    """jax.ShapeDtypeStruct leaves carrying the given shardings (a restore target)."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


class TerminationFlag:
    """Set by SIGTERM (a preemption notice): the loop checkpoints at the end of the step and exits."""

    def __init__(self) -> None:
        self._event = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: self._event.set())

    def is_set(self) -> bool:
        return self._event.is_set()
