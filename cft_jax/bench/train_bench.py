"""Training throughput of one config: our jitted step vs transformers + torch on the same model and batch.

Both sides train the same architecture (random weights: throughput does not depend on them) on the
same batch: `global_batch / accumulation_steps` rows of `seq_len` tokens, the first half of each row
prompt (masked) and the second half target, with AdamW and the config's dtypes. A step is timed from
dispatch to its loss being on the host; the first steps (compilation, warm-up) are not counted.
"""

from __future__ import annotations

import dataclasses
import functools
import resource
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from cft_jax.config import TrainConfig, resolve_mesh
from cft_jax.models.config import ModelConfig
from cft_jax.train import compile_train_step, global_batch, optimizer_shardings
from cft_jax.training.mesh import make_mesh, model_shardings
from cft_jax.training.metrics import mfu, peak_flops_per_device
from cft_jax.training.optimizer import learning_rate_schedule, make_optimizer
from cft_jax.training.step import model_parts


def bench_batch(rows: int, seq_len: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """[rows, seq_len] int32: random tokens, one segment per row, loss on the second half."""
    rng = np.random.default_rng(seed)
    loss_mask = np.zeros((rows, seq_len), np.int32)
    loss_mask[:, seq_len // 2 :] = 1
    return {
        "input_ids": rng.integers(0, vocab, (rows, seq_len), dtype=np.int32),
        "loss_mask": loss_mask,
        "segment_ids": np.ones((rows, seq_len), np.int32),
        "positions": np.broadcast_to(np.arange(seq_len, dtype=np.int32), (rows, seq_len)).copy(),
    }


def model_config_of(config: TrainConfig) -> ModelConfig:
    return ModelConfig.from_hf(config.model.hf_path or config.model.init_config)


def bench_jax(config: TrainConfig, batch: dict[str, np.ndarray], steps: int, warmup: int) -> dict[str, Any]:
    """tokens/s, MFU and memory of our train step (one update per batch, no accumulation)."""
    from cft_jax.models.transformer import Decoder

    model_config = model_config_of(config)
    mesh = make_mesh(*resolve_mesh(config.mesh, jax.device_count()))
    dtypes = {
        "param_dtype": jnp.dtype(config.model.param_dtype),
        "compute_dtype": jnp.dtype(config.model.compute_dtype),
    }

    def init() -> Decoder:
        return Decoder(
            model_config,
            **dtypes,
            remat=config.model.remat,
            attention_impl=config.model.attention_impl,
            rngs=nnx.Rngs(0),
        )

    abstract = nnx.eval_shape(init)
    graphdef, abstract_state = nnx.split(abstract)
    state = jax.jit(lambda: nnx.state(init()), out_shardings=model_shardings(abstract_state, mesh))()
    graphdef, params, rest = model_parts(nnx.merge(graphdef, state))
    schedule = learning_rate_schedule(config.optimizer.lr, 1000, schedule="constant")
    o = config.optimizer
    tx = make_optimizer(
        schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay, clip_norm=o.clip_norm
    )
    opt_shardings = optimizer_shardings(tx, params, mesh)
    opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(params)
    batch_sharding = NamedSharding(mesh, PartitionSpec(("data", "fsdp"), None))
    # The batch is one micro-batch: time one update of it, without accumulation.
    one_update = dataclasses.replace(
        config, training=dataclasses.replace(config.training, accumulation_steps=1)
    )
    param_shardings = jax.tree.map(lambda x: x.sharding, params)
    step = compile_train_step(
        one_update, graphdef, rest, tx, schedule, param_shardings, opt_shardings, batch_sharding
    )
    device_batch = global_batch(batch, batch_sharding)
    compiled = step.lower(params, opt_state, device_batch).compile()
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        params, opt_state, metrics = step(params, opt_state, device_batch)
        float(metrics["loss"])
        if i >= warmup:
            times.append(time.perf_counter() - start)
    tokens = batch["input_ids"].size
    step_time = float(np.median(times))
    memory = compiled.memory_analysis()
    device = jax.devices()[0]
    peak = peak_flops_per_device(device, config.logging.peak_flops_per_device)
    tokens_per_s = tokens / step_time
    stats = device.memory_stats() or {}
    return {
        "framework": f"jax {jax.__version__} ({device.device_kind})",
        "step_time_s": step_time,
        "tokens_per_s": tokens_per_s,
        "mfu": mfu(
            model_config.flops_per_token(batch["input_ids"].shape[1]), tokens_per_s, jax.device_count(), peak
        ),
        "peak_memory_gib": (
            stats["peak_bytes_in_use"]
            if "peak_bytes_in_use" in stats
            else memory.argument_size_in_bytes + memory.temp_size_in_bytes + memory.output_size_in_bytes
        )
        / 2**30,
        "loss": float(metrics["loss"]),
    }


def bench_torch(config: TrainConfig, batch: dict[str, np.ndarray], steps: int, warmup: int) -> dict[str, Any]:
    """The same model, batch and optimizer through transformers + torch (eager, SDPA attention)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    model_config = model_config_of(config)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if config.model.compute_dtype == "bfloat16" else torch.float32
    hf_config = model_config.to_hf()
    hf_config.pop("architectures")
    hf = AutoConfig.for_model(**hf_config)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(hf, dtype=torch.float32, attn_implementation="sdpa").to(device)
    if config.model.remat != "none":
        model.gradient_checkpointing_enable()
    model.train()
    o = config.optimizer
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=o.lr, betas=(o.b1, o.b2), eps=o.eps, weight_decay=o.weight_decay
    )
    input_ids = torch.from_numpy(batch["input_ids"].astype(np.int64)).to(device)
    labels = input_ids.masked_fill(torch.from_numpy(batch["loss_mask"] == 0).to(device), -100)
    autocast = functools.partial(
        torch.autocast, device_type=device, dtype=dtype, enabled=dtype != torch.float32
    )
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        with autocast():
            loss = model(input_ids=input_ids, labels=labels).loss
        loss.backward()
        if o.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = loss.item()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    step_time = float(np.median(times))
    tokens_per_s = batch["input_ids"].size / step_time
    if device == "cuda":
        peak_memory = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak_memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # process-wide, KiB -> GiB
    peak = (
        peak_flops_per_device(jax.devices()[0], config.logging.peak_flops_per_device)
        if device == "cuda"
        else 0
    )
    return {
        "framework": f"torch {torch.__version__} + transformers ({device})",
        "step_time_s": step_time,
        "tokens_per_s": tokens_per_s,
        "mfu": mfu(model_config.flops_per_token(batch["input_ids"].shape[1]), tokens_per_s, 1, peak),
        "peak_memory_gib": peak_memory,
        "loss": loss_value,
    }
