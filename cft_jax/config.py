"""The trainer's configuration: one typed schema, Python or YAML config files, command-line overrides.

A config file is Python with a `get_config()` returning a nested dict (or an ml_collections
ConfigDict) of the keys it sets, or YAML (`.yaml` / `.yml`) holding the same nested mapping; every
other key keeps the default below. The command line overrides single keys: `--config.optimizer.lr=2e-6`,
a list as `a,b`, JSON or a Python literal. Loading checks every key and value and raises one
`ConfigError` listing each bad key by its dotted name (and its line, in a YAML file), with the fix;
an unknown key is answered with the key it most likely meant, also for the names other trainers use
(`learning_rate` -> `optimizer.lr`).

Loading reads no file but the config itself: whether the checkpoint, the tokenizer and the data are
there and agree with each other is `cft_jax.training.preflight`'s question, asked before training.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import fnmatch
import importlib.util
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from cft_jax.errors import InputError
from cft_jax.models.lora import PROJECTIONS
from cft_jax.models.sharding import mesh_shape

DTYPES = ("float32", "bfloat16")


class ConfigError(InputError):
    """A config key or value the trainer refuses; the message names every bad key."""


@dataclasses.dataclass
class ModelSection:
    """Which weights to train and how to compute with them."""

    # HF checkpoint to fine-tune: a directory (local or gs://) or a hub id hf://OWNER/NAME[@REVISION];
    # "" = random init from `init_config`.
    hf_path: str = ""
    init_config: dict = dataclasses.field(default_factory=dict)  # HF config.json keys of a random-init model.
    param_dtype: Literal["float32", "bfloat16"] = "float32"  # master weights and optimizer state
    compute_dtype: Literal["float32", "bfloat16"] = "bfloat16"  # activations and matmuls
    # What the backward pass keeps (cft_jax.models.transformer.REMAT_POLICIES); "offload" is "full" with
    # each layer's input in pinned host memory instead of on the device.
    remat: Literal["none", "full", "save_dots", "save_dots_no_batch", "offload"] = "full"
    # The attention kernel (cft_jax.models.attention.ATTENTION_IMPLS): "auto" = the fused one of the
    # platform (splash on TPU, pallas_gpu on GPU) where the shapes allow, else "xla".
    attention_impl: Literal["xla", "auto", "splash", "pallas_gpu"] = "xla"


@dataclasses.dataclass
class DataConfig:
    """Every option of the data pipeline (`cft_jax.data.pipeline`); the defaults are the CFT paper's."""

    # Files: .jsonl/.json, .parquet/.arrow, datasets save_to_disk dirs, .array_record, tfds:NAME[:SPLIT],
    # or the output of `python -m cft_jax.data prepare` (then format/template/tokenizer come from it);
    # hf://datasets/OWNER/NAME[@REV][/PATH]: a hub dataset's files under PATH (cft_jax.hub).
    train_paths: tuple[str, ...] = ()
    eval_paths: tuple[str, ...] = ()  # held-out files (the same kinds), for evaluation.every_steps
    format: Literal["auto", "cft", "solution", "alpaca", "messages", "conversations"] = "auto"  # data.records
    tfds_data_dir: str | None = None  # where the tfds: builders are prepared; None = TFDS's default
    # What trains: cft = [question; solution] -> critique; sft = question -> solution.
    objective: Literal["cft", "sft"] = "cft"
    sft_only_correct: bool = False  # with objective sft: only the solutions marked is_correct
    # Rendering (cft_jax.data.templates); system_prompt overrides the template's.
    template: Literal["chatml", "qwen25_math", "llama3", "raw", "tokenizer"] = "chatml"
    system_prompt: str | None = None  # None = the template's own
    # ChatML on a tokenizer without ChatML tokens (DeepSeek, Llama), as the CFT paper's LLaMA-Factory
    # runs did: <|im_end|> added as a new special token that becomes eos (id = the tokenizer's size,
    # which must be < the model's vocab_size), <|im_start|> tokenized as plain text
    # (assets.tokenizers.with_im_end_eos). Off: such a tokenizer is refused.
    chatml_add_im_end: bool = False
    tokenizer: str = "qwen2.5"  # a shipped tokenizer name, a directory (local or gs://) or hf://OWNER/NAME
    seq_len: int = 2048  # tokens per training row (prompt + target)
    length_policy: Literal["truncate", "drop", "fail"] = "truncate"  # cft_jax.data.length
    packing: bool = False  # several examples per row (first-fit decreasing), attention kept apart
    packing_buffer: int = 256  # examples sorted and packed together
    pad_id: int = 0  # the padding token (masked out, never trained on)
    shuffle: bool = True  # a new permutation of the examples each epoch
    seed: int = 0  # the shuffle's
    epochs: int | None = 1  # None: repeat forever
    # Unpacked rows: an epoch's last partial global batch is kept, as HF Trainer's dataloader keeps it
    # (its missing rows are empty, zero loss weight), so an epoch of N rows is ceil(N / batch) updates;
    # True drops those rows (floor). Packed rows flow from one epoch into the next, every batch full.
    drop_last: bool = False
    num_workers: int = 0  # worker processes (Grain mp_prefetch); 0 = in the calling process
    worker_buffer_size: int = 4  # batches each worker prepares ahead
    skip_bad: bool = False  # bad records go to rejects_path instead of stopping the run
    rejects_path: str | None = None  # where skipped records go (JSONL); required with skip_bad
    max_record_chars: int = 1_000_000  # longer records are bad input
    # Multi-turn conversations: the loss on every assistant turn, or on the last one only.
    train_on: Literal["all_assistant", "last_assistant"] = "all_assistant"
    # Mixing: one weight per train path, each path a source drawn from in these proportions (Grain's
    # MapDataset.mix); an epoch is then as many examples as all sources hold. (): the paths concatenated.
    train_weights: tuple[float, ...] = ()
    # Hold out this fraction of the training questions (by a hash of each question, so no question is in
    # both splits) as the eval split; only with eval_paths=().
    val_fraction: float = 0.0


@dataclasses.dataclass
class OptimizerSection:
    """AdamW, global-norm clipping and the learning-rate schedule (`cft_jax.training.optimizer`)."""

    lr: float = 5e-6  # the peak learning rate
    b1: float = 0.9  # AdamW's first-moment decay
    b2: float = 0.999  # AdamW's second-moment decay
    eps: float = 1e-8  # AdamW's denominator epsilon
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    clip_norm: float = 1.0  # <= 0: no clipping
    schedule: Literal["cosine", "linear", "constant"] = "cosine"  # the decay after the linear warm-up
    warmup_ratio: float = 0.1  # used when warmup_steps < 0
    warmup_steps: int = -1  # linear warm-up updates; < 0 = warmup_ratio of the run
    min_lr_ratio: float = 0.0  # the decay ends at min_lr_ratio * lr
    # AdamW's first moment; "param" = the parameter dtype. The second moment always stays in the parameter
    # dtype: bf16 cannot hold its b2 = 0.999 decay (0.999 * nu rounds back to nu).
    mu_dtype: Literal["param", "float32", "bfloat16"] = "param"


@dataclasses.dataclass
class TrainingSection:
    """Batch, duration and where the run lives."""

    workdir: str = "runs/default"  # checkpoints, metrics and exports; a rerun resumes from here
    global_batch: int = 512  # sequences per optimizer update, over all hosts
    accumulation_steps: int = 1  # micro-batches per update (each global_batch / accumulation_steps)
    max_steps: int = 0  # updates in the run (the schedule's length); 0 = data.epochs over the data
    halt_at_step: int = 0  # stop after checkpointing at this step, schedule unchanged; 0 = run to the end
    seed: int = 0  # a random init's parameters, and the RNG key checkpoints record
    vocab_chunk: int = 16384  # vocabulary columns per cross-entropy chunk
    # The train step's XLA / libtpu options: "auto" = the tuned ones for the mesh's chip
    # (cft_jax/training/compiler_options.py), or "--name=value ..." explicitly, "" = compiler defaults.
    compiler_options: str = "auto"


@dataclasses.dataclass
class MeshSection:
    """Device mesh axes (`cft_jax.models.sharding.make_mesh`); -1 = all remaining devices."""

    data: int = 1  # data-parallel groups, each with its own copy of the state (sharded over fsdp x tensor)
    fsdp: int = -1  # devices the parameters and optimizer state are sharded over
    tensor: int = 1  # devices each layer's matmuls are split over


@dataclasses.dataclass
class CheckpointSection:
    every_steps: int = 100  # a resumable checkpoint every N updates; 0 = only at the end
    keep: int = 3  # the newest N stay on disk (and the step with the best validation accuracy)
    async_save: bool = True  # write checkpoints in the background while training goes on
    resume: bool = True  # continue from the newest checkpoint in workdir


@dataclasses.dataclass
class EvaluationSection:
    every_steps: int = 0  # held-out loss every N updates; 0 = never
    num_batches: int = 0  # batches per evaluation; 0 = the whole held-out split
    # The benchmark `python -m cft_jax.eval select` scores the exports on by default (cft_jax.evaluation
    # .suites): the trainer writes it into WORKDIR/run.json. "" = none (select then needs --benchmark).
    select_benchmark: str = ""
    # Validation accuracy every N updates: the current weights answer `benchmark`'s problems (greedy, the
    # KV-cache sampler on the training mesh), graded in the background; the best step's checkpoint is
    # kept and exported to WORKDIR/hf/best (WORKDIR/best.json says which). 0 = never.
    generate_every_steps: int = 0
    # The validation problems: a shipped benchmark (cft_jax.evaluation.suites) or a JSONL file of problems
    # (`id`, `question`, `reference_answer`); "" = select_benchmark.
    benchmark: str = ""
    generate_limit: int = 0  # the benchmark's first N problems; 0 = all of them
    max_new_tokens: int = 2048  # tokens generated per validation answer (eval generate's default)
    # How a problem becomes the model's input (cft_jax.evaluation.prompts): a prompt name or a template
    # with {question}; the default is the Qwen2.5-Math chain-of-thought prompt the CFT papers evaluate with.
    prompt: str = "qwen25-math-cot"
    generate_batch_size: int = 64  # rows per sampler call, rounded up to a multiple of mesh data x fsdp
    grade_workers: int = 2  # grader processes (sympy); they run while training goes on


@dataclasses.dataclass
class ExportSection:
    every_steps: int = 0  # HF export every N updates; 0 = never during the run
    at_end: bool = True  # HF export of the final step
    dtype: Literal["float32", "bfloat16"] = "bfloat16"  # of the exported weights
    keep: int = 0  # the newest N exports stay (and the one eval select marked best); 0 = all
    # A LoRA run's export: "merged" = full HF weights with the adapters folded in (export.dtype);
    # "adapter" = the adapters alone in PEFT's format (adapter_config.json + adapter_model.safetensors).
    lora: Literal["merged", "adapter"] = "merged"


@dataclasses.dataclass
class LoggingSection:
    every_steps: int = 1  # metrics every N updates
    jsonl: bool = True  # workdir/metrics.jsonl
    tensorboard: bool = True  # workdir/tensorboard
    progress_bar: bool = True  # tqdm on the console; off: one line per logged step
    peak_flops_per_device: float = 0.0  # for MFU; 0 = look the device kind up (unknown kinds: no MFU)
    # Weights & Biases project to log the same scalars and the config to, "" = none (`pip install
    # 'cft_jax[wandb]'`). The API key comes from the environment (WANDB_API_KEY or `wandb login`) only.
    wandb_project: str = ""
    wandb_entity: str = ""  # the W&B team or user to log under; "" = the API key's default entity
    wandb_run_name: str = ""  # "" = a name W&B picks; a resumed run keeps its W&B run (workdir/wandb_run_id)


@dataclasses.dataclass
class LoRASection:
    """Low-rank adapters (`cft_jax.models.lora`): rank 0 = off, full fine-tuning."""

    rank: int = 0  # > 0: train only rank-`rank` adapters on the targeted projections, the base frozen
    alpha: float = 16.0  # the adapters' output is scaled by alpha / rank (PEFT's lora_alpha)
    dropout: float = 0.0  # dropout on the adapters' input while training (PEFT's lora_dropout)
    # fnmatch patterns over q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj
    targets: tuple[str, ...] = ("*_proj",)


@dataclasses.dataclass
class TrainConfig:
    model: ModelSection = dataclasses.field(default_factory=ModelSection)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optimizer: OptimizerSection = dataclasses.field(default_factory=OptimizerSection)
    training: TrainingSection = dataclasses.field(default_factory=TrainingSection)
    mesh: MeshSection = dataclasses.field(default_factory=MeshSection)
    checkpoint: CheckpointSection = dataclasses.field(default_factory=CheckpointSection)
    evaluation: EvaluationSection = dataclasses.field(default_factory=EvaluationSection)
    export: ExportSection = dataclasses.field(default_factory=ExportSection)
    logging: LoggingSection = dataclasses.field(default_factory=LoggingSection)
    lora: LoRASection = dataclasses.field(default_factory=LoRASection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_module(path: str | Path) -> Any:
    """The config file at `path` as a module (recipes derived from another load their base this way)."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"cft_config_{path.stem}", path)
    if spec is None or not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


YAML_SUFFIXES = (".yaml", ".yml")


def load_config(
    path: str | Path,
    overrides: list[str] = (),
    *,
    num_devices: int | None = None,
    model_shape: dict[str, Any] | None = None,
) -> TrainConfig:
    """Reads `path` (Python's `get_config()`, or YAML), applies `--config.KEY=VALUE` overrides, validates.

    With `num_devices` the mesh is resolved too and the batch checked against it. `model_shape` (an
    HF config.json's keys, e.g. `cft_jax.models.shapes.SHAPES[name]`) replaces the model to load by
    its architecture alone: for planning and compiling a run before its weights are downloaded.
    """
    path = Path(path)
    if path.suffix in YAML_SUFFIXES:
        values, lines = read_yaml(path)
    else:
        values, lines = python_values(path), {}
    if model_shape is not None:
        values = {
            **values,
            "model": {**values.get("model", {}), "hf_path": "", "init_config": dict(model_shape)},
        }
    return build_config(values, overrides, source=str(path), num_devices=num_devices, lines=lines)


def python_values(path: Path) -> dict[str, Any]:
    """The nested dict a Python config file's `get_config()` returns."""
    module = config_module(path)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path}: defines no get_config(); it must return a dict of config keys")
    values = module.get_config()
    return values.to_dict() if hasattr(values, "to_dict") else values


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading `5e-6` as a float as YAML 1.2 and Python do (YAML 1.1, which PyYAML
    implements, needs a dot: `5.0e-6`; without this a learning rate would load as a string)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """(the nested values, each dotted key's line) of a YAML config file: the same keys as `get_config()`."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    text = path.read_text()
    try:
        root = yaml.compose(text, Loader=_YamlLoader)
        values = yaml.load(text, Loader=_YamlLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {e.problem or e.context}") from None
    if values is None:
        return {}, {}
    if not isinstance(values, dict):
        raise ConfigError(
            f"{path}:{root.start_mark.line + 1}: the file must be a mapping of sections "
            "(model:, data:, optimizer:, training:, ...)"
        )
    lines: dict[str, int] = {}
    _key_lines(root, "", lines, path)
    return values, lines


def _key_lines(node: yaml.MappingNode, prefix: str, lines: dict[str, int], path: Path) -> None:
    """Fills `lines` with the line of every key under `node`; a key given twice is refused (YAML would
    silently keep the last)."""
    for key_node, value_node in node.value:
        key, line = f"{prefix}{key_node.value}", key_node.start_mark.line + 1
        if key in lines:
            raise ConfigError(f"{path}:{line}: {key}: given twice (first on line {lines[key]}); keep one")
        lines[key] = line
        if isinstance(value_node, yaml.MappingNode):
            _key_lines(value_node, key + ".", lines, path)


def build_config(
    values: dict[str, Any],
    overrides: list[str] = (),
    *,
    source: str = "config",
    num_devices: int | None = None,
    lines: dict[str, int] | None = None,
) -> TrainConfig:
    """Defaults <- `values` (nested dict) <- `overrides` ("a.b=v" strings, with or without `--config.`).

    `lines` (dotted key -> line in `source`, from a YAML file) puts `source:line:` before each error of
    a key the file set and no override replaced.
    """
    config = TrainConfig()
    errors: list[str] = []
    for key, value in _flatten(values):
        _assign(config, key, value, from_text=False, errors=errors)
    overridden = set()
    for override in overrides:
        key, sep, text = override.removeprefix("--config.").partition("=")
        if not sep:
            errors.append(f"override {override!r}: write --config.KEY=VALUE")
            continue
        overridden.add(key)
        _assign(config, key, text, from_text=True, errors=errors)
    # Keys that failed above kept their defaults, so the value checks below still see a typed config.
    errors += validate(config, num_devices=num_devices)
    if errors:
        lines = {**(lines or {}), **dict.fromkeys(overridden)}  # an override's error is not the file's
        errors = [_located(error, source, lines) for error in errors]
        raise ConfigError(f"{source}: {len(errors)} bad config value(s):\n  " + "\n  ".join(errors))
    return config


def _located(error: str, source: str, lines: dict[str, int]) -> str:
    """`error` (which starts with the dotted key it is about) as `source:line: error` where the line of
    the key, or of the section it is in, is known (None: an override set it)."""
    key = re.match(r"[\w.]*", error).group()
    while key and key not in lines:
        key = key.rpartition(".")[0]
    line = lines.get(key)
    return f"{source}:{line}: {error}" if line else error


def _flatten(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dict -> [("a.b", v)]; a dict stops being descended where the schema holds a dict field."""
    items = []
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted.count(".") == 0:
            items.extend(_flatten(value, dotted + "."))
        else:
            items.append((dotted, value))
    return items


def _fields(obj: Any) -> dict[str, Any]:
    hints = typing.get_type_hints(type(obj))
    return {f.name: hints[f.name] for f in dataclasses.fields(obj)}


def _assign(config: TrainConfig, key: str, value: Any, *, from_text: bool, errors: list[str]) -> None:
    """Sets dotted `key` on the config, checking that it exists and that `value` has its type."""
    *sections, name = key.split(".")
    target = config
    for depth, section in enumerate(sections):
        fields = _fields(target)
        if section in fields and isinstance(getattr(target, section), dict):
            # A free-form dict key (model.init_config.hidden_size=128): its entries are not in the schema.
            entry = getattr(target, section)
            for inner in [*sections[depth + 1 :]]:
                entry = entry.setdefault(inner, {})
            entry[name] = _parse_text(value, Any) if from_text else value
            return
        if section not in fields or not dataclasses.is_dataclass(getattr(target, section)):
            errors.append(_unknown(".".join(sections[: depth + 1]), target, ".".join(sections[:depth]), key))
            return
        target = getattr(target, section)
    fields = _fields(target)
    if not sections and name in fields:
        errors.append(f"{key}={value!r}: a section, not a value; set its keys ({key}.KEY, or a mapping)")
        return
    if not sections or name not in fields:
        errors.append(_unknown(key, target, ".".join(sections), key))
        return
    try:
        setattr(target, name, _coerce(value, fields[name], from_text=from_text))
    except (TypeError, ValueError, SyntaxError) as e:
        errors.append(f"{key}={value!r}: {e}")


# What other trainers (Hugging Face TrainingArguments, LLaMA-Factory, ms-swift, Axolotl) call a key, for
# the hint an unknown key gets: their name -> the key here, and a note where the meaning differs.
COMMON_NAMES = {
    "learning_rate": "optimizer.lr",
    "lr_scheduler_type": "optimizer.schedule",
    "warmup_ratio": "optimizer.warmup_ratio",
    "warmup_steps": "optimizer.warmup_steps",
    "weight_decay": "optimizer.weight_decay",
    "max_grad_norm": "optimizer.clip_norm",
    "adam_beta1": "optimizer.b1",
    "adam_beta2": "optimizer.b2",
    "adam_epsilon": "optimizer.eps",
    "per_device_train_batch_size": "training.global_batch (sequences per update over all devices: "
    "per-device batch x devices x accumulation_steps)",
    "train_batch_size": "training.global_batch",
    "global_batch_size": "training.global_batch",
    "batch_size": "training.global_batch",
    "gradient_accumulation_steps": "training.accumulation_steps",
    "num_train_epochs": "data.epochs",
    "num_epochs": "data.epochs",
    "max_steps": "training.max_steps",
    "output_dir": "training.workdir",
    "cutoff_len": "data.seq_len",
    "max_seq_length": "data.seq_len",
    "max_length": "data.seq_len",
    "sequence_len": "data.seq_len",
    "model_max_length": "data.seq_len",
    "model_name_or_path": "model.hf_path",
    "dataset": "data.train_paths",
    "train_file": "data.train_paths",
    "eval_dataset": "data.eval_paths",
    "validation_file": "data.eval_paths",
    "dataset_dir": "data.train_paths",
    "bf16": "model.compute_dtype ('bfloat16')",
    "gradient_checkpointing": "model.remat",
    "flash_attn": "model.attention_impl",
    "preprocessing_num_workers": "data.num_workers",
    "dataloader_num_workers": "data.num_workers",
    "save_steps": "checkpoint.every_steps",
    "save_total_limit": "checkpoint.keep",
    "resume_from_checkpoint": "checkpoint.resume",
    "eval_steps": "evaluation.every_steps",
    "logging_steps": "logging.every_steps",
    "report_to": "logging.wandb_project (W&B), logging.tensorboard",
    "run_name": "logging.wandb_run_name",
    "neat_packing": "data.packing",
}


def _unknown(key: str, target: Any, prefix: str, full_key: str) -> str:
    """`key: unknown config key; did you mean ...?`: the key in `target` (at `prefix`) that `key` most
    likely meant; `full_key` is the whole dotted key given, of which `key` may be the first sections."""
    known = [f"{prefix}.{name}" if prefix else name for name in _fields(target)]
    hint = _suggestion(key, known, full_key)
    hint = f"did you mean {hint}?" if hint else f"known keys here: {', '.join(known)}"
    return f"{key}: unknown config key; {hint}"


def _suggestion(key: str, known: list[str], full_key: str) -> str | None:
    """A misspelt section first; then the key's last component as another trainer names it
    (`training.learning_rate` -> optimizer.lr) or as a key of another section (`training.lr` ->
    optimizer.lr); then the closest name anywhere (this section's first); then the closest key here."""
    section_typo = key != full_key
    close = difflib.get_close_matches(key, known, n=1)
    if close and section_typo:
        return repr(close[0])
    name = full_key.rpartition(".")[2]
    if name in COMMON_NAMES:
        target, _, note = COMMON_NAMES[name].partition(" ")
        return f"{target!r}" + (f" {note}" if note else "")
    everywhere = _all_keys()
    elsewhere = [k for k in everywhere if k.rpartition(".")[2] == name]
    if elsewhere:
        return " or ".join(map(repr, elsewhere))
    names = sorted({k.rpartition(".")[2] for k in everywhere} | set(COMMON_NAMES))
    near = difflib.get_close_matches(name, names, n=1, cutoff=0.75)
    if near and near[0] in COMMON_NAMES:
        return repr(COMMON_NAMES[near[0]].partition(" ")[0])
    if near:
        matches = [k for k in everywhere if k.rpartition(".")[2] == near[0]]
        return " or ".join(map(repr, [k for k in matches if k in known] or matches))
    return repr(close[0]) if close else None


def _all_keys() -> list[str]:
    """Every `section.key` of the schema."""
    return [
        f"{section}.{name}"
        for section, kind in typing.get_type_hints(TrainConfig).items()
        for name in typing.get_type_hints(kind)
    ]


def _coerce(value: Any, annotation: Any, *, from_text: bool) -> Any:
    """`value` as `annotation` (int, float, str, bool, dict, list, tuple, Literal, Optional)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"must be one of {list(args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        if (value is None or (from_text and value == "None")) and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, from_text=from_text)
            except (TypeError, ValueError, SyntaxError):
                continue
        raise TypeError(f"must be {annotation}")
    base = origin or annotation
    if from_text and base in (list, tuple):
        value = _parse_sequence(value)
    elif from_text and base is not str:
        value = _parse_text(value, base)
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base in (list, tuple) and isinstance(value, (list, tuple)):
        return base(_coerce_items(value, args, from_text=from_text))
    if base is Any or (isinstance(value, base) and not (base is int and isinstance(value, bool))):
        return value
    raise TypeError(f"must be {getattr(base, '__name__', base)}, got {type(value).__name__}")


def _coerce_items(values: list | tuple, args: tuple, *, from_text: bool) -> list:
    """Each item of a list or tuple as its annotation's item type (`tuple[str, ...]`, `list[float]`)."""
    if not args:
        return list(values)
    if len(args) == 1 or args[1] is Ellipsis:
        args = (args[0],) * len(values)
    elif len(args) != len(values):
        raise ValueError(f"must have {len(args)} items, got {len(values)}")
    items = []
    for index, (value, annotation) in enumerate(zip(values, args, strict=True)):
        try:
            items.append(_coerce(value, annotation, from_text=from_text and isinstance(value, str)))
        except (TypeError, ValueError, SyntaxError) as e:
            raise type(e)(f"item {index} ({value!r}): {e}") from None
    return items


def _parse_sequence(text: str) -> list:
    """A list from the command line: `a,b` (items read as the field's item type), or in brackets as JSON
    (`["a", "b"]`) or a Python literal (`('a',)`)."""
    text = text.strip()
    if not text.startswith(("[", "(")):
        return [item.strip() for item in text.split(",")] if text else []
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, (list, tuple)):
            return list(value)
    raise ValueError(f'cannot read {text!r} as a list: write a,b or JSON ["a", "b"]')


def _parse_text(text: str, base: type) -> Any:
    if base is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError("must be true or false")
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if base is Any:
            return text
        raise ValueError(f"cannot read {text!r} as a {getattr(base, '__name__', base)} literal") from None


def parse_flags(text: str) -> dict[str, Any]:
    """`training.compiler_options` text as options: '--a=1 --b=true --c=x' -> {"a": 1, "b": True, "c": "x"}.

    ValueError naming a malformed flag."""
    options: dict[str, Any] = {}
    for flag in text.split():
        name, sep, value = flag.removeprefix("--").partition("=")
        if not flag.startswith("--") or not sep or not name:
            raise ValueError(
                f"training.compiler_options: {flag!r} is not --name=value "
                "(e.g. --xla_tpu_scoped_vmem_limit_kib=98304); use 'auto' for the tuned defaults"
            )
        typed = {"true": True, "false": False}.get(value.lower(), int(value) if value.isdigit() else value)
        options[name] = typed
    return options


def format_flags(options: dict[str, Any]) -> str:
    """`parse_flags`'s inverse: {"a": 1, "b": True} -> '--a=1 --b=true' (XLA spells booleans lower-case)."""
    return " ".join(f"--{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in options.items())


def installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # sys.modules[module] is None: its import is blocked
        return False


def resolve_mesh(mesh: MeshSection, num_devices: int) -> tuple[int, int, int]:
    """(data, fsdp, tensor) with the one -1 axis taking the remaining devices (`mesh_shape`)."""
    try:
        return mesh_shape(mesh.data, mesh.fsdp, mesh.tensor, num_devices)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def data_errors(data: DataConfig) -> list[str]:
    """The data section's bad values, one line per key: also what the data pipeline refuses when handed a
    `DataConfig` built in code (which no loader has type-checked)."""
    errors = [
        f"data.{name}={getattr(data, name)!r}: must be one of {list(typing.get_args(annotation))}"
        for name, annotation in _fields(data).items()
        if typing.get_origin(annotation) is Literal and getattr(data, name) not in typing.get_args(annotation)
    ]
    positive = {
        "seq_len": data.seq_len,
        "packing_buffer": data.packing_buffer,
        "worker_buffer_size": data.worker_buffer_size,
        "max_record_chars": data.max_record_chars,
    }
    errors += [f"data.{key}={value}: must be > 0" for key, value in positive.items() if value <= 0]
    if data.epochs is not None and data.epochs <= 0:
        errors.append(f"data.epochs={data.epochs}: must be > 0, or None to repeat forever")
    if data.num_workers < 0:
        errors.append(f"data.num_workers={data.num_workers}: must be >= 0 (0 = no worker processes)")
    if data.skip_bad and not data.rejects_path:
        errors.append("data.skip_bad=True: set data.rejects_path, the JSONL file skipped records go to")
    if data.train_weights and len(data.train_weights) != len(data.train_paths):
        errors.append(
            f"data.train_weights={data.train_weights}: one weight per data.train_paths entry "
            f"({len(data.train_paths)}), or () to concatenate the paths"
        )
    if any(not w > 0 for w in data.train_weights):
        errors.append(f"data.train_weights={data.train_weights}: every weight must be > 0")
    if not 0 <= data.val_fraction < 1:
        errors.append(f"data.val_fraction={data.val_fraction}: must be in [0, 1) (0 = no held-out split)")
    if data.val_fraction and data.eval_paths:
        errors.append(
            f"data.val_fraction={data.val_fraction} with data.eval_paths={data.eval_paths}: give one eval "
            "split, the held-out fraction of the training questions or the eval files"
        )
    return errors


def lora_errors(lora: LoRASection) -> list[str]:
    """The lora section's bad values, one line per key."""
    if lora.rank < 0:
        return [f"lora.rank={lora.rank}: must be > 0 to train LoRA adapters, or 0 for full fine-tuning"]
    if lora.rank == 0:
        changed = [f"lora.{f.name}" for f in dataclasses.fields(lora) if getattr(lora, f.name) != f.default]
        return [f"{', '.join(changed)} set with lora.rank=0 (LoRA off): set lora.rank > 0"] if changed else []
    errors = []
    if lora.alpha <= 0:
        errors.append(f"lora.alpha={lora.alpha}: must be > 0 (the adapters are scaled by alpha / rank)")
    if not 0 <= lora.dropout < 1:
        errors.append(f"lora.dropout={lora.dropout}: must be in [0, 1)")
    if not lora.targets:
        errors.append(f"lora.targets=(): name at least one of {list(PROJECTIONS)}")
    for pattern in lora.targets:
        if not fnmatch.filter(PROJECTIONS, pattern):
            errors.append(
                f"lora.targets: {pattern!r} matches none of {list(PROJECTIONS)}; use their names or "
                "fnmatch patterns over them, e.g. ('q_proj', 'v_proj') or ('*_proj',)"
            )
    return errors


def validation_errors(evaluation: EvaluationSection) -> list[str]:
    """The in-training validation keys' bad values (evaluation.generate_*), one line per key."""
    if evaluation.generate_every_steps == 0:
        return []
    errors = []
    if not (evaluation.benchmark or evaluation.select_benchmark):
        errors.append(
            f"evaluation.generate_every_steps={evaluation.generate_every_steps} with no benchmark: set "
            "evaluation.benchmark (a shipped benchmark such as math-500, or a problems JSONL file), or "
            "evaluation.select_benchmark"
        )
    positive = {
        "evaluation.max_new_tokens": evaluation.max_new_tokens,
        "evaluation.generate_batch_size": evaluation.generate_batch_size,
        "evaluation.grade_workers": evaluation.grade_workers,
    }
    return errors + [f"{key}={value}: must be > 0" for key, value in positive.items() if value <= 0]


def validate(config: TrainConfig, *, num_devices: int | None = None) -> list[str]:
    """Every type, range and cross-key error, one line per bad key (empty when the config is good).

    Only the values are checked, so a config loads anywhere: the files it names are `preflight`'s.
    """
    errors = []
    m, t, o = config.model, config.training, config.optimizer
    if bool(m.hf_path) == bool(m.init_config):
        errors.append(
            "model.hf_path / model.init_config: set exactly one (weights to load, or a random init)"
        )
    positive = {
        "training.global_batch": t.global_batch,
        "training.accumulation_steps": t.accumulation_steps,
        "training.vocab_chunk": t.vocab_chunk,
        "optimizer.lr": o.lr,
        "checkpoint.keep": config.checkpoint.keep,
        "logging.every_steps": config.logging.every_steps,
    }
    errors += [f"{key}={value}: must be > 0" for key, value in positive.items() if value <= 0]
    non_negative = {
        "training.max_steps": t.max_steps,
        "training.halt_at_step": t.halt_at_step,
        "checkpoint.every_steps": config.checkpoint.every_steps,
        "evaluation.every_steps": config.evaluation.every_steps,
        "evaluation.num_batches": config.evaluation.num_batches,
        "evaluation.generate_every_steps": config.evaluation.generate_every_steps,
        "evaluation.generate_limit": config.evaluation.generate_limit,
        "export.every_steps": config.export.every_steps,
        "export.keep": config.export.keep,
        "optimizer.weight_decay": o.weight_decay,
    }
    errors += [f"{key}={value}: must be >= 0" for key, value in non_negative.items() if value < 0]
    errors += data_errors(config.data)
    errors += lora_errors(config.lora)
    if config.data.epochs is None and t.max_steps == 0:
        errors.append(
            "training.max_steps=0 with data.epochs=None (repeat forever): set max_steps or data.epochs"
        )
    if config.evaluation.every_steps > 0 and not config.data.eval_paths and not config.data.val_fraction:
        errors.append(
            f"evaluation.every_steps={config.evaluation.every_steps} with data.eval_paths=(): give the "
            "held-out files in data.eval_paths, hold out data.val_fraction of the training questions, or "
            "set evaluation.every_steps=0"
        )
    errors += validation_errors(config.evaluation)
    if not 0 <= o.warmup_ratio <= 1:
        errors.append(f"optimizer.warmup_ratio={o.warmup_ratio}: must be in [0, 1]")
    if not 0 <= o.min_lr_ratio <= 1:
        errors.append(f"optimizer.min_lr_ratio={o.min_lr_ratio}: must be in [0, 1]")
    for key, beta in (("optimizer.b1", o.b1), ("optimizer.b2", o.b2)):
        if not 0 <= beta < 1:
            errors.append(f"{key}={beta}: must be in [0, 1)")
    if t.compiler_options.strip() != "auto":
        try:
            parse_flags(t.compiler_options)
        except ValueError as e:
            errors.append(str(e))
    if t.accumulation_steps > 0 and t.global_batch % t.accumulation_steps:
        errors.append(
            f"training.accumulation_steps={t.accumulation_steps}: "
            f"must divide training.global_batch={t.global_batch}"
        )
    if config.logging.wandb_project and not installed("wandb"):
        errors.append(
            f"logging.wandb_project={config.logging.wandb_project!r}: W&B is not installed; "
            "pip install 'cft_jax[wandb]', or set logging.wandb_project=''"
        )
    if num_devices is not None and not errors:
        try:
            data, fsdp, _ = resolve_mesh(config.mesh, num_devices)
        except ConfigError as e:
            return errors + [str(e)]
        micro_batch = t.global_batch // t.accumulation_steps
        if micro_batch % (data * fsdp):
            errors.append(
                f"training.global_batch={t.global_batch}: each micro-batch ({micro_batch} sequences) "
                f"must split evenly over mesh data*fsdp={data * fsdp}; "
                "change the batch, accumulation_steps or the mesh"
            )
    return errors
