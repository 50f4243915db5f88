"""Training metrics: throughput and MFU, and the console / JSONL / TensorBoard / W&B writers.

MFU (model FLOPs utilisation) = achieved model FLOP/s / peak FLOP/s of the devices used:

    MFU = flops_per_token(seq_len) * tokens_per_second / (num_devices * peak_flops_per_device)

with `ModelConfig.flops_per_token(seq_len)` = 6 * N (forward + backward of every matmul weight,
N = parameters excluding the input embedding lookup) + the causal attention term counted as MaxText
counts it: 6 * layers * seq_len * heads * head_dim per token for QK^T and AV with the causal half
(12 * ... / 2). Every position of the batch counts as a token (padding included: it costs the same
FLOPs), and rematerialisation's recomputation is not counted (MFU, not hardware utilisation).

The work directory may be a `gs://` URI: files go through `etils.epath`, TensorBoard through
tensorboardX's own GCS writer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
from etils import epath

from cft_jax.models.lora import lora_param_count
from cft_jax.remote import is_remote

# Dense bf16 peak FLOP/s per device (one TPU chip, one GPU), from the vendors' data sheets.
PEAK_FLOPS = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100": 312e12,
    "NVIDIA B200": 2250e12,
}


def peak_flops_per_device(device: jax.Device, override: float = 0.0) -> float:
    """Peak bf16 FLOP/s of `device` (0.0 where unknown, e.g. CPU: MFU is then not reported)."""
    if override > 0:
        return override
    kind = device.device_kind
    matches = [name for name in PEAK_FLOPS if kind.startswith(name)]
    return PEAK_FLOPS[max(matches, key=len)] if matches else 0.0


def mfu(flops_per_token: float, tokens_per_second: float, num_devices: int, peak_per_device: float) -> float:
    """Model FLOPs utilisation in [0, 1]; 0.0 when the peak is unknown."""
    if peak_per_device <= 0:
        return 0.0
    return flops_per_token * tokens_per_second / (num_devices * peak_per_device)


# What the progress bar shows, when a run reports it.
BAR_METRICS = ("loss", "eval_loss", "val_accuracy", "lr", "tokens_per_s", "mfu")


class MetricsWriter:
    """Writes scalar metrics to the console (progress bar with ETA), JSONL, TensorBoard and W&B.

    Only process 0 writes; the others keep the same object so the loop needs no branches.
    `metrics.jsonl` is appended to and flushed per write in a local work dir; in a `gs://` one it is
    rewritten whole at each write (GCS objects cannot be appended to), starting from what a resumed
    run finds there. A run resumed at `initial_step` first drops the records of later steps that the
    crashed run had written past its last checkpoint (`truncate_jsonl`), so the resumed run's records
    replace them and no step appears twice; TensorBoard purges the same steps (`purge_step`).
    With `wandb_project` the same scalars go to a W&B run whose config is `run_config`
    (`cft_jax.training.wandb_sink`, imported only then).
    """

    def __init__(
        self,
        workdir: str | Path | epath.Path,
        *,
        total_steps: int,
        initial_step: int,
        jsonl: bool,
        tensorboard: bool,
        progress_bar: bool,
        wandb_project: str = "",
        wandb_entity: str = "",
        wandb_run_name: str = "",
        run_config: dict[str, Any] | None = None,
    ):
        self.enabled = jax.process_index() == 0
        workdir = epath.Path(workdir)
        self._jsonl: epath.Path | None = None
        self._jsonl_text = ""  # the whole file, kept only for a remote (gs://) work dir
        self._jsonl_file = None  # the append handle, for a local work dir
        self._tensorboard = self._bar = self._wandb = None
        self._shown: dict[str, float] = {}  # the progress bar's numbers
        if not self.enabled:
            return
        workdir.mkdir(parents=True, exist_ok=True)
        if jsonl:
            self._jsonl = workdir / "metrics.jsonl"
            kept = truncate_jsonl(self._jsonl, initial_step)
            if is_remote(workdir):
                self._jsonl_text = kept
            else:
                self._jsonl_file = open(str(self._jsonl), "a")  # noqa: SIM115 (closed in close())
        if tensorboard:
            from tensorboardX import SummaryWriter

            # Events of steps after initial_step, from a run that crashed past its last checkpoint, are
            # hidden by TensorBoard: the resumed run writes those steps again.
            self._tensorboard = SummaryWriter(str(workdir / "tensorboard"), purge_step=initial_step + 1)
        if wandb_project:
            from cft_jax.training.wandb_sink import WandbSink

            self._wandb = WandbSink(
                workdir,
                project=wandb_project,
                entity=wandb_entity,
                name=wandb_run_name,
                config=run_config,
                initial_step=initial_step,
            )
        if progress_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=initial_step, unit="step", dynamic_ncols=True)

    def write(self, step: int, metrics: dict[str, float], *, advance: int = 0) -> None:
        """Records `metrics` at `step`; `advance` moves the progress bar by that many steps."""
        if not self.enabled:
            return
        if self._jsonl is not None:
            line = json.dumps({"step": step, **metrics}) + "\n"
            if self._jsonl_file is not None:
                self._jsonl_file.write(line)
                self._jsonl_file.flush()
            else:
                self._jsonl_text += line
                self._jsonl.write_text(self._jsonl_text)
        if self._tensorboard is not None:
            for name, value in metrics.items():
                self._tensorboard.add_scalar(name, value, step)
        if self._wandb is not None:
            self._wandb.write(step, metrics)
        if self._bar is not None:
            self._bar.update(advance)
            # The latest value of each, whichever write brought it (validation scores come on their own).
            self._shown.update({k: metrics[k] for k in BAR_METRICS if k in metrics})
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in self._shown.items()}, refresh=not advance)
        else:
            print(f"step {step}: " + " ".join(f"{k}={v:.5g}" for k, v in metrics.items()), flush=True)

    def close(self) -> None:
        for sink in (self._jsonl_file, self._tensorboard, self._wandb, self._bar):
            if sink is not None:
                sink.close()


def truncate_jsonl(path: str | Path | epath.Path, last_step: int) -> str:
    """Drops the records of `path` (a metrics.jsonl, local or `gs://`) whose `step` is > `last_step`.

    Records without a step, and lines that are not JSON objects, are kept in place; an unterminated
    last line (a write torn by the crash) is dropped. The file is rewritten only when something goes:
    a local one through a temporary file beside it renamed over it (never half-written), a remote one
    in one upload. Returns the kept text ("" when there is no file).
    """
    path = epath.Path(path)
    if not path.exists():
        return ""
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines.pop()
    new_text = "".join(line for line in lines if not _after(line, last_step))
    if new_text == text:
        return text
    if is_remote(path):
        path.write_text(new_text)
    else:
        tmp = Path(str(path)).with_name(f".{path.name}.tmp{os.getpid()}")
        with open(tmp, "w") as f:
            f.write(new_text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, str(path))
    return new_text


def _after(line: str, last_step: int) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    step = record.get("step") if isinstance(record, dict) else None
    return isinstance(step, (int, float)) and not isinstance(step, bool) and step > last_step


def read_jsonl(path: str | Path | epath.Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (local or `gs://`), in order."""
    return [json.loads(line) for line in epath.Path(path).read_text().splitlines() if line.strip()]


# What the compiled step keeps besides its state and the saved layer inputs, in array counts fitted to
# the TPU compiler's `memory_analysis()` of 18 full-remat steps (benchmarks/aot_tables.py and
# tests/aot/test_memory_plan.py: Qwen2.5 0.5B-7B, Llama-3.2-3B, DeepSeek-7B and small decoders on
# v5p slices, fsdp and fsdp x tensor meshes, splash and XLA attention): while a layer is recomputed
# and differentiated, MLP_ARRAYS [batch, seq, ffn] and HIDDEN_ARRAYS [batch, seq, hidden] arrays in
# the compute dtype and LAYER_WEIGHT_COPIES of one layer's weights gathered whole; while a vocabulary
# chunk of the loss is, LOGIT_ARRAYS fp32 [batch, seq, chunk] arrays and two fp32 [batch, seq,
# hidden] ones; and EMBEDDING_GRADIENT_COPIES fp32 copies of the embedding (and LM head) gradient
# beside the step's own (the loss's kernel gradient, the lookup's scatter-add). With them the plan is
# within 8% of the compiler on the recipe configs at their topologies and within 12% on all 18.
MLP_ARRAYS = 8
HIDDEN_ARRAYS = 29
LAYER_WEIGHT_COPIES = 1.5
LOGIT_ARRAYS = 1
EMBEDDING_GRADIENT_COPIES = 1.5


def memory_estimate(
    config: Any,
    *,
    param_dtype: str,
    compute_dtype: str,
    remat: str,
    micro_batch_per_device: int,
    seq_len: int,
    shards: int,
    tensor: int,
    mu_dtype: str = "param",
    accumulation_steps: int = 1,
    attention_impl: str = "xla",
    vocab_chunk: int = 16384,
    lora_params: int = 0,
) -> dict[str, float]:
    """Per-device bytes of a training step, the plan `--dry_run` prints before anything is compiled.

    config: a ModelConfig; b = micro_batch_per_device rows of `seq_len` per device per micro-batch.
      parameters, optimizer: the step's arguments, split over `shards` = fsdp * tensor devices
        (AdamW's first moment in `mu_dtype`, "param" = the parameter dtype; the second moment in the
        parameter dtype);
      gradients: fp32 accumulators when accumulating, one micro-batch's gradients (the stacked layers'
        in the compute dtype, taken of their compute-dtype copy, which is counted too; the embedding's
        and LM head's in the parameter dtype);
      activations: what the backward pass keeps, each layer's [b, seq, hidden] input with full remat
        (in pinned host memory with "offload": `offloaded_to_host`), every matmul output per layer
        with save_dots, everything with none; plus the larger of one layer's working set and one loss
        chunk's (the counts above); with `attention_impl="xla"` a layer's [b, heads, seq, seq] fp32
        scores and compute-dtype probabilities ("auto" is counted as the fused kernel it picks on a
        TPU or GPU, which keeps a [b, heads, seq] log-sum-exp).
      lora_params > 0 (a LoRA run): only that many fp32 adapter parameters train, so the gradients,
        the accumulators and AdamW's state are theirs; the base stays in `param_dtype`, frozen, and
        has no gradient (the embedding's gradient copies go too).
    Calibrated on full-remat steps compiled for TPU (the counts above); for the other remat policies
    and for GPUs the `--aot` report is the number to trust.
    """

    def width(dtype: str) -> int:
        return 2 if dtype == "bfloat16" else 4

    param_bytes, act_bytes = width(param_dtype), width(compute_dtype)
    mu_bytes = param_bytes if mu_dtype == "param" else width(mu_dtype)
    n = config.num_params()
    embeddings = config.vocab_size * config.hidden_size * (1 if config.tie_word_embeddings else 2)
    layer_params = n - embeddings
    b, s, d, layers = micro_batch_per_device, seq_len, config.hidden_size, config.num_layers
    h = max(config.num_heads // tensor, 1)
    k = max(config.num_kv_heads // tensor, 1)
    f = max(config.intermediate_size // tensor, 1)
    dh = config.head_dim
    chunk = min(vocab_chunk, config.vocab_size)

    if lora_params:
        # Adapters are fp32 (models/lora.py): AdamW's state and accumulators in fp32 too.
        trained, trained_layers, embedding_grads = lora_params, lora_params, 0.0
        mu_bytes, trained_bytes = (4 if mu_dtype == "param" else width(mu_dtype)), 4
    else:
        trained, trained_layers, embedding_grads = n, layer_params, embeddings
        trained_bytes = param_bytes
    accumulators = trained * 4 / shards if accumulation_steps > 1 else 0.0
    cast_copy = trained_layers * act_bytes / shards if act_bytes != trained_bytes else 0.0
    micro_grads = (trained_layers * act_bytes + embedding_grads * param_bytes) / shards
    layer_input = b * s * d * act_bytes
    matmul_outputs = b * s * (2 * h * dh + 2 * k * dh + d + 2 * f + d) * act_bytes
    offloaded = 0.0
    if remat in ("full", "offload"):
        saved = layers * layer_input
    elif remat in ("save_dots", "save_dots_no_batch"):
        saved = layers * (layer_input + matmul_outputs)
    else:
        saved = layers * (layer_input + matmul_outputs + 4 * b * s * (d + f) * act_bytes)
    if remat == "offload":
        saved, offloaded = 0.0, saved
    one_layer = (
        MLP_ARRAYS * b * s * f * act_bytes
        + HIDDEN_ARRAYS * layer_input
        + LAYER_WEIGHT_COPIES * (layer_params / layers / tensor) * act_bytes
    )
    if attention_impl == "xla":
        one_layer += b * h * s * s * (4 + act_bytes)
    one_chunk = LOGIT_ARRAYS * b * s * chunk * 4 + 2 * b * s * d * 4
    activations = saved + max(one_layer, one_chunk) + EMBEDDING_GRADIENT_COPIES * embedding_grads * 4 / shards
    state = {
        "parameters": (n * param_bytes + lora_params * 4) / shards,
        "optimizer": trained * (mu_bytes + trained_bytes) / shards,
        "gradients": accumulators + cast_copy + micro_grads,
    }
    return {
        **state,
        "activations": float(activations),
        "total": sum(state.values()) + activations,
        "offloaded_to_host": float(offloaded),
    }


def memory_plan(config: Any, model_config: Any, num_devices: int) -> dict[str, float]:
    """`memory_estimate` for a TrainConfig on `num_devices` devices: what `--dry_run` prints."""
    from cft_jax.config import resolve_mesh
    from cft_jax.training.state import lora_spec

    data, fsdp, tensor = resolve_mesh(config.mesh, num_devices)
    t = config.training
    spec = lora_spec(config)
    lora_params = 0 if spec is None else lora_param_count(model_config, spec)
    return memory_estimate(
        model_config,
        param_dtype=config.model.param_dtype,
        compute_dtype=config.model.compute_dtype,
        remat=config.model.remat,
        micro_batch_per_device=t.global_batch // t.accumulation_steps // (data * fsdp),
        seq_len=config.data.seq_len,
        shards=fsdp * tensor,
        tensor=tensor,
        mu_dtype=config.optimizer.mu_dtype,
        accumulation_steps=t.accumulation_steps,
        attention_impl=config.model.attention_impl,
        vocab_chunk=t.vocab_chunk,
        lora_params=lora_params,
    )
