"""The train state and the compiled step, built in one place, around real or abstract parameters.

`TrainStep` is what defines the step: the model's graph, the optimizer and its schedule, and the
shardings of the parameters, the optimizer state and the batch. The trainer builds it around real
parameters (HF weights or `init_params`); `--aot`, the bench and the tests build it around abstract
ones (`abstract_params`: shapes, dtypes and shardings, no memory), so what they compile is exactly
the trainer's step. Every call and lowering runs under the step's mesh (`jax.set_mesh`), which the
model's activation constraints and the fused attention kernels (shard_map) read while tracing.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from cft_jax.config import TrainConfig
from cft_jax.models.config import ModelConfig
from cft_jax.models.lora import LoRAParam, LoRASpec
from cft_jax.models.sharding import model_shardings
from cft_jax.models.transformer import Decoder
from cft_jax.training.compiler_options import step_compiler_options
from cft_jax.training.optimizer import learning_rate_schedule, optimizer_from_config, warmup_steps
from cft_jax.training.step import eval_step, model_parts, train_step

BATCH_AXES = ("data", "fsdp")
BATCH_KEYS = ("input_ids", "loss_mask", "segment_ids", "positions")


def lora_spec(config: TrainConfig) -> LoRASpec | None:
    """The config's LoRA adapters, or None for full fine-tuning (lora.rank = 0)."""
    lora = config.lora
    if lora.rank == 0:
        return None
    return LoRASpec(rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout, targets=tuple(lora.targets))


def decoder_options(config: TrainConfig) -> dict[str, Any]:
    """The `Decoder` keyword arguments the config's model section sets (dtypes, remat, attention)."""
    section = config.model
    return {
        "param_dtype": jnp.dtype(section.param_dtype),
        "compute_dtype": jnp.dtype(section.compute_dtype),
        "remat": section.remat,
        "attention_impl": section.attention_impl,
    }


def _decoder(config: TrainConfig, model_config: ModelConfig):
    return lambda: Decoder(
        model_config, **decoder_options(config), lora=lora_spec(config), rngs=nnx.Rngs(config.training.seed)
    )


def _with_shardings(state: nnx.State, mesh: Mesh) -> nnx.State:
    shardings = model_shardings(state, mesh)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)


def abstract_params(
    config: TrainConfig, model_config: ModelConfig, mesh: Mesh
) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """(graphdef, trainable parameters, the rest), as jax.ShapeDtypeStructs carrying their shardings:
    no memory. With LoRA the trainable ones are the adapters and the rest holds the frozen base."""
    graphdef, params, rest = model_parts(nnx.eval_shape(_decoder(config, model_config)))
    return graphdef, _with_shardings(params, mesh), _with_shardings(rest, mesh)


def init_params(
    config: TrainConfig, model_config: ModelConfig, mesh: Mesh
) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """(graphdef, randomly initialised parameters, the rest), initialised straight into their shardings:
    no host ever holds the whole model."""
    init = _decoder(config, model_config)
    graphdef, abstract_state = nnx.split(nnx.eval_shape(init))
    with jax.set_mesh(mesh):
        state = jax.jit(lambda: nnx.state(init()), out_shardings=model_shardings(abstract_state, mesh))()
    return model_parts(nnx.merge(graphdef, state))


def add_adapters(
    config: TrainConfig, model_config: ModelConfig, mesh: Mesh, base: nnx.State
) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """(graphdef of the LoRA model, its freshly initialised adapters, the rest: `base`'s parameters,
    frozen), for a base loaded without adapters (`load_hf`). The adapters are created in their
    shardings; the base's arrays are used as they are."""
    init = _decoder(config, model_config)
    graphdef, adapters, rest = nnx.split(nnx.eval_shape(init), LoRAParam, ...)
    with jax.set_mesh(mesh):
        adapters = jax.jit(
            lambda: nnx.state(init(), LoRAParam), out_shardings=model_shardings(adapters, mesh)
        )()
    rest = jax.tree.map(lambda x: x, rest)
    nnx.replace_by_pure_dict(rest, base.to_pure_dict())
    return graphdef, adapters, rest


def schedule_of(config: TrainConfig, total_steps: int) -> optax.Schedule:
    """The config's learning-rate schedule over `total_steps` updates."""
    o = config.optimizer
    return learning_rate_schedule(
        o.lr,
        total_steps,
        schedule=o.schedule,
        warmup=warmup_steps(total_steps, o.warmup_ratio, o.warmup_steps),
        min_lr_ratio=o.min_lr_ratio,
    )


def optimizer_shardings(tx: optax.GradientTransformation, params: nnx.State, mesh: Mesh) -> Any:
    """The optimizer state's shardings: moments laid out as their parameters, counters replicated."""
    param_shardings = jax.tree.map(lambda x: x.sharding, params)
    abstract = jax.eval_shape(tx.init, params)
    replicated = NamedSharding(mesh, PartitionSpec())
    return optax.tree_map_params(
        tx, lambda _, sharding: sharding, abstract, param_shardings, transform_non_params=lambda _: replicated
    )


def global_batch(host_batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """This host's rows [per_host_batch, seq] -> one global array per key [global_batch, seq]."""
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in host_batch.items()}


@dataclasses.dataclass(frozen=True)
class TrainStep:
    """The jitted update and eval step of one run, with the shardings they take and give.

    Build it with `TrainStep.build`; call it as `step(params, opt_state, batch)`.
    """

    mesh: Mesh
    graphdef: nnx.GraphDef
    rest: nnx.State
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    param_shardings: Any
    opt_shardings: Any
    rest_shardings: Any
    accumulation_steps: int
    vocab_chunk: int
    dropout_seed: int | None  # LoRA dropout's seed (None: no dropout)
    compiler_options: dict[str, Any]  # the update's XLA options (training.compiler_options)

    @classmethod
    def build(
        cls,
        config: TrainConfig,
        mesh: Mesh,
        graphdef: nnx.GraphDef,
        rest: nnx.State,
        params: nnx.State,
        total_steps: int,
        *,
        tx: optax.GradientTransformation | None = None,
    ) -> TrainStep:
        """The step for `params` and `rest` (real arrays or ShapeDtypeStructs, already carrying their
        shardings); `tx` defaults to the config's AdamW over `total_steps` updates."""
        schedule = schedule_of(config, total_steps)
        tx = tx or optimizer_from_config(config.optimizer, schedule)
        lora = lora_spec(config)
        return cls(
            mesh=mesh,
            graphdef=graphdef,
            rest=rest,
            tx=tx,
            schedule=schedule,
            param_shardings=jax.tree.map(lambda x: x.sharding, params),
            opt_shardings=optimizer_shardings(tx, params, mesh),
            rest_shardings=jax.tree.map(lambda x: x.sharding, rest),
            accumulation_steps=config.training.accumulation_steps,
            vocab_chunk=config.training.vocab_chunk,
            dropout_seed=config.training.seed if lora is not None and lora.dropout > 0 else None,
            compiler_options=step_compiler_options(
                config.training.compiler_options, mesh.devices.flat[0].device_kind
            ),
        )

    @property
    def batch_sharding(self) -> NamedSharding:
        """[global_batch, seq] arrays: rows split over ("data", "fsdp")."""
        return NamedSharding(self.mesh, PartitionSpec(BATCH_AXES, None))

    def abstract_batch(self, rows: int, seq_len: int) -> dict[str, jax.ShapeDtypeStruct]:
        """A global batch of `rows` x `seq_len` int32 arrays, as the pipeline yields, without data."""
        spec = jax.ShapeDtypeStruct((rows, seq_len), jnp.int32, sharding=self.batch_sharding)
        return dict.fromkeys(BATCH_KEYS, spec)

    def abstract_opt_state(self, params: nnx.State) -> Any:
        """The optimizer state of `params` as ShapeDtypeStructs with their shardings."""
        abstract = jax.eval_shape(self.tx.init, params)
        return jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, self.opt_shardings
        )

    def init_optimizer(self, params: nnx.State) -> Any:
        """AdamW's zero state for `params`, created in its shardings."""
        return jax.jit(self.tx.init, out_shardings=self.opt_shardings)(params)

    @functools.cached_property
    def update_fn(self):
        """The jitted update (params, opt_state, batch, rest) -> (params, opt_state, metrics); trace it
        under `jax.set_mesh(self.mesh)` (`__call__` and `lower` do). `rest` (a LoRA run's frozen base)
        is an argument, not a constant baked into the program, and is not donated."""
        step = functools.partial(
            train_step,
            graphdef=self.graphdef,
            tx=self.tx,
            schedule=self.schedule,
            accumulation_steps=self.accumulation_steps,
            vocab_chunk=self.vocab_chunk,
            dropout_seed=self.dropout_seed,
        )
        replicated = NamedSharding(self.mesh, PartitionSpec())
        return jax.jit(
            step,
            in_shardings=(self.param_shardings, self.opt_shardings, self.batch_sharding, self.rest_shardings),
            out_shardings=(self.param_shardings, self.opt_shardings, replicated),
            donate_argnums=(0, 1),
            compiler_options=self.compiler_options or None,
        )

    @functools.cached_property
    def _eval(self):
        step = functools.partial(eval_step, graphdef=self.graphdef, vocab_chunk=self.vocab_chunk)
        return jax.jit(step, in_shardings=(self.param_shardings, self.batch_sharding, self.rest_shardings))

    def __call__(self, params: nnx.State, opt_state: Any, batch: dict[str, jax.Array]):
        """One update: (params, opt_state, batch) -> (params, opt_state, metrics); the state is donated."""
        with jax.set_mesh(self.mesh):
            return self.update_fn(params, opt_state, batch, self.rest)

    def lower(self, params: nnx.State, opt_state: Any, batch: dict[str, Any]) -> jax.stages.Lowered:
        """The update lowered for these (real or abstract) arguments; `.compile()` it."""
        with jax.set_mesh(self.mesh):
            return self.update_fn.lower(params, opt_state, batch, self.rest)

    def evaluate(self, params: nnx.State, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Summed held-out NLL and target tokens of one batch."""
        with jax.set_mesh(self.mesh):
            return self._eval(params, batch, self.rest)
