"""Orbax checkpoints of a training run: one composite checkpoint per saved step.

Items of a checkpoint `WORKDIR/checkpoints/<step>/` (the layout of `cft_jax/models/checkpoint_layout.py`,
whose `hf/` directory beside the steps holds the model's config.json and tokenizer):
  model      the trainable parameters as a pure nested dict (our parameter paths, see
             cft_jax/models/CONTRACT.md), what `python -m cft_jax.convert export` reads;
  opt_state  the optax state (AdamW moments and counters);
  data_iter  every process's Grain iterator state, `process_{i}-of-{n}.json` (Grain's own layout), so
             each host's data resumes at its next unseen batch;
  meta       JSON: step, RNG key data, the resolved config, the model's HF config, data fingerprints
             and the code version.
Restoring takes the abstract arrays with the *current* run's shardings, so a checkpoint written on
one mesh shape restores onto another (the data iterator states need the same process count). Saves
are asynchronous; the newest `keep` stay, and so do the steps the trainer pins (`pinned`: the step
with the best validation accuracy, and those whose answers are still being graded). The directory is
any `etils.epath` path: local, or `gs://` (Orbax writes arrays through tensorstore, the JSON items
through epath).

Integrity (`cft_jax/integrity.py`): once Orbax has committed a step, a background thread
hashes this process's files of it into `<step>/integrity_process_{i}-of-{n}.json`. A resume
(`Checkpointer.restore_latest`) takes the newest step that matches its manifests and restores; a
step that does not, or whose restore raises, is moved into `quarantine/` beside the steps (never
deleted) with a warning, and the step before is tried.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils

from cft_jax import hub, integrity
from cft_jax.errors import InputError
from cft_jax.models.checkpoint_layout import MODEL_ITEM, write_hf_assets
from cft_jax.remote import as_path

ITEMS = (MODEL_ITEM, "opt_state", "data_iter", "meta")
QUARANTINE = "quarantine"
_QUARANTINE_README = (
    "Checkpoint steps that failed their integrity check or their restore, moved here by cft_jax's\n"
    "trainer instead of being deleted. `python -m cft_jax.convert verify` checks one; to retry it,\n"
    "move it back beside the other steps under its step number.\n"
)


class CheckpointIntegrityError(InputError):
    """No checkpoint of the run can be resumed from; the message says what was found and what to do."""


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


@dataclasses.dataclass(frozen=True)
class NewestAndPinned:
    """Orbax's preservation policy for a run: the newest `keep` steps, and every step `pinned()` names.

    Orbax asks it after each save commits (in its background thread when saves are async), so
    `pinned` must be safe to call from another thread: return an immutable snapshot.
    """

    keep: int
    pinned: Callable[[], Collection[int]]

    def should_preserve(self, checkpoints: Sequence[Any], *, context: Any) -> list[bool]:
        newest = set(sorted(c.step for c in checkpoints)[-self.keep :])
        pinned = set(self.pinned())
        return [c.step in newest or c.step in pinned for c in checkpoints]


class Checkpointer:
    """Saves and restores the composite checkpoints of one run directory (local or `gs://`).

    `pinned`: steps kept whatever `keep` says (called from Orbax's thread, see `NewestAndPinned`).
    """

    def __init__(
        self,
        directory: str | Path | epath.Path,
        *,
        keep: int,
        async_save: bool,
        pinned: Callable[[], Collection[int]] = frozenset,
    ):
        options = ocp.CheckpointManagerOptions(
            preservation_policy=NewestAndPinned(keep, pinned),
            enable_async_checkpointing=async_save,
            create=True,
        )
        self.directory = as_path(directory)
        self.manager = ocp.CheckpointManager(self.directory, item_names=ITEMS, options=options)
        self._manifest_writer: threading.Thread | None = None

    def write_hf_assets(self, hf_config: dict[str, Any], tokenizer_dir: Path | epath.Path | None) -> None:
        """`hf/config.json` and the tokenizer files beside the steps: what `cft_jax.convert export` reads."""
        if jax.process_index() == 0:
            write_hf_assets(self.directory, hf_config, tokenizer_dir)

    def latest_step(self) -> int | None:
        """The newest committed step; None (with a warning if steps were set aside earlier) if none."""
        latest = self.manager.latest_step()
        quarantine = self.directory / QUARANTINE
        if latest is None and jax.process_index() == 0 and quarantine.exists():
            kept = sorted(p.name for p in quarantine.iterdir() if p.name != "README.txt")
            if kept:
                _warn(
                    f"{self.directory}: no checkpoint to resume from, so training starts at step 0, while "
                    f"{quarantine} holds steps set aside earlier as corrupt: {', '.join(kept)}"
                )
        return latest

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
        # The previous step's manifest is finished first: Orbax may delete that step once this save
        # commits (`keep`), and it must not be deleted while it is being read.
        self._wait_for_manifest()
        self.manager.save(step, args=args, force=True)
        self._manifest_writer = threading.Thread(
            target=self._write_manifest, args=(step,), name=f"checkpoint-integrity-{step}", daemon=True
        )
        self._manifest_writer.start()

    def _write_manifest(self, step: int) -> None:
        """Runs in the background: waits for Orbax to commit `step`, then hashes this process's files."""
        try:
            # After this returns the step is committed on every process: Orbax's finalize ends with a
            # barrier of all processes (async) or runs inside save() before one (sync).
            self.manager.wait_until_finished()
        except BaseException:  # noqa: BLE001 - the failed save raises in the main thread as well
            return
        try:
            integrity.write_manifest(
                self.directory / str(step),
                step=step,
                process_index=jax.process_index(),
                process_count=jax.process_count(),
            )
        except Exception as error:  # noqa: BLE001 - a missing manifest leaves the step usable, unverified
            _warn(
                f"{self.directory / str(step)}: could not write process {jax.process_index()}'s integrity "
                f"manifest ({type(error).__name__}: {error}); the step stays usable but unverified"
            )

    def _wait_for_manifest(self) -> None:
        if self._manifest_writer is not None:
            self._manifest_writer.join()
            self._manifest_writer = None

    def verify(self, step: int) -> integrity.Verdict:
        """Step `step` checked against its manifests, the same verdict on every process.

        Each process reads its share of the manifests (a collective in a multi-process run). A read
        that fails for another reason than a missing file gives status "error": storage trouble
        says nothing about the checkpoint.
        """
        try:
            local = integrity.verify(
                self.directory / str(step), share=(jax.process_index(), jax.process_count())
            )
        except Exception as error:  # noqa: BLE001 - every process must reach the gather below
            local = integrity.Verdict(
                "error", [f"process {jax.process_index()}: {type(error).__name__}: {error}"]
            )
        # A few findings say enough, and keep the gathered text within its fixed size.
        problems = [p[:300] for p in local.problems[:4]]
        if len(local.problems) > 4:
            problems.append(f"{len(local.problems) - 4} more files like these")
        local = dataclasses.replace(local, problems=problems)
        return integrity.Verdict.combine(map(integrity.Verdict.from_json, _gather_texts(local.to_json())))

    def restore_latest(
        self, *, abstract_params: nnx.State, abstract_opt_state: Any
    ) -> tuple[int, nnx.State, Any, dict[str, Any], dict[str, Any]]:
        """(step, params, opt_state, this process's data iterator state, meta) of the newest step that
        passes its integrity check and restores.

        Newest first. A step that fails its check (a file missing, or of another size or digest), or
        that is unverified and fails to restore (any exception from Orbax / tensorstore), is moved
        into `quarantine/` with a warning naming the step, the reason and the new place, and the step
        before is tried; the resume then says how many steps of work were lost. Raises
        CheckpointIntegrityError, moving nothing further, when a step matches its manifests yet fails
        to restore (its bytes are intact: it does not fit this run, e.g. another model, optimizer or
        process count, and older steps would not either), when storage cannot be read, and when no
        step is left: starting from scratch is the operator's call, not something to do silently
        next to a quarantine holding the run's work.
        abstract_*: as for `restore`. Every process takes the same decisions (collectives).
        """
        steps = sorted(self.manager.all_steps(), reverse=True)
        set_aside: list[str] = []
        for step in steps:
            verdict = self.verify(step)
            if verdict.status == "error":
                raise CheckpointIntegrityError(
                    f"{self.directory / str(step)}: could not read the checkpoint to check it "
                    f"({'; '.join(verdict.problems)}); nothing was moved, rerun once the storage is "
                    "readable" + _moved_note(set_aside)
                )
            if verdict.status == "bad":
                set_aside.append(self._set_aside(step, "; ".join(verdict.problems)))
                continue
            if verdict.status == "unverified" and jax.process_index() == 0:
                _warn(
                    f"{self.directory / str(step)}: not verified ({'; '.join(verdict.problems)}); "
                    "restoring it as Orbax committed it"
                )
            restored, errors = self._try_restore(step, abstract_params, abstract_opt_state)
            if errors and verdict.status == "ok":
                raise CheckpointIntegrityError(
                    f"{self.directory / str(step)}: step {step} matches its integrity manifests "
                    f"({verdict.files} files), yet restoring it failed: {errors[0]}. Its files are "
                    "intact, so it does not fit this run: resume with the model, optimizer and process "
                    "count that wrote it, or start afresh with --config.checkpoint.resume=false"
                    + _moved_note(set_aside)
                )
            if errors:
                set_aside.append(self._set_aside(step, f"restoring it failed: {errors[0]}"))
                continue
            if set_aside:
                # Orbax lists the steps once: it must forget the moved ones (not keep or save over
                # them), on every process once process 0 has moved them.
                multihost_utils.sync_global_devices("cft_jax: checkpoints set aside")
                self.manager.reload()
                if jax.process_index() == 0:
                    _warn(
                        f"resuming from step {step} instead of step {steps[0]}: {steps[0] - step} "
                        f"step{'s' * (steps[0] - step != 1)} of work lost, trained again now"
                        + _moved_note(set_aside)
                    )
            return (step, *restored)
        raise CheckpointIntegrityError(
            f"{self.directory}: none of the checkpoint steps {sorted(steps)} passes its integrity check "
            f"and restores{_moved_note(set_aside)}. Nothing was deleted. A rerun now trains from step 0; "
            "to retry a step instead, move it back beside the others under its step number"
        )

    def _try_restore(
        self, step: int, abstract_params: nnx.State, abstract_opt_state: Any
    ) -> tuple[tuple[nnx.State, Any, dict[str, Any], dict[str, Any]] | None, list[str]]:
        """(`restore`'s result, []), or (None, every process's error) when any process failed."""
        try:
            restored, error = (
                self.restore(step, abstract_params=abstract_params, abstract_opt_state=abstract_opt_state),
                "",
            )
        except Exception as exception:  # noqa: BLE001 - whatever Orbax or tensorstore raise
            restored, error = None, _describe(exception)
        errors = [e for e in _gather_texts(error[:2000]) if e]
        return (None, errors) if errors else (restored, [])

    def _set_aside(self, step: int, reason: str) -> str:
        """Moves step `step` into `quarantine/` (process 0: a rename; on gs:// a move per object)."""
        source = self.directory / str(step)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.directory / QUARANTINE / f"{step}.corrupt-{stamp}"
        if jax.process_index() == 0:
            target.parent.mkdir(parents=True, exist_ok=True)
            # Also makes the directory exist on gs://, where a rename needs its target's parent.
            (target.parent / "README.txt").write_text(_QUARANTINE_README)
            suffix = 1
            while target.exists():  # a second bad copy of the step within the same second
                target, suffix = target.with_name(f"{step}.corrupt-{stamp}-{suffix}"), suffix + 1
            source.rename(target)
            _warn(
                f"checkpoint step {step} ({source}) is corrupt: {reason}; moved to {target} "
                "(kept, not deleted)"
            )
            return f"step {step} -> {target}"
        return f"step {step} -> {target.parent} (process 0 names it)"

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

    def restore_params(self, step: int, *, abstract_params: nnx.State) -> nnx.State:
        """The trainable parameters of `step` alone (no optimizer state), laid out as `abstract_params`
        says: what an export of an earlier step needs. Waits for the saves in flight first."""
        self.wait()
        args = ocp.args.Composite(model=ocp.args.StandardRestore(abstract_params.to_pure_dict()))
        restored = self.manager.restore(step, args=args)
        params = jax.tree.map(lambda x: x, abstract_params)
        nnx.replace_by_pure_dict(params, restored.model)
        return params

    def wait(self) -> None:
        """Blocks until every started save is on disk, its integrity manifest included."""
        self.manager.wait_until_finished()
        self._wait_for_manifest()

    def close(self) -> None:
        self._wait_for_manifest()
        self.manager.close()


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _describe(error: BaseException | None) -> str:
    """The error and its causes, a line each at most: tensorstore's messages carry a page-long spec."""
    clauses = []
    while error is not None and len(clauses) < 4:
        text = str(error).split(" See full TensorStore details")[0].strip()
        clauses.append(f"{type(error).__name__}: {text.splitlines()[0][:300] if text else ''}")
        error = error.__cause__ or error.__context__
    return ", caused by ".join(clauses)


def _moved_note(set_aside: list[str]) -> str:
    return f" (moved aside, kept: {', '.join(set_aside)})" if set_aside else ""


def _gather_texts(text: str) -> list[str]:
    """Every process's `text`, in process order: a collective in a multi-process run."""
    if jax.process_count() == 1:
        return [text]
    # A fixed size, the same on every process; UTF-8 text has no NUL bytes to confuse the padding.
    data = np.zeros(4096, np.uint8)
    encoded = text.encode()[: data.size]
    data[: len(encoded)] = np.frombuffer(encoded, np.uint8)
    rows = np.asarray(multihost_utils.process_allgather(data))
    return [bytes(row).rstrip(b"\0").decode(errors="replace") for row in rows]


def data_fingerprints(paths: tuple[str, ...]) -> dict[str, str]:
    """sha256 of each data file, local or `gs://`, or of a hub dataset id's files (in the hub cache by now);
    directories and dataset names are recorded as given."""
    fingerprints = {}
    for path in paths:
        files = hub.data_files(path) if hub.is_hub(path) else [path]
        if path.startswith("tfds:") or not all(epath.Path(file).is_file() for file in files):
            fingerprints[path] = "not a file"
            continue
        digest = hashlib.sha256()
        for file in files:
            with epath.Path(file).open("rb") as f:
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
