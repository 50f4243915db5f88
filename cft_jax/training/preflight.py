"""Preflight: the checks that read files, run once before any model is loaded or step compiled.

Loading a config (`cft_jax.config`) checks its values only. Whether what they name is there and fits
together needs the files, so it is asked here, all at once: one `ConfigError` lists every problem by
its config key, with the value and the fix, seconds into the run instead of after the checkpoint
loaded (or at `step 1: the loss is nan`).

    model      model.hf_path is a directory (local or gs://) or a hub id (hf://OWNER/NAME: its
               config.json alone is downloaded here) with a config.json this decoder reproduces;
               or model.init_config is such a config
    tokenizer  data.tokenizer loads; data.template renders with it; every id it gives, and
               data.pad_id, has a row in the model's embedding
    data       data.train_paths (and data.eval_paths, when evaluated) exist, and the first
               records of each file parse and render

`train()` runs all three, `--dry_run` the first two (a plan is often made where the data is not),
`--aot` the model's alone (it compiles shapes: no tokenizer, data or weights are involved).
"""

from __future__ import annotations

from etils import epath

from cft_jax.config import ConfigError, TrainConfig
from cft_jax.data.pipeline import check_vocab_fits, read_head, training_tokenizer
from cft_jax.data.templates import Encoder
from cft_jax.errors import PATH_ERRORS, InputError
from cft_jax.hub import config_file, is_hub
from cft_jax.models.config import ModelConfig

HEAD_RECORDS = 3  # records read per data file: enough to catch a wrong format, a wrong path, a bad template


def preflight(config: TrainConfig, *, tokenizer: bool = True, data: bool = True) -> None:
    """Raises one `ConfigError` naming every problem found (module docstring); returns when there is none.

    The model is always checked; `tokenizer` and `data` add those checks.
    """
    errors: list[str] = []
    model_config = _model_config(config, errors)
    encoder = None
    if tokenizer or data:
        encoder = _encoder(config, model_config if tokenizer else None, errors)
    if data:
        errors += _data_errors(config, encoder)
    if errors:
        raise ConfigError(
            f"preflight: {len(errors)} problem(s), found before anything was loaded or compiled:\n  "
            + "\n  ".join(errors)
        )


def _model_config(config: TrainConfig, errors: list[str]) -> ModelConfig | None:
    """The model to train, as its HF config says (None, with the reason in `errors`, if it cannot be read)."""
    hf_path = config.model.hf_path
    if not hf_path:
        try:
            return ModelConfig.from_hf(config.model.init_config)
        except InputError as e:
            errors.append(f"model.init_config: {e}")
            return None
    if is_hub(hf_path):
        try:
            return ModelConfig.from_hf(config_file(hf_path))
        except InputError as e:
            errors.append(f"model.hf_path={hf_path!r}: {e}")
            return None
    directory = epath.Path(hf_path)
    if not directory.is_dir():
        errors.append(
            f"model.hf_path={hf_path!r}: no such directory (local or gs://); give a hub id "
            "(hf://OWNER/NAME, downloaded by the run or ahead of it by `python -m cft_jax.convert download "
            "hf://OWNER/NAME DIR`), the HF checkpoint's directory, or model.init_config for a random init"
        )
        return None
    if not (directory / "config.json").is_file():
        errors.append(
            f"model.hf_path={hf_path!r}: no config.json in it; give the HF checkpoint directory itself "
            "(the one holding config.json and the *.safetensors)"
        )
        return None
    try:
        return ModelConfig.from_hf(directory / "config.json")
    except InputError as e:
        errors.append(f"model.hf_path={hf_path!r}: {e}")
        return None


def _encoder(config: TrainConfig, model_config: ModelConfig | None, errors: list[str]) -> Encoder | None:
    """The data's tokenizer and template, checked against each other and against the model's vocabulary
    when `model_config` is given (None, with the reasons in `errors`, if they do not render)."""
    d = config.data
    try:
        tokenizer = training_tokenizer(d)
    except (InputError, *PATH_ERRORS) as e:
        errors.append(f"data.tokenizer: {e}")
        return None
    try:
        encoder = Encoder(
            tokenizer, d.template, d.system_prompt, add_im_end=d.chatml_add_im_end, train_on=d.train_on
        )
    except InputError as e:
        errors.append(f"data.template={d.template!r} with data.tokenizer={d.tokenizer!r}: {e}")
        encoder = None
    if model_config is not None:
        errors += check_vocab_fits(d, model_config.vocab_size)
    return encoder


def _data_errors(config: TrainConfig, encoder: Encoder | None) -> list[str]:
    """Each data file that is missing, or whose first records do not parse (or render, with `encoder`)."""
    d = config.data
    if not d.train_paths:
        return ["data.train_paths=(): no training data; give its files (.jsonl, .json, .parquet, ...)"]
    splits = {"train_paths": d.train_paths}
    if config.evaluation.every_steps:
        splits["eval_paths"] = d.eval_paths
    errors = []
    for key, paths in splits.items():
        for index, path in enumerate(paths):
            try:
                samples = read_head(d, str(path), HEAD_RECORDS)
                if encoder is not None and samples:
                    encoder.encode_batch(samples)
            except (InputError, *PATH_ERRORS) as e:
                errors.append(f"data.{key}[{index}]: {e}")
    return errors
