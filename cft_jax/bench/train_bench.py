"""Training throughput of one config: our jitted step vs transformers + torch on the same model and batch.

Both sides train the same architecture (random weights: throughput does not depend on them) on the
same batch of packed rows (`bench_batch`: several examples per row, segment ids, positions restarting
per example), with AdamW and the config's dtypes. Ours attends within segments through the config's
`attention_impl`; torch gets `position_ids` and, through SDPA (which takes no segment ids), a
block-diagonal causal mask, or FlashAttention-2's varlen path where installed on a GPU. A step is timed
from dispatch to its loss being on the host; compilation (ours) / the first step (torch) and the
warm-up steps are reported apart and not counted in the median.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import resource
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cft_jax.config import TrainConfig, resolve_mesh
from cft_jax.data.packing import make_row
from cft_jax.hub import config_file
from cft_jax.models.attention_kernels import choose_attention, target_backend
from cft_jax.models.config import ModelConfig
from cft_jax.models.sharding import make_mesh
from cft_jax.training.metrics import mfu, peak_flops_per_device
from cft_jax.training.state import TrainStep, global_batch, init_params


def bench_batch(rows: int, seq_len: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """[rows, seq_len] int32 packed rows, as the data pipeline builds them (`packing.make_row`).

    Each row holds 2 to 4 examples of random lengths (within a factor of 3 of each other) and a
    padding tail of up to 1/64 of the row, as first-fit packing leaves; `segment_ids` number the
    examples 1, 2, ... (0 on padding), `positions` restart at 0 in each, and the loss is on the last
    60% of each example (its critique), none on the prompt or the padding.
    """
    rng = np.random.default_rng(seed)
    packed = []
    for _ in range(rows):
        used = seq_len - int(rng.integers(0, seq_len // 64 + 1))
        count = int(rng.integers(2, 5))
        weights = rng.uniform(0.5, 1.5, count)
        lengths = np.floor(weights / weights.sum() * used).astype(int)
        lengths[-1] += used - lengths.sum()
        examples = []
        for n in lengths:
            loss_mask = np.zeros(n, np.int32)
            loss_mask[int(0.4 * n) :] = 1
            examples.append({"input_ids": rng.integers(0, vocab, n, dtype=np.int32), "loss_mask": loss_mask})
        packed.append(make_row(examples, seq_len))
    return {key: np.stack([row[key] for row in packed]) for key in packed[0]}


def block_causal_mask(segment_ids: np.ndarray) -> np.ndarray:
    """[rows, 1, seq, seq] bool, True where query q may attend to key k: the packed-row attention.

    Causal within equal non-zero segment ids, nothing across segments. A padding position attends
    only to itself, so no softmax row is empty (SDPA would return NaN there; padding has no loss).
    """
    q, k = segment_ids[:, :, None], segment_ids[:, None, :]
    seq = segment_ids.shape[1]
    causal = np.tril(np.ones((seq, seq), bool))
    allowed = (q == k) & (q != 0) & causal
    allowed |= np.eye(seq, dtype=bool)
    return allowed[:, None]


def model_config_of(config: TrainConfig) -> ModelConfig:
    # A hub id's config.json alone is fetched (cft_jax.hub).
    hf_path = config.model.hf_path
    return ModelConfig.from_hf(config_file(hf_path) if hf_path else config.model.init_config)


def bench_jax(config: TrainConfig, batch: dict[str, np.ndarray], steps: int, warmup: int) -> dict[str, Any]:
    """tokens/s, MFU, memory and compile time of our train step (one update per batch, no accumulation)."""

    model_config = model_config_of(config)
    mesh = make_mesh(*resolve_mesh(config.mesh, jax.device_count()))
    rows, seq = batch["input_ids"].shape
    q = jax.ShapeDtypeStruct(
        (rows, seq, model_config.num_heads, model_config.head_dim), jnp.dtype(config.model.compute_dtype)
    )
    k = jax.ShapeDtypeStruct((rows, seq, model_config.num_kv_heads, model_config.head_dim), q.dtype)
    attention = choose_attention(config.model.attention_impl, q, k, target_backend(), mesh.abstract_mesh)
    graphdef, params, rest = init_params(config, model_config, mesh)
    # The batch is one micro-batch: time one update of it, without accumulation.
    one_update = dataclasses.replace(
        config, training=dataclasses.replace(config.training, accumulation_steps=1)
    )
    step = TrainStep.build(one_update, mesh, graphdef, rest, params, total_steps=1000)
    opt_state = step.init_optimizer(params)
    device_batch = global_batch(batch, step.batch_sharding)
    start = time.perf_counter()
    compiled = step.lower(params, opt_state, device_batch).compile()
    compile_time = time.perf_counter() - start
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        params, opt_state, metrics = compiled(params, opt_state, device_batch)
        float(metrics["loss"])
        if i >= warmup:
            times.append(time.perf_counter() - start)
    step_time = float(np.median(times))
    memory = compiled.memory_analysis()
    device = jax.devices()[0]
    peak = peak_flops_per_device(device, config.logging.peak_flops_per_device)
    tokens_per_s = batch["input_ids"].size / step_time / jax.device_count()
    stats = device.memory_stats() or {}
    return {
        "framework": f"jax {jax.__version__} ({device.device_kind})",
        "attention": f"attention_impl={config.model.attention_impl!r} -> {attention} (segment ids)",
        "step_time_s": step_time,
        "tokens_per_s_per_device": tokens_per_s,
        "mfu": mfu(model_config.flops_per_token(seq), tokens_per_s, 1, peak),
        "peak_memory_gib": (
            stats["peak_bytes_in_use"]
            if "peak_bytes_in_use" in stats
            else memory.argument_size_in_bytes + memory.temp_size_in_bytes + memory.output_size_in_bytes
        )
        / 2**30,
        "peak_memory_source": "device peak_bytes_in_use" if "peak_bytes_in_use" in stats else "compiled step",
        "compile_s": compile_time,
        "compile_what": "lower + compile",
        "loss": float(metrics["loss"]),
    }


def torch_attention() -> str:
    """transformers' attention implementation for packed rows: FlashAttention-2 varlen if installed on
    a GPU (it splits rows into sequences where `position_ids` restart), else SDPA with an explicit mask.
    """
    import torch

    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


TORCH_ATTENTION_DOC = {
    "flash_attention_2": "flash_attention_2, varlen: sequences split where position_ids restart",
    "sdpa": (
        "sdpa with a [rows, 1, seq, seq] bool block-diagonal causal mask (SDPA takes no segment ids; "
        "with a mask it runs the memory-efficient or math kernel, not flash)"
    ),
}


def bench_torch(config: TrainConfig, batch: dict[str, np.ndarray], steps: int, warmup: int) -> dict[str, Any]:
    """The same model, packed batch and optimizer through transformers + torch (eager).

    Packed rows reach the model as `position_ids` restarting per segment plus, for SDPA, the
    block-diagonal causal mask; a CUDA out-of-memory error is reported as the result, not raised.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    model_config = model_config_of(config)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if config.model.compute_dtype == "bfloat16" else torch.float32
    attention = torch_attention()
    framework = f"torch {torch.__version__} + transformers ({device})"
    hf_config = model_config.to_hf()
    hf_config.pop("architectures")
    hf = AutoConfig.for_model(**hf_config)
    torch.manual_seed(0)
    inputs = {
        "input_ids": torch.from_numpy(batch["input_ids"].astype(np.int64)),
        "position_ids": torch.from_numpy(batch["positions"].astype(np.int64)),
    }
    if attention == "sdpa":
        inputs["attention_mask"] = torch.from_numpy(block_causal_mask(batch["segment_ids"]))
    inputs = {key: value.to(device) for key, value in inputs.items()}
    labels = inputs["input_ids"].masked_fill(torch.from_numpy(batch["loss_mask"] == 0).to(device), -100)
    autocast = functools.partial(
        torch.autocast, device_type=device, dtype=dtype, enabled=dtype != torch.float32
    )
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    try:
        model = AutoModelForCausalLM.from_config(hf, dtype=torch.float32, attn_implementation=attention)
        model = model.to(device)
        if config.model.remat != "none":
            model.activation_checkpointing_enable()
        model.train()
        o = config.optimizer
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=o.lr, betas=(o.b1, o.b2), eps=o.eps, weight_decay=o.weight_decay
        )
        for _ in range(1 + warmup + steps):
            start = time.perf_counter()
            with autocast():
                loss = model(**inputs, labels=labels).loss
            loss.backward()
            if o.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), o.clip_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss_value = loss.item()
            times.append(time.perf_counter() - start)
    except torch.OutOfMemoryError as error:
        return {"framework": framework, "attention": TORCH_ATTENTION_DOC[attention], "error": f"OOM: {error}"}
    finally:
        # Give the GPU memory back before our side runs in the same process.
        model = optimizer = loss = None
        if device == "cuda":
            torch.cuda.empty_cache()
    step_time = float(np.median(times[1 + warmup :]))
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
        "framework": framework,
        "attention": TORCH_ATTENTION_DOC[attention],
        "step_time_s": step_time,
        "tokens_per_s_per_device": tokens_per_s,
        "mfu": mfu(model_config.flops_per_token(batch["input_ids"].shape[1]), tokens_per_s, 1, peak),
        "peak_memory_gib": peak_memory,
        "peak_memory_source": "torch.cuda.max_memory_allocated" if device == "cuda" else "process max RSS",
        "compile_s": times[0],
        "compile_what": "first step (eager: no compilation; lazy init + allocator warm-up)",
        "loss": loss_value,
    }
