"""`python -m cft_jax.train --config FILE [--config.KEY=VALUE ...] [--dry_run]`: the CFT trainer.

FILE is Python (`get_config()`) or YAML; `--help` lists every config key with its type and default.

Read top to bottom: config -> mesh -> model (HF weights or random init) -> data -> optimizer ->
shardings -> one jitted train step (explicit in/out shardings, donated state) -> restore the newest
checkpoint -> loop (metrics, held-out loss, validation accuracy, checkpoints, HF exports) -> final
checkpoint and export. Validation accuracy (`evaluation.generate_every_steps`) samples a benchmark
with the in-memory weights and grades it in the background (`cft_jax.training.validation`); the best
step's checkpoint is kept and exported to WORKDIR/hf/best.
Without `--config` it trains the CPU demo, `configs/demo_smollm2.py` (real SmolLM2-135M on critiques).

Several processes (hosts) train one model through JAX's multi-controller runtime: see
`initialize_distributed`. Each process reads its own share of the data and saves its own data
iterator state; process 0 writes the metrics, the run's HF assets, the JSON metadata and the HF
exports (every process takes part in gathering the exported tensors).
`training.workdir` and the data paths may be `gs://` URIs (everything goes through `etils.epath`).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np
from etils import epath
from flax import nnx
from jax.sharding import Mesh, NamedSharding

import cft_jax
from cft_jax import hub
from cft_jax.assets.tokenizers import export_source
from cft_jax.config import ConfigError, TrainConfig, load_config, resolve_mesh
from cft_jax.data.pipeline import (
    batches_per_epoch,
    load_examples,
    make_iterator,
    training_tokenizer,
    write_export_tokenizer,
)
from cft_jax.errors import InputError, run_cli
from cft_jax.evaluation.cli import RUN_METADATA
from cft_jax.evaluation.grader import grade_responses
from cft_jax.evaluation.prompts import STOP_STRINGS, check_prompt, render
from cft_jax.evaluation.suites import BENCHMARKS, load_problems
from cft_jax.hub import is_hub
from cft_jax.models.config import ModelConfig
from cft_jax.models.hf import export_hf, load_hf
from cft_jax.models.lora import lora_param_count
from cft_jax.models.lora_export import base_fingerprint, export_peft_adapter, merge_adapters
from cft_jax.models.shapes import SHAPES
from cft_jax.models.sharding import make_mesh
from cft_jax.remote import as_path
from cft_jax.sampling.sampler import SampleConfig
from cft_jax.sampling.text import cut_at_stop, stop_sequences
from cft_jax.training import metrics as metrics_lib
from cft_jax.training.checkpoint import (
    Checkpointer,
    TerminationFlag,
    abstract_with_shardings,
    data_fingerprints,
)
from cft_jax.training.config_help import config_help
from cft_jax.training.exports import prune_exports
from cft_jax.training.loop import Policy, StepMeter
from cft_jax.training.preflight import preflight
from cft_jax.training.state import (
    TrainStep,
    add_adapters,
    decoder_options,
    global_batch,
    init_params,
    lora_spec,
)
from cft_jax.training.step import model_parts
from cft_jax.training.validation import ANSWERS_DIR, Validation, ValidationTask

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo_smollm2.py"


def build_model(config: TrainConfig, mesh: Mesh) -> tuple[nnx.GraphDef, nnx.State, nnx.State, ModelConfig]:
    """(graphdef, trainable parameters already sharded on `mesh`, the rest, model config): HF weights or
    random init. With LoRA (lora.rank > 0) the trainable parameters are fresh adapters and the rest
    holds the base's weights, frozen."""
    if config.model.hf_path:
        model, model_config = load_hf(config.model.hf_path, mesh=mesh, **hf_options(config))
        graphdef, params, rest = model_parts(model)
        if lora_spec(config) is not None:
            return (*add_adapters(config, model_config, mesh, params), model_config)
        return graphdef, params, rest, model_config
    model_config = ModelConfig.from_hf(config.model.init_config)
    return (*init_params(config, model_config, mesh), model_config)


def hf_options(config: TrainConfig) -> dict[str, Any]:
    """`load_hf` keyword arguments for the config's dtypes, remat and attention."""
    options = decoder_options(config)
    return {"dtype": options.pop("param_dtype"), **options}


def total_steps(config: TrainConfig, batches_per_epoch: int) -> int:
    """Updates in the run: training.max_steps, else data.epochs passes over the data; it is also the
    schedule's length, warm-up included (`TrainStep.build`).

    `batches_per_epoch` counts an epoch's last partial batch unless data.drop_last, as HF Trainer
    does: 600 rows at batch 512 are 2 updates per epoch.
    """
    if config.training.max_steps:
        return config.training.max_steps
    steps = config.data.epochs * batches_per_epoch
    if steps <= 0:
        raise ConfigError(
            f"{batches_per_epoch} batches of {config.training.global_batch} rows per epoch: the data is "
            "smaller than one global batch; lower training.global_batch, add data or set data.drop_last=False"
        )
    return steps


def check_select_benchmark(config: TrainConfig) -> None:
    """evaluation.select_benchmark names a shipped benchmark (or is empty), before anything trains."""
    name = config.evaluation.select_benchmark
    if name and name not in BENCHMARKS:
        raise ConfigError(
            f"evaluation.select_benchmark={name!r}: not a benchmark of cft_jax.evaluation.suites; "
            f"use one of {sorted(BENCHMARKS)} or '' (select then needs --benchmark)"
        )


def validation_task(config: TrainConfig) -> ValidationTask:
    """The validation of evaluation.generate_every_steps: evaluation.benchmark's problems (the first
    generate_limit), rendered with evaluation.prompt and tokenized by the training data's tokenizer,
    greedy up to evaluation.max_new_tokens or an EOS id of the model or tokenizer, graded by the
    evaluation tool's grader. Built before the model loads, so a bad benchmark or prompt costs nothing."""
    e = config.evaluation
    name = e.benchmark or e.select_benchmark
    try:
        check_prompt(e.prompt)
        problems = load_problems(name)[: e.generate_limit or None]
    except InputError as error:
        raise ConfigError(f"evaluation.benchmark={name!r}, evaluation.prompt={e.prompt!r}: {error}") from None
    tokenizer = copy.deepcopy(training_tokenizer(config.data))  # the grading thread decodes with its own
    texts = [render(e.prompt, p.question, tokenizer) for p in problems]
    prompts = tokenizer(texts, add_special_tokens=False)["input_ids"]
    eos = ModelConfig.from_hf(model_config_source(config)).eos_token_id
    eos = [*(eos if isinstance(eos, tuple) else [] if eos is None else [eos]), tokenizer.eos_token_id]
    sample_config = SampleConfig(
        max_new_tokens=e.max_new_tokens,
        eos_token_ids=tuple(dict.fromkeys(i for i in eos if i is not None)),
        stop_sequences=stop_sequences(tokenizer, STOP_STRINGS),
    )
    shipped = name if name in BENCHMARKS else None  # a shipped benchmark's own answer rules
    return ValidationTask(
        benchmark=name,
        ids=tuple(p.id for p in problems),
        prompts=tuple(tuple(ids) for ids in prompts),
        references=tuple(p.reference_answer for p in problems),
        sample_config=sample_config,
        decode=lambda ids: cut_at_stop(tokenizer.decode(ids, skip_special_tokens=False), STOP_STRINGS),
        grade=lambda answers, refs: grade_responses(
            answers, refs, benchmark=shipped, workers=e.grade_workers
        ),
    )


def tokenizer_source(config: TrainConfig) -> Path | epath.Path | None:
    """Where the tokenizer files that go with exports come from: the HF checkpoint, else the data's."""
    hf_path, tokenizer = config.model.hf_path, config.data.tokenizer
    if is_hub(hf_path):
        hf_path = str(hub.tokenizer_dir(hf_path))  # already in the hub cache: the model was loaded
    if is_hub(tokenizer):
        tokenizer = str(hub.tokenizer_dir(tokenizer))
    return export_source(hf_path, tokenizer)


def code_version() -> str:
    """Package version and, when run from a git checkout, the commit."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return f"{cft_jax.__version__}+{commit}"


def evaluate(eval_fn, params: nnx.State, eval_iter, batch_sharding: NamedSharding, num_batches: int) -> float:
    """Token-weighted held-out loss over the eval split (or its first `num_batches` batches)."""
    loss_sum, tokens = 0.0, 0.0
    for index, host_batch in enumerate(eval_iter):
        if num_batches and index >= num_batches:
            break
        out = eval_fn(params, global_batch(host_batch, batch_sharding))
        loss_sum += float(out["loss_sum"])
        tokens += float(out["target_tokens"])
    return loss_sum / max(tokens, 1.0)


def data_iterator(config: TrainConfig, split: str = "train"):
    """This process's share of the `split` batches (`config.data`), a checkpointable Grain iterator."""
    return make_iterator(
        config.data,
        per_host_batch=config.training.global_batch // jax.process_count(),
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        split=split,
    )


def lora_metadata(config: TrainConfig, base: nnx.State) -> dict[str, Any] | None:
    """What a LoRA checkpoint records of its base: where it came from and a fingerprint of its weights."""
    if lora_spec(config) is None:
        return None
    source = config.model.hf_path or f"random init (training.seed={config.training.seed})"
    return {"base_model": source, "base_fingerprint": base_fingerprint(base)}


def describe_base(lora: dict[str, Any] | None) -> str:
    """A run's `lora` metadata in words, for the error of a resume onto another base."""
    if lora is None:
        return "full fine-tuning"
    fingerprint = lora["base_fingerprint"][:12]
    return f"LoRA adapters on the base {lora['base_model']} (weights fingerprint {fingerprint})"


def run_metadata(
    config: TrainConfig, model_config: ModelConfig, train_iter, steps: int, rest: nnx.State
) -> dict[str, Any]:
    """What every checkpoint records beside the state: config, data, code, seed, a LoRA run's base."""
    return {
        "lora": lora_metadata(config, rest),
        "config": config.to_dict(),
        "model_config": model_config.to_hf(),
        "data": train_iter.report.to_dict(),
        "data_fingerprints": data_fingerprints(config.data.train_paths),
        "code_version": code_version(),
        "rng": np.asarray(jax.random.key_data(jax.random.key(config.training.seed))).tolist(),
        "total_steps": steps,
    }


def write_run_metadata(config: TrainConfig, workdir: epath.Path, steps: int) -> None:
    """WORKDIR/run.json (process 0): what the tools that read the run need of its recipe, e.g. the
    benchmark `python -m cft_jax.eval select` scores the exports on."""
    if jax.process_index() != 0:
        return
    workdir.mkdir(parents=True, exist_ok=True)
    meta = {
        "select_benchmark": config.evaluation.select_benchmark,
        "total_steps": steps,
        "global_batch": config.training.global_batch,
        "epochs": config.data.epochs,
        "code_version": code_version(),
    }
    (workdir / RUN_METADATA).write_text(json.dumps(meta, indent=2) + "\n")


def resume(
    checkpointer: Checkpointer, step_fn: TrainStep, params, opt_state, train_iter, meta: dict
) -> tuple:
    """(step, params, opt_state) from the newest checkpoint that verifies and restores (corrupt ones
    are set aside), with the data iterator moved to where it was; (0, params, opt_state) if none."""
    if checkpointer.latest_step() is None:
        return 0, params, opt_state
    step, params, opt_state, data_state, saved_meta = checkpointer.restore_latest(
        abstract_params=abstract_with_shardings(params, step_fn.param_shardings),
        abstract_opt_state=abstract_with_shardings(opt_state, step_fn.opt_shardings),
    )
    if saved_meta.get("lora") != meta["lora"]:
        raise ConfigError(
            f"{checkpointer.directory / str(step)}: a checkpoint of {describe_base(saved_meta.get('lora'))}, "
            f"but this run is {describe_base(meta['lora'])}; resume with the model.hf_path, dtype and "
            "lora settings that wrote it, or start afresh with --config.checkpoint.resume=false"
        )
    train_iter.set_state(data_state)
    print(f"resumed from the checkpoint of step {step}", file=sys.stderr)
    if saved_meta.get("data_fingerprints") != meta["data_fingerprints"]:
        print(
            f"warning: the training data changed since step {step} was saved; the resume is not exact",
            file=sys.stderr,
        )
    return step, params, opt_state


@dataclasses.dataclass
class Run:
    """What a training run holds besides its parameters and optimizer state, and what it does with them
    between updates: log, evaluate, checkpoint, export."""

    config: TrainConfig
    workdir: epath.Path
    model_config: ModelConfig
    step_fn: TrainStep
    policy: Policy
    meter: StepMeter
    writer: metrics_lib.MetricsWriter
    checkpointer: Checkpointer
    train_iter: Any
    eval_iter: Any
    validation: Validation | None  # validation accuracy and the best step (evaluation.generate_every_steps)
    meta: dict[str, Any]
    tokenizer: Path | epath.Path | None  # the tokenizer checkpoints and exports carry
    scratch: tempfile.TemporaryDirectory  # holds that tokenizer when the data changed it
    last_saved: int
    last_logged: int

    def log(self, read: tuple[int, dict[str, float]] | None) -> dict[str, float] | None:
        """Writes a step's numbers where the policy says; stops the run on a non-finite loss."""
        if read is None:
            return None
        step, numbers = read
        if not math.isfinite(numbers["loss"]):
            raise FloatingPointError(
                f"step {step}: the loss is {numbers['loss']}; stopping. The last good checkpoint is "
                f"step {self.last_saved or None} in {self.workdir / 'checkpoints'}"
            )
        if self.policy.logs(step) or "eval_loss" in numbers:
            self.writer.write(step, numbers, advance=step - self.last_logged)
            self.last_logged = step
        return numbers

    def evaluate(self, params: nnx.State) -> float:
        sharding, batches = self.step_fn.batch_sharding, self.config.evaluation.num_batches
        return evaluate(self.step_fn.evaluate, params, self.eval_iter, sharding, batches)

    def collect_scores(self, params: nnx.State, *, wait_below: float = 0) -> None:
        """Logs the validations graded by now (and waits for those of steps below `wait_below`) of the
        steps checkpointed so far; a new best step is exported to WORKDIR/hf/best from its checkpoint,
        then WORKDIR/best.json names it."""
        if self.validation is None:
            return
        for score, is_best in self.validation.collect(wait_below=wait_below, saved=self.last_saved):
            if is_best:
                self.export_best(score.step, params)
            self.validation.best.write(self.workdir)
            self.writer.write(score.step, {"val_accuracy": score.accuracy})

    def save(self, step: int, params: nnx.State, opt_state: Any) -> None:
        """Checkpoints `step`, once the earlier validations' scores are on record: a resume then has
        to redo at most this step's own validation."""
        self.collect_scores(params, wait_below=step)
        state = self.train_iter.get_state()
        self.checkpointer.save(
            step, params=params, opt_state=opt_state, data_iter_state=state, meta=self.meta
        )
        self.last_saved = step

    def export(self, step: int, params: nnx.State) -> None:
        """WORKDIR/hf/step_N, and the older exports pruned (export.keep)."""
        self.write_hf(params, self.workdir / "hf" / f"step_{step}")
        if jax.process_index() == 0:
            for name in prune_exports(self.workdir, self.config.export.keep):
                print(
                    f"export.keep={self.config.export.keep}: deleted {self.workdir / 'hf' / name}",
                    file=sys.stderr,
                )

    def export_best(self, step: int, params: nnx.State) -> None:
        """WORKDIR/hf/best from the checkpoint of `step` (the parameters in memory are a later step's)."""
        abstract = abstract_with_shardings(params, self.step_fn.param_shardings)
        best = self.checkpointer.restore_params(step, abstract_params=abstract)
        target = self.workdir / "hf" / "best"
        if jax.process_index() == 0 and target.exists():
            target.rmtree()
        self.write_hf(best, target)
        print(f"step {step} is the best on validation so far: exported to {target}", file=sys.stderr)

    def write_hf(self, params: nnx.State, target: epath.Path) -> None:
        """A collective in a multi-host run: every process gathers, process 0 writes. A LoRA run exports
        the base with the adapters merged in, or the adapters alone in PEFT's format (export.lora)."""
        self.checkpointer.wait()
        spec, dtype = lora_spec(self.config), self.config.export.dtype
        if spec is not None and self.config.export.lora == "adapter":
            base = self.meta["lora"]["base_model"]
            export_peft_adapter(params, spec, target, base_model=base, tokenizer_dir=self.tokenizer)
        else:
            if spec is not None:
                params = merge_adapters(self.step_fn.rest, params, spec)
            export_hf(params, self.model_config, target, dtype=dtype, tokenizer_dir=self.tokenizer)

    def close(self) -> None:
        if self.validation is not None:
            self.validation.close()
        self.checkpointer.wait()
        self.checkpointer.close()
        self.train_iter.close()
        self.writer.close()


def start(config: TrainConfig) -> tuple[Run, int, nnx.State, Any]:
    """(run, step, params, opt_state) of `config`: its model on the mesh, data, compiled step and
    checkpoints, resumed from the newest checkpoint that verifies."""
    preflight(config)  # the checkpoint, tokenizer and data are there and agree, before anything loads
    check_select_benchmark(config)
    task = validation_task(config) if config.evaluation.generate_every_steps else None
    workdir = as_path(config.training.workdir)
    mesh = make_mesh(*resolve_mesh(config.mesh, jax.device_count()))
    graphdef, params, rest, model_config = build_model(config, mesh)
    train_iter = data_iterator(config)
    steps = total_steps(config, train_iter.batches_per_epoch)
    step_fn = TrainStep.build(config, mesh, graphdef, rest, params, steps)
    opt_state = step_fn.init_optimizer(params)
    validation = None
    if task is not None:
        validation = Validation(
            task,
            mesh=mesh,
            graphdef=graphdef,
            rest=step_fn.rest,
            batch_size=config.evaluation.generate_batch_size,
            answers_dir=workdir / ANSWERS_DIR,
        )
    checkpointer = Checkpointer(
        workdir / "checkpoints",
        keep=config.checkpoint.keep,
        async_save=config.checkpoint.async_save,
        pinned=validation.pinned if validation else frozenset,  # the best step and those being graded
    )
    meta = run_metadata(config, model_config, train_iter, steps, rest)
    step = 0
    if config.checkpoint.resume:
        step, params, opt_state = resume(checkpointer, step_fn, params, opt_state, train_iter, meta)
    # A tokenizer the data changed (data.chatml_add_im_end) is what checkpoints and exports must carry.
    scratch = tempfile.TemporaryDirectory(prefix="cft_tokenizer_")
    tokenizer = write_export_tokenizer(config.data, tokenizer_source(config), scratch.name)
    tokenizer = tokenizer or tokenizer_source(config)
    checkpointer.write_hf_assets(model_config.to_hf(), tokenizer)
    write_run_metadata(config, workdir, steps)
    policy = Policy.from_config(config, steps)
    peak = metrics_lib.peak_flops_per_device(jax.devices()[0], config.logging.peak_flops_per_device)
    flops_per_token = model_config.flops_per_token(config.data.seq_len)
    meter = StepMeter(
        config.training.global_batch * config.data.seq_len, flops_per_token, jax.device_count(), peak
    )
    writer = metrics_lib.MetricsWriter(
        workdir,
        total_steps=policy.halt_at,
        initial_step=step,
        jsonl=config.logging.jsonl,
        tensorboard=config.logging.tensorboard,
        progress_bar=config.logging.progress_bar,
        wandb_project=config.logging.wandb_project,
        wandb_entity=config.logging.wandb_entity,
        wandb_run_name=config.logging.wandb_run_name,
        run_config=config.to_dict(),
    )
    eval_iter = data_iterator(config, "eval") if policy.eval_every else None
    run = Run(config, workdir, model_config, step_fn, policy, meter, writer, checkpointer, train_iter,
              eval_iter, validation, meta, tokenizer, scratch, last_saved=step, last_logged=step)  # fmt: skip
    if validation is not None:
        validation.resume(workdir, step)
        if policy.validates(step) and step not in validation.best.scores:
            validation.start(step, params)  # its score went with the process that saved the checkpoint
    return run, step, params, opt_state


def train(config: TrainConfig) -> dict[str, Any]:
    """Runs (or resumes) the training described by `config`; returns the last step's metrics."""
    run, step, params, opt_state = start(config)
    policy, step_fn, meter = run.policy, run.step_fn, run.meter
    terminate, record = TerminationFlag(), {}
    try:
        while step < policy.halt_at:
            host_batch = next(run.train_iter, None)
            if host_batch is None:
                print(
                    f"the data ran out after step {step} (of {policy.total_steps} planned)", file=sys.stderr
                )
                break
            batch = global_batch(host_batch, step_fn.batch_sharding)
            params, opt_state, metrics = step_fn(params, opt_state, batch)
            step += 1
            record = run.log(meter.swap(step, metrics)) or record  # the previous step's, while this one runs
            run.collect_scores(params)  # the validations graded by now (several processes: at checkpoints)
            stopping = terminate.is_set()
            if not (policy.needs_state(step) or stopping):
                continue
            at, record = meter.take()  # this step's parameters are needed now: so are its numbers
            if policy.evaluates(step):
                record["eval_loss"] = run.evaluate(params)
            if policy.validates(step):
                run.validation.start(step, params)  # samples now; the answers are graded in the background
            run.log((at, record))
            if policy.saves(step) or stopping:
                run.save(step, params, opt_state)
            if policy.exports(step):
                run.export(step, params)
            if stopping:
                print(f"SIGTERM: checkpoint of step {step} saved; exiting", file=sys.stderr)
                return record
        record = run.log(meter.take()) or record
        if run.last_saved != step:
            run.save(step, params, opt_state)
        run.collect_scores(params, wait_below=math.inf)
        if policy.exports_at_end(step):
            run.export(step, params)
    finally:
        run.close()
    return record


def model_config_source(config: TrainConfig) -> Any:
    """What `ModelConfig.from_hf` reads for the configured model: its config.json (of a hub id that file
    alone is downloaded) or the random init's keys."""
    return hub.config_file(config.model.hf_path) if config.model.hf_path else config.model.init_config


def _here(path: str) -> bool:
    # A plan reads data that is already here (local or gs://); a hub dataset is not downloaded for it.
    return not is_hub(path) and as_path(path).exists()


def dry_run_report(config: TrainConfig, num_devices: int) -> str:
    """The resolved config, mesh, per-device memory estimate, steps and tokens, as text."""
    data, fsdp, tensor = resolve_mesh(config.mesh, num_devices)
    model_config = ModelConfig.from_hf(model_config_source(config))
    memory = metrics_lib.memory_plan(config, model_config, num_devices)
    t = config.training
    if t.max_steps:
        steps = f"{t.max_steps} (training.max_steps)"
    elif config.data.train_paths and all(_here(p) for p in config.data.train_paths):
        report = load_examples(config.data)[1]
        per_epoch = batches_per_epoch(report, config.data, t.global_batch)
        rows = report.rows_per_epoch
        steps = f"{config.data.epochs * per_epoch} ({rows} rows per epoch, {per_epoch} batches)"
    else:
        steps = f"data.epochs={config.data.epochs} x rows per epoch / {t.global_batch} (data not found here)"
    lines = [
        "resolved config:",
        json.dumps(config.to_dict(), indent=2),
        f"mesh: data={data} fsdp={fsdp} tensor={tensor} over {num_devices} devices",
        f"model: {model_config.model_type}, {model_config.num_params() / 1e9:.3f} B parameters, "
        f"{model_config.flops_per_token(config.data.seq_len) / 1e9:.2f} GFLOP per token",
        *lora_lines(config, model_config),
        "per-device memory estimate (GiB):",
        *(f"  {name}: {value / 2**30:.2f}" for name, value in memory.items()),
        f"steps: {steps}",
        f"tokens per step: {t.global_batch * config.data.seq_len} "
        f"({t.global_batch} sequences x {config.data.seq_len}, {t.accumulation_steps} micro-batches)",
    ]
    return "\n".join(lines)


def lora_lines(config: TrainConfig, model_config: ModelConfig) -> list[str]:
    """The dry run's line on what a LoRA run trains (none for full fine-tuning)."""
    spec = lora_spec(config)
    if spec is None:
        return []
    count = lora_param_count(model_config, spec)
    return [
        f"LoRA: rank {spec.rank} on {', '.join(spec.modules())}: {count / 1e6:.2f} M trainable "
        f"parameters ({100 * count / model_config.num_params():.2f}% of the model), the base frozen"
    ]


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """(flags, `--config.KEY=VALUE` overrides)."""
    parser = argparse.ArgumentParser(
        prog="python -m cft_jax.train",
        description=__doc__.splitlines()[0],
        epilog=config_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the key list is laid out already
    )
    parser.add_argument(
        "--config",
        default=str(DEMO_CONFIG),
        help="config file: Python with get_config(), or YAML (.yaml/.yml) with the same nested keys",
    )
    parser.add_argument("--dry_run", action="store_true", help="print the plan and exit")
    parser.add_argument("--dry_run_devices", type=int, default=0, help="plan for this many devices")
    parser.add_argument(
        "--aot",
        default="",
        metavar="TARGET",
        help="compile the step for hardware that is not here and print the compiler's memory, collectives "
        "and cost estimate: a TPU slice (v5p-32, v6e-8, 2xv5p-32), a topology (v5p:4x4x12) or a GPU node "
        "(h100x8, h200x1, 2xh100x8); no weights, data or accelerator needed",
    )
    parser.add_argument("--aot_json", default="", help="with --aot: also write the report's numbers here")
    parser.add_argument("--aot_hlo", default="", help="with --aot: also write the optimized HLO text here")
    parser.add_argument(
        "--aot_cost",
        action="store_true",
        help="with --aot on TPU: also rebuild the whole step's cost from the compiler's cost model "
        "(3-5 compiles) and print the estimated step time and MFU",
    )
    parser.add_argument(
        "--shape",
        default="",
        choices=["", *sorted(SHAPES)],
        help="with --dry_run / --aot: this public architecture, not model.hf_path's (nothing downloaded)",
    )
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="jax.distributed.initialize() first; automatic where the environment says several processes run",
    )
    flags, rest = parser.parse_known_args(argv)
    unknown = [a for a in rest if not a.startswith("--config.")]
    if unknown:
        parser.error(f"unknown arguments {unknown}; config keys are set as --config.KEY=VALUE")
    return flags, rest


def launched_as_several_processes() -> bool:
    """Whether the environment says this process is one of several training together.

    JAX_COORDINATOR_ADDRESS set (a hand-launched run, with JAX_NUM_PROCESSES and JAX_PROCESS_ID);
    an `srun` step of more than one task (SLURM_NTASKS > 1 with the SLURM_* variables JAX reads); or
    a GKE / xpk TPU slice of several workers (TPU_WORKER_HOSTNAMES lists more than one host). Cloud
    TPU VM slices and Open MPI need `--distributed`: detecting them means querying the GCE metadata
    server or MPI, which a single process should not pay for.
    """
    env = os.environ
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return True
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_PROCID", "SLURM_LOCALID")
    if all(v in env for v in slurm) and int(env.get("SLURM_NTASKS", "1")) > 1:
        return True
    return len(env.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1


def initialize_distributed() -> None:
    """`jax.distributed.initialize()`, with JAX_NUM_PROCESSES / JAX_PROCESS_ID when they are set.

    JAX reads JAX_COORDINATOR_ADDRESS itself but not the process count and id; whatever is still
    unset, JAX detects from SLURM, Open MPI, the Cloud TPU VM metadata or GKE.
    """
    count, index = os.environ.get("JAX_NUM_PROCESSES"), os.environ.get("JAX_PROCESS_ID")
    jax.distributed.initialize(
        num_processes=int(count) if count else None, process_id=int(index) if index else None
    )


def main(argv: list[str] | None = None) -> None:
    flags, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    if flags.distributed or launched_as_several_processes():
        initialize_distributed()
    shape = SHAPES[flags.shape] if flags.shape else None
    if flags.aot:
        aot(flags, overrides, shape)
        return
    num_devices = flags.dry_run_devices or jax.device_count()
    config = load_config(flags.config, overrides, num_devices=num_devices, model_shape=shape)
    if flags.dry_run:
        preflight(config, data=False)  # a plan may be made where the data is not (the report says)
        print(dry_run_report(config, num_devices))
        return
    train(config)


def aot(flags: argparse.Namespace, overrides: list[str], shape: dict[str, Any] | None) -> None:
    """`--aot TARGET`: compile the configured step for TARGET's abstract devices and report it."""
    from cft_jax.aot.compile import allow_shared_libtpu, compile_for, format_report, report_numbers
    from cft_jax.aot.targets import resolve_target

    allow_shared_libtpu()
    target = resolve_target(flags.aot)
    config = load_config(flags.config, overrides, num_devices=target.num_devices, model_shape=shape)
    preflight(config, tokenizer=False, data=False)  # only the shapes compile: no tokenizer, data or weights
    model_config = ModelConfig.from_hf(model_config_source(config))
    report = compile_for(config, model_config, target)
    print(format_report(report), flush=True)
    numbers = report_numbers(report)
    if flags.aot_cost:
        from cft_jax.aot.cost import cost_numbers, format_cost, whole_step_cost

        cost = whole_step_cost(config, model_config, target)
        print(format_cost(cost))
        numbers["cost_estimate"] = cost_numbers(cost)
    if flags.aot_json:
        epath.Path(flags.aot_json).write_text(json.dumps(numbers, indent=2) + "\n")
    if flags.aot_hlo:
        epath.Path(flags.aot_hlo).write_text(report.hlo_text)


if __name__ == "__main__":
    run_cli(main)
