"""A LoRA run's two exports, and the fingerprint that ties adapters to the base they were trained on.

- `merge_adapters`: the base's kernels with the adapters folded in, W + (alpha / rank) A B, a state
  `export_hf` writes as a full HF checkpoint (transformers, vLLM: no PEFT needed to serve it).
- `export_peft_adapter`: the adapters alone in PEFT's layout, `adapter_config.json` +
  `adapter_model.safetensors` keyed `base_model.model.<HF module>.lora_A.weight` [rank, in] and
  `lora_B.weight` [out, rank], which `peft.PeftModel.from_pretrained(base, dir)` loads. The key names
  and layouts come from `cft_jax.models.hf.RULES`: an adapter's A is laid out as its kernel's input
  dimensions and B as its output ones, so each is a kernel row with the rank as the other side.
- `base_fingerprint`: a checksum of the base's weights, recorded in a LoRA checkpoint and checked on
  resume (adapters trained on one base are meaningless on another).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx

from cft_jax.assets.tokenizers import copy_tokenizer
from cft_jax.models.hf import RULES, Rule, _to_host, param_leaves
from cft_jax.models.lora import LoRASpec
from cft_jax.models.safetensors_io import PlannedTensor, write_safetensors
from cft_jax.remote import pathlib_if_local

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."


def _adapted(adapters: Any) -> list[tuple[str, ...]]:
    """The paths of the projections that carry adapters, e.g. ("layers", "attn", "q_proj")."""
    return sorted(path[:-1] for path in param_leaves(adapters) if path[-1] == "lora_a")


def _kernel_rule(projection: tuple[str, ...]) -> Rule:
    return next(rule for rule in RULES if rule.path == (*projection, "kernel"))


@jax.jit
def _merged(kernel: jax.Array, a: jax.Array, b: jax.Array, scaling: float) -> jax.Array:
    """[layers, in..., out...] kernel + scaling * A B, computed in fp32, in the kernel's dtype."""
    layers, rank = a.shape[0], a.shape[-1]
    delta = a.reshape(layers, -1, rank).astype(jnp.float32) @ b.reshape(layers, rank, -1).astype(jnp.float32)
    merged = kernel.astype(jnp.float32) + scaling * delta.reshape(kernel.shape)
    return merged.astype(kernel.dtype)


def merge_adapters(base: nnx.State, adapters: nnx.State, spec: LoRASpec) -> dict[str, Any]:
    """The pure dict of `base` (the frozen parameters) with every adapted kernel replaced by its merge."""
    merged = base.to_pure_dict()
    lora = param_leaves(adapters)
    for projection in _adapted(adapters):
        node = merged
        for key in projection:
            node = node[key]
        kernel = node["kernel"]
        a, b = lora[(*projection, "lora_a")], lora[(*projection, "lora_b")]
        node["kernel"] = jax.device_put(_merged(kernel, a, b, spec.scaling), kernel.sharding)
    return merged


def export_peft_adapter(
    adapters: nnx.State | dict[str, Any],
    spec: LoRASpec,
    out_dir: str | Path | epath.Path,
    *,
    base_model: str,
    tokenizer_dir: str | Path | epath.Path | None = None,
) -> Path | epath.Path:
    """Writes the adapters as a PEFT LoRA adapter directory (float32), for `base_model` (a path or
    name, recorded as `base_model_name_or_path`). Multi-process: a collective like `export_hf`."""
    leaves = param_leaves(adapters)
    planned = []
    for projection in _adapted(adapters):
        kernel = _kernel_rule(projection)
        module = PEFT_PREFIX + kernel.hf.removesuffix(".weight")
        for name, layout, hf in (("lora_a", kernel.layout, "lora_A"), ("lora_b", 1, "lora_B")):
            rule = Rule(f"{module}.{hf}.weight", (*projection, name), layout)
            leaf = leaves[rule.path]
            for layer in range(leaf.shape[0]):
                planned.append(
                    PlannedTensor(
                        rule.hf.format(i=layer),
                        rule.hf_shape(tuple(leaf.shape[1:])),
                        np.dtype(np.float32),
                        lambda rule=rule, leaf=leaf, layer=layer: rule.to_hf(_to_host(leaf[layer])),
                    )
                )
    out_dir = epath.Path(out_dir)
    writer = jax.process_index() == 0
    if writer:
        out_dir.mkdir(parents=True, exist_ok=True)
    # One file, as PEFT reads it: adapters are small (a rank-16 14B adapter is ~0.3 GB in fp32).
    (written,) = write_safetensors(planned, out_dir, max_shard_size=2**62, write=writer)
    if writer:
        epath.Path(written).rename(out_dir / ADAPTER_WEIGHTS)
        (out_dir / ADAPTER_CONFIG).write_text(json.dumps(peft_config(spec, base_model), indent=2) + "\n")
        if tokenizer_dir is not None:
            copy_tokenizer(tokenizer_dir, out_dir)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"export_peft_adapter {out_dir}")
    return pathlib_if_local(out_dir)


def peft_config(spec: LoRASpec, base_model: str) -> dict[str, Any]:
    """PEFT's `LoraConfig` of these adapters, as `adapter_config.json` holds it."""
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": spec.rank,
        "lora_alpha": spec.alpha,
        "lora_dropout": spec.dropout,
        "target_modules": list(spec.modules()),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "inference_mode": True,
        "modules_to_save": None,
    }


@jax.jit
def _checksum(x: jax.Array) -> jax.Array:
    """A uint32 checksum of an array's bits: sum of bits * an odd multiplier per position, mod 2^32,
    so changing any one element changes it."""
    width = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[x.dtype.itemsize]
    bits = jax.lax.bitcast_convert_type(x, width).astype(jnp.uint32).reshape(-1)
    odd = jnp.arange(bits.size, dtype=jnp.uint32) * jnp.uint32(2) + jnp.uint32(1)
    return jnp.sum(bits * (odd * jnp.uint32(2654435761)), dtype=jnp.uint32)


def base_fingerprint(base: nnx.State) -> str:
    """sha256 over every frozen parameter's path, shape, dtype and bit checksum (computed where the
    arrays live, one pass over the weights)."""
    digest = hashlib.sha256()
    for path, leaf in sorted(param_leaves(base).items()):
        checksum = int(np.asarray(jax.device_get(_checksum(leaf))))
        digest.update(f"{'.'.join(path)}:{tuple(leaf.shape)}:{leaf.dtype}:{checksum};".encode())
    return digest.hexdigest()
