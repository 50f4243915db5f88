"""Reading and writing the model weights of a cft_jax Orbax checkpoint (`models/checkpoint_layout.py`).

Reading restores only the "model" item, against an abstract target built from `hf/config.json` (structure
and shapes) and the checkpoint's own metadata (dtypes), so a training checkpoint that also holds an
optimizer state exports the same way as a weights-only one. CKPT_DIR may be a `gs://` URI (`etils.epath`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from cft_jax.errors import InputError
from cft_jax.integrity import write_manifest
from cft_jax.models.checkpoint_layout import HF_ASSETS, MODEL_ITEM, write_hf_assets
from cft_jax.models.config import ConfigError, ModelConfig
from cft_jax.models.hf import param_leaves
from cft_jax.models.sharding import model_shardings
from cft_jax.models.transformer import Decoder
from cft_jax.remote import as_path


class OrbaxCheckpointError(InputError):
    """A checkpoint directory without the layout of `models/checkpoint_layout.py`; the message says what is
    missing."""


def checkpoint_dir(run_or_ckpt_dir: str | Path | epath.Path) -> epath.Path:
    """A run's `checkpoints/` when given its work directory, else the directory itself."""
    path = as_path(run_or_ckpt_dir)
    return path / "checkpoints" if (path / "checkpoints").is_dir() else path


def committed_steps(ckpt_dir: str | Path | epath.Path) -> list[int]:
    """The steps Orbax lists as committed (finalized) in CKPT_DIR: what a resume or an export reads."""
    ckpt_dir = as_path(ckpt_dir)
    if not ckpt_dir.is_dir():
        raise OrbaxCheckpointError(f"{ckpt_dir}: no such checkpoint directory")
    return sorted(ocp.path.step.checkpoint_steps(ckpt_dir))


def save_model(
    ckpt_dir: str | Path | epath.Path,
    model: Decoder,
    config: ModelConfig,
    *,
    hf_dir: str | Path | None = None,
    step: int = 0,
) -> epath.Path:
    """Saves the model's parameters as step `step` and the HF config/tokenizer files under `hf/`."""
    ckpt_dir = as_path(ckpt_dir)
    write_hf_assets(ckpt_dir, config.to_hf(), hf_dir)
    params = nnx.state(model, nnx.Param).to_pure_dict()
    with ocp.CheckpointManager(ckpt_dir) as manager:
        manager.save(step, args=ocp.args.Composite(**{MODEL_ITEM: ocp.args.StandardSave(params)}))
        manager.wait_until_finished()
    # Lists what was written, so `python -m cft_jax.convert verify` can check the copy later.
    write_manifest(
        ckpt_dir / str(step), step=step, process_index=jax.process_index(), process_count=jax.process_count()
    )
    return ckpt_dir


def load_params(
    ckpt_dir: str | Path | epath.Path, *, step: int | None = None, mesh: jax.sharding.Mesh | None = None
) -> tuple[dict[str, Any], ModelConfig]:
    """The "model" item of step `step` (default: the latest) as a pure dict of arrays, and its config.

    Without a mesh every parameter is restored onto the first device; with one, into the sharding the
    logical-axis rules give it.
    """
    ckpt_dir = as_path(ckpt_dir)
    config_path = ckpt_dir / HF_ASSETS / "config.json"
    if not config_path.is_file():
        raise OrbaxCheckpointError(
            f"{config_path}: missing; a cft_jax checkpoint keeps the model's HF config there "
            "(write checkpoints with cft_jax.convert.checkpoint.save_model or the trainer)"
        )
    try:
        # Parsed here, not by from_hf's path argument, which reads local files only.
        config = ModelConfig.from_hf(json.loads(config_path.read_text()))
    except json.JSONDecodeError as e:
        raise OrbaxCheckpointError(
            f"{config_path}: invalid JSON ({e.msg} at line {e.lineno}, column {e.colno}); the checkpoint's "
            "HF config is damaged: restore it from the HF checkpoint it was imported from"
        ) from None
    except ConfigError as e:
        raise ConfigError(f"{config_path}: {e}") from None
    with ocp.CheckpointManager(
        ckpt_dir, item_handlers={MODEL_ITEM: ocp.StandardCheckpointHandler()}
    ) as manager:
        step = manager.latest_step() if step is None else step
        if step is None or step not in manager.all_steps():
            raise OrbaxCheckpointError(
                f"{ckpt_dir}: no checkpoint step {'' if step is None else step} "
                f"(found steps {list(manager.all_steps())})"
            )
        stored = manager.item_metadata(step)[MODEL_ITEM]
        if stored is None:
            raise OrbaxCheckpointError(f"{ckpt_dir / str(step)}: no {MODEL_ITEM!r} item")
        stored_leaves = param_leaves(stored.tree)
        abstract = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0)))
        target_state = nnx.state(abstract, nnx.Param)
        if mesh is None:
            device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
            shardings = jax.tree.map(lambda _: device, target_state.to_pure_dict())
        else:
            shardings = model_shardings(target_state, mesh)
            shardings = shardings.to_pure_dict() if isinstance(shardings, nnx.State) else shardings
        expected = param_leaves(target_state)
        if stored_leaves and all(path[-1] in ("lora_a", "lora_b") for path in stored_leaves):
            raise OrbaxCheckpointError(
                f"{ckpt_dir / str(step) / MODEL_ITEM}: a LoRA run's checkpoint holds its adapters alone, "
                "not a model: rerun `python -m cft_jax.train` with the run's config, which resumes a "
                "finished run at its last step and exports it (export.lora=merged: full HF weights, "
                "adapter: PEFT's format)"
            )
        if set(expected) != set(stored_leaves):
            missing, unexpected = set(expected) - set(stored_leaves), set(stored_leaves) - set(expected)
            raise OrbaxCheckpointError(
                f"{ckpt_dir / str(step) / MODEL_ITEM}: parameters differ from {config_path}: "
                f"missing {sorted(missing)}, unexpected {sorted(unexpected)}"
            )
        target = jax.tree_util.tree_map_with_path(
            lambda path, leaf, sharding: jax.ShapeDtypeStruct(
                leaf.shape, stored_leaves[_key(path)].dtype or jnp.float32, sharding=sharding
            ),
            target_state.to_pure_dict(),
            shardings,
        )
        restored = manager.restore(
            step, args=ocp.args.Composite(**{MODEL_ITEM: ocp.args.StandardRestore(target)})
        )
    return restored[MODEL_ITEM], config


def _key(path: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", k)) for k in path)
