"""The training and evaluation input pipelines: records -> tokens -> rows -> per-host batches (Grain).

    read + validate (records.py) -> [hold out val_fraction by question (splits.py)]
        -> render + tokenize (templates.py) -> length policy (length.py)
        -> Grain: shuffle by seed -> epochs [or: each source shuffled, repeated and mixed by weight]
        -> host shard -> pack or pad (packing.py) -> batch
        (unpacked, each epoch is whole global batches: its last partial one completed with empty rows)
        -> worker processes

Reading and tokenizing happen once, up front, in the calling process: every bad record is then
reported with its file and line before training starts, the counts (rejected, truncated,
dropped, packing efficiency) are known, and the trainer knows the epoch size. Large datasets are
tokenized once with `python -m cft_jax.data prepare`; the pipeline then reads the ArrayRecord
file directly and worker processes only receive its path.

Every batch is a dict of numpy int32 arrays shaped [per_host_batch, seq_len]:
`input_ids`, `loss_mask`, `segment_ids` (0 = padding) and `positions`.
The training iterator's state (`get_state()` / `set_state()`) is a JSON-serialisable dict;
restoring it continues with exactly the batches an uninterrupted run would have produced.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grain
import numpy as np

from cft_jax import hub
from cft_jax.assets.tokenizers import IM_END, load_tokenizer, write_im_end_tokenizer
from cft_jax.config import DataConfig, data_errors
from cft_jax.data import length as length_policy
from cft_jax.data.packing import PackIterDataset, first_fit_decreasing, make_row, packing_efficiency, pad_row
from cft_jax.data.prepared import PreparedSource, is_prepared
from cft_jax.data.records import ReadOptions, ReadReport, RecordError, Rejects, Sample, read_samples
from cft_jax.data.splits import split_by_key
from cft_jax.data.templates import Encoded, Encoder
from cft_jax.errors import InputError

Batch = dict[str, np.ndarray]
BATCH_KEYS = ("input_ids", "loss_mask", "segment_ids", "positions")
# What orders the questions of a `val_fraction` split (splits.py); fixed, so the split does not move
# with the shuffling seed.
VAL_SALT = "cft_jax-val-split"


@dataclasses.dataclass
class DataReport:
    """Counts for one split: nothing is dropped, truncated or rejected without being counted."""

    read: ReadReport
    length: length_policy.LengthReport
    examples: int = 0
    target_tokens: int = 0
    packing_efficiency: float = 1.0
    rows_per_epoch: int = 0
    held_out: int = 0  # records of these files in the other split of a data.val_fraction split
    sources: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # mixing: per source

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_examples(cfg: DataConfig, split: str = "train") -> tuple[Sequence[Any], DataReport]:
    """All examples of a split, tokenized and length-fitted, with the report.

    Returns a random-access sequence of {"input_ids", "loss_mask"} ([n] int32 each): a list for
    raw records, a `PreparedSource` for a prepared ArrayRecord file. Mixed sources
    (`cfg.train_weights`) come concatenated, with their reports summed (`load_sources` has each).
    """
    sources = load_sources(cfg, split)
    if len(sources) == 1:
        return sources[0]
    examples = [source[i] for source, _ in sources for i in range(len(source))]
    return examples, _merged([report for _, report in sources])


def load_sources(cfg: DataConfig, split: str = "train") -> list[tuple[Sequence[Any], DataReport]]:
    """(examples, report) of each source of a split: each train path when `cfg.train_weights` mixes
    them, else one for all its paths. With `cfg.val_fraction`, the eval split is the held-out
    questions of the train paths and the train split the rest."""
    _validate(cfg)
    paths = _split_paths(cfg, split)
    groups = [[p] for p in paths] if split == "train" and cfg.train_weights else [paths]
    prepared = [p for p in paths if is_prepared(p)]
    if cfg.val_fraction and prepared:
        raise InputError(
            f"data.val_fraction={cfg.val_fraction}: {prepared[0]} is prepared (tokens only, no questions to "
            "split by); give the raw records, or prepare the two splits and set data.eval_paths"
        )
    # One rejects file for every source. The held-out eval split re-reads the train files after the
    # train split filed their bad records: it adds only its own over-long ones.
    held_out_eval = split == "eval" and bool(cfg.val_fraction)
    rejects = Rejects(cfg.rejects_path if cfg.skip_bad else None, append=held_out_eval)
    read_rejects = Rejects(None) if held_out_eval else rejects
    reads: list[tuple[list[Sample], ReadReport] | None] = []
    for group in groups:
        if len(group) == 1 and is_prepared(group[0]):
            reads.append(None)
        else:
            report = ReadReport(rejects_path=cfg.rejects_path)
            reads.append((_read(cfg, group, read_rejects, report), report))
    held_out = [0] * len(groups)
    if cfg.val_fraction:
        # One split over every source's questions: a question in two files is held out from both.
        split_of = held_out_split(cfg, [s for samples, _ in reads for s in samples])
        keep = "validation" if split == "eval" else "train"
        for index, (samples, report) in enumerate(reads):
            kept = [s for s in samples if split_of[s.question_key] == keep]
            held_out[index] = len(samples) - len(kept)
            reads[index] = (kept, report)
    sources = []
    for index, (group, read) in enumerate(zip(groups, reads, strict=True)):
        if read is None:
            source, report = _prepared(cfg, group[0])
        else:
            encoded, report = _encode(cfg, read[0], read[1], rejects)
            source = [{"input_ids": e.input_ids, "loss_mask": e.loss_mask} for e in encoded]
        report.held_out = held_out[index]
        if len(groups) > 1:
            weight = cfg.train_weights[index]
            report.sources = [{"path": group[0], "weight": weight, "examples": report.examples}]
        sources.append((source, report))
    return sources


def held_out_split(cfg: DataConfig, samples: Sequence[Sample]) -> dict[str, str]:
    """{question key: "train" or "validation"}: `cfg.val_fraction` of the questions held out."""
    keys = (s.question_key for s in samples)
    return split_by_key(keys, {"validation": cfg.val_fraction}, rest="train", salt=VAL_SALT)


def _prepared(cfg: DataConfig, path: str) -> tuple[PreparedSource, DataReport]:
    source = PreparedSource(path, expect=_encoding_key(cfg))
    report = DataReport(ReadReport(read=len(source), kept=len(source)), length_policy.LengthReport())
    report.examples = len(source)
    report.target_tokens = source.target_tokens()
    _fill_packing(report, source.lengths(), cfg)
    return source, report


def _merged(reports: list[DataReport]) -> DataReport:
    """The reports of mixed sources as one: counts summed, packing efficiency weighted by rows."""
    total = DataReport(ReadReport(), length_policy.LengthReport())
    for report in reports:
        for part, into in ((report.read, total.read), (report.length, total.length)):
            for field in dataclasses.fields(part):
                value = getattr(part, field.name)
                if isinstance(value, int):
                    setattr(into, field.name, getattr(into, field.name) + value)
        total.read.formats.update(report.read.formats)
        total.read.rejects_path = report.read.rejects_path
        total.examples += report.examples
        total.target_tokens += report.target_tokens
        total.rows_per_epoch += report.rows_per_epoch
        total.held_out += report.held_out
        total.sources += report.sources
    total.packing_efficiency = sum(r.packing_efficiency * r.rows_per_epoch for r in reports) / max(
        total.rows_per_epoch, 1
    )
    return total


def encode_split(cfg: DataConfig, paths: Sequence[str]) -> tuple[list[Encoded], DataReport]:
    """Reads, tokenizes and applies the length policy; bad records raise or go to the rejects file."""
    _validate(cfg)
    read_report = ReadReport(rejects_path=cfg.rejects_path)
    rejects = Rejects(cfg.rejects_path if cfg.skip_bad else None)
    return _encode(cfg, _read(cfg, paths, rejects, read_report), read_report, rejects)


def _read(cfg: DataConfig, paths: Sequence[str], rejects: Rejects, report: ReadReport) -> list[Sample]:
    return read_samples(paths, _read_options(cfg), skip_bad=cfg.skip_bad, rejects=rejects, report=report)


def _encode(
    cfg: DataConfig, samples: list[Sample], read_report: ReadReport, rejects: Rejects
) -> tuple[list[Encoded], DataReport]:
    encoder = Encoder(
        training_tokenizer(cfg),
        cfg.template,
        cfg.system_prompt,
        add_im_end=cfg.chatml_add_im_end,
        train_on=cfg.train_on,
    )
    encoded, lengths = _apply_length_policy(samples, encoder, cfg, rejects)
    read_report.rejected += lengths.rejected
    report = DataReport(read_report, lengths, examples=len(encoded))
    report.target_tokens = int(sum(int(e.loss_mask.sum()) for e in encoded))
    _fill_packing(report, [len(e.input_ids) for e in encoded], cfg)
    return encoded, report


def read_head(cfg: DataConfig, path: str, records: int = 3) -> list[Sample]:
    """The first `records` records of the file `path`, read as `encode_split` reads them: a cheap look
    before training. A prepared file is checked against `cfg` instead (its sidecar) and gives none.
    Raises the error reading the whole file would raise at one of those records; with `cfg.skip_bad`
    a bad one is skipped (and written nowhere).
    """
    files = hub.data_files(path)  # a dataset id: its files, downloaded
    if len(files) == 1 and is_prepared(files[0]):
        PreparedSource(files[0], expect=_encoding_key(cfg))
        return []
    return read_samples(files, _read_options(cfg), skip_bad=cfg.skip_bad, limit=records)


def _read_options(cfg: DataConfig) -> ReadOptions:
    return ReadOptions(
        cfg.format, cfg.objective, cfg.sft_only_correct, cfg.max_record_chars, cfg.tfds_data_dir
    )


def training_tokenizer(cfg: DataConfig) -> Any:
    """The tokenizer the examples are tokenized with (cached; do not modify it): `cfg.tokenizer`, with
    `<|im_end|>` added as eos when `cfg.chatml_add_im_end`. Decode the training ids with this one."""
    name = str(hub.tokenizer_dir(cfg.tokenizer)) if hub.is_hub(cfg.tokenizer) else cfg.tokenizer
    return load_tokenizer(name, add_im_end=cfg.chatml_add_im_end)


def check_vocab_fits(cfg: DataConfig, vocab_size: int) -> list[str]:
    """Why some token id of the training tokenizer (or `cfg.pad_id`) would have no row in a `vocab_size`
    embedding (empty: fine). The trainer never resizes the embedding, and an id past its end reads a
    NaN row (JAX fills out-of-bounds gathers), so the first loss would be NaN instead of this message.
    """
    errors = []
    tokenizer = training_tokenizer(cfg)
    size = len(tokenizer)
    added = tokenizer.convert_tokens_to_ids(IM_END) if cfg.chatml_add_im_end else -1
    if added >= vocab_size:
        errors.append(
            f"data.chatml_add_im_end=True: {IM_END} gets token id {added} in tokenizer {cfg.tokenizer!r}, "
            f"but the model's embedding has vocab_size={vocab_size} rows (ids 0..{vocab_size - 1}) and is "
            "not resized; use a model with spare embedding rows, a tokenizer that has ChatML tokens, or "
            "data.chatml_add_im_end=False with template 'tokenizer' or 'raw'"
        )
    elif size > vocab_size:
        errors.append(
            f"data.tokenizer={cfg.tokenizer!r}: {size} tokens (ids 0..{size - 1}), but the model's "
            f"embedding has vocab_size={vocab_size} rows and is not resized; use the model's own tokenizer "
            "(e.g. data.tokenizer = its HF checkpoint directory) or a model whose vocab_size covers it"
        )
    if not 0 <= cfg.pad_id < vocab_size:
        errors.append(
            f"data.pad_id={cfg.pad_id}: no row in the model's embedding (vocab_size={vocab_size}); "
            "use an id in [0, vocab_size), e.g. 0 or the tokenizer's pad token id"
        )
    return errors


def write_export_tokenizer(cfg: DataConfig, src: str | Path | None, dst: str | Path) -> Path | None:
    """The tokenizer exports must carry when the data changed the tokenizer, written to local dir `dst`.

    With `cfg.chatml_add_im_end`: `src`'s tokenizer (the directory exports would copy it from, e.g. the
    HF checkpoint's; else `cfg.tokenizer`) with `<|im_end|>` added as eos exactly as for the training
    data (`cft_jax.assets.tokenizers.write_im_end_tokenizer`); returns `dst`. None (nothing written)
    when the data leaves the tokenizer as it is: export `src`'s files then.
    """
    if not cfg.chatml_add_im_end:
        return None
    return write_im_end_tokenizer(cfg.tokenizer, src, dst)


def _apply_length_policy(
    samples: list[Sample], encoder: Encoder, cfg: DataConfig, rejects: Rejects
) -> tuple[list[Encoded], length_policy.LengthReport]:
    report = length_policy.LengthReport()
    out: list[Encoded] = []
    for start in range(0, len(samples), 1024):
        chunk = samples[start : start + 1024]
        for sample, enc in zip(chunk, encoder.encode_batch(chunk), strict=True):
            report.total += 1
            n = len(enc.input_ids)
            report.tokens_before += n
            if n > cfg.seq_len:
                if cfg.length_policy == "drop":
                    report.dropped += 1
                    continue
                if cfg.length_policy == "fail":
                    error = _too_long(sample, enc, cfg.seq_len)
                    if not cfg.skip_bad:
                        raise error
                    report.rejected += 1
                    rejects.write(error, sample.target[:200])
                    continue
                ids, mask = length_policy.fit(enc.input_ids, enc.loss_mask, enc.prompt_len, cfg.seq_len)
                enc = dataclasses.replace(enc, input_ids=ids, loss_mask=mask)
                report.truncated += 1
            report.tokens_after += len(enc.input_ids)
            out.append(enc)
    return out, report


def _too_long(sample: Sample, enc: Encoded, seq_len: int) -> RecordError:
    path, _, line = sample.where.rpartition(":")
    n = len(enc.input_ids)
    return RecordError(
        path,
        int(line),
        sample.target_field,
        f"example is {n} tokens (prompt {enc.prompt_len} + target {n - enc.prompt_len}), over "
        f"seq_len={seq_len}; use length_policy 'truncate' or 'drop', raise seq_len, or skip_bad",
    )


def _fill_packing(report: DataReport, lengths: list[int], cfg: DataConfig) -> None:
    if cfg.packing:
        report.packing_efficiency, report.rows_per_epoch = packing_efficiency(
            lengths, cfg.seq_len, cfg.packing_buffer
        )
    else:
        report.rows_per_epoch = len(lengths)
        report.packing_efficiency = sum(lengths) / (len(lengths) * cfg.seq_len) if lengths else 0.0


class DataIterator:
    """The training iterator: batches of [per_host_batch, seq_len] int32, with checkpointable state.

    `report` has the split's counts; `batches_per_epoch` (see `batches_per_epoch()`) is exact
    without packing and an estimate (from the unshuffled order) with it.
    """

    def __init__(self, dataset: grain.IterDataset, report: DataReport, batches_per_epoch: int):
        self._dataset = dataset
        self._it = iter(dataset)
        self.report = report
        self.batches_per_epoch = batches_per_epoch

    def __iter__(self) -> DataIterator:
        return self

    def __next__(self) -> Batch:
        return next(self._it)

    def get_state(self) -> dict[str, Any]:
        """A JSON-serialisable dict: where the iterator is."""
        return self._it.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue exactly after the batch at which `state` was taken."""
        self._it.set_state(state)

    def close(self) -> None:
        close = getattr(self._it, "close", None)
        if close is not None:
            close()


def make_iterator(
    cfg: DataConfig,
    *,
    per_host_batch: int,
    process_index: int = 0,
    process_count: int = 1,
    split: str = "train",
) -> DataIterator | EvalIterator:
    """This host's iterator over a split: `train` (shuffled, epochs, resumable) or `eval` (one pass)."""
    if split == "eval":
        return make_eval_iterator(
            cfg, per_host_batch=per_host_batch, process_index=process_index, process_count=process_count
        )
    if split != "train":
        raise ValueError(f"unknown split {split!r}; use 'train' or 'eval'")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, process_count={process_count})")
    sources = load_sources(cfg, "train")
    report = sources[0][1] if len(sources) == 1 else _merged([r for _, r in sources])
    if report.examples < process_count:
        raise InputError(f"{report.examples} training examples cannot be shared by {process_count} hosts")
    if len(sources) == 1:
        ds = grain.MapDataset.source(sources[0][0])
        if cfg.shuffle:
            # Shuffle before repeat: Grain reseeds the permutation each epoch.
            ds = ds.shuffle(seed=cfg.seed)
        ds = ds.repeat(cfg.epochs)
    else:
        ds = mixture(cfg, [examples for examples, _ in sources])
    global_rows = process_count * per_host_batch
    if not cfg.packing:
        # Every global batch then lies within one epoch; host h takes rows h, h + hosts, ... of each.
        epoch_len = sum(len(examples) for examples, _ in sources)
        ds = _WholeBatchEpochs(ds, epoch_len, epoch_rows(epoch_len, global_rows, cfg.drop_last))
    ds = ds[process_index::process_count]
    it_ds = ds.to_iter_dataset()
    if cfg.packing:
        it_ds = PackIterDataset(it_ds, cfg.seq_len, cfg.packing_buffer, cfg.pad_id)
    else:
        it_ds = it_ds.map(_Pad(cfg.seq_len, cfg.pad_id))
    it_ds = it_ds.batch(per_host_batch, drop_remainder=True)
    if cfg.num_workers > 0:
        _absl_flags_parsed()
        it_ds = it_ds.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=cfg.num_workers, per_worker_buffer_size=cfg.worker_buffer_size
            )
        )
    return DataIterator(it_ds, report, batches_per_epoch(report, cfg, global_rows))


def epoch_rows(examples: int, global_batch: int, drop_last: bool) -> int:
    """Rows an unpacked epoch of `examples` trains on: a whole number of global batches, the last
    partial one completed with empty rows (HF Trainer's default) or, with `drop_last`, left out."""
    batches = examples // global_batch if drop_last else -(-examples // global_batch)
    return batches * global_batch


def batches_per_epoch(report: DataReport, cfg: DataConfig, global_batch: int) -> int:
    """Optimizer updates per epoch: ceil(examples / batch) unpacked (floor with `cfg.drop_last`), as
    HF Trainer counts them; packed, the whole batches of the epoch's rows (an estimate)."""
    if cfg.packing:
        return report.rows_per_epoch // global_batch
    return epoch_rows(report.rows_per_epoch, global_batch, cfg.drop_last) // global_batch


def mixture(cfg: DataConfig, sources: list[Sequence[Any]]) -> grain.MapDataset:
    """The sources drawn from in the proportions `cfg.train_weights` (Grain's `MapDataset.mix`: a fixed
    interleaving, so the order depends only on the seed and resumes like any MapDataset). Each source
    is shuffled (its own seed) and repeated without end before mixing, so none runs out and each
    reshuffles when it wraps; an epoch is as many examples as all the sources hold.
    """
    parts = []
    for index, examples in enumerate(sources):
        if not len(examples):
            raise InputError(
                f"data.train_paths[{index}]: no examples left to mix (read, filtered or held out); "
                "remove it and its weight, or fix the file"
            )
        ds = grain.MapDataset.source(examples)
        if cfg.shuffle:
            ds = ds.shuffle(seed=cfg.seed + index)
        parts.append(ds.repeat(None))
    mixed = grain.MapDataset.mix(parts, list(cfg.train_weights))
    if cfg.epochs is None:
        return mixed
    return mixed[: cfg.epochs * sum(len(examples) for examples in sources)]


def _absl_flags_parsed() -> None:
    """Grain's worker processes read absl flags; outside `absl.app.run` they are never parsed."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


EMPTY_EXAMPLE = {"input_ids": np.zeros(0, np.int32), "loss_mask": np.zeros(0, np.int32)}


class _WholeBatchEpochs(grain.MapDataset):
    """Epochs of `epoch_len` examples (one after another in `parent`), each cut or completed to
    `rows`: the examples past `rows` are left out, the missing ones are `EMPTY_EXAMPLE`, which pads to
    an all-padding row (no target token: zero weight in the token-weighted loss, fixed batch shape)."""

    def __init__(self, parent: grain.MapDataset, epoch_len: int, rows: int):
        super().__init__(parent)
        self._epoch_len, self._rows = epoch_len, rows
        epochs = len(parent) // epoch_len
        self._length = sys.maxsize if len(parent) >= sys.maxsize else epochs * rows

    def __len__(self) -> int:
        return self._length

    def __str__(self) -> str:
        return f"WholeBatchEpochs(epoch_len={self._epoch_len}, rows={self._rows})"

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        epoch, offset = divmod(index, self._rows)
        if offset >= self._epoch_len:
            return EMPTY_EXAMPLE
        return self._parent[epoch * self._epoch_len + offset]


class _Pad(grain.transforms.Map):
    def __init__(self, seq_len: int, pad_id: int):
        self._seq_len, self._pad_id = seq_len, pad_id

    def map(self, example: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return pad_row(example, self._seq_len, self._pad_id)


class EvalIterator:
    """One pass over the eval split, unshuffled; every host yields the same number of batches.

    The last batches are completed with empty rows (all-zero `loss_mask` and `segment_ids`), so
    they add nothing to a token-weighted loss.
    """

    def __init__(self, batches: list[Batch], report: DataReport):
        self._batches = batches
        self.report = report

    def __len__(self) -> int:
        return len(self._batches)

    def __iter__(self) -> Iterator[Batch]:
        return iter(self._batches)


def make_eval_iterator(
    cfg: DataConfig, *, per_host_batch: int, process_index: int = 0, process_count: int = 1
) -> EvalIterator:
    """This host's share of the eval split (see `EvalIterator`)."""
    examples, report = load_examples(cfg, "eval")
    examples = [examples[i] for i in range(len(examples))]
    if cfg.packing:
        rows = []
        for start in range(0, len(examples), cfg.packing_buffer):
            buffer = examples[start : start + cfg.packing_buffer]
            bins = _bins(buffer, cfg.seq_len)
            rows += [make_row([buffer[i] for i in b], cfg.seq_len, cfg.pad_id) for b in bins]
    else:
        rows = [pad_row(ex, cfg.seq_len, cfg.pad_id) for ex in examples]
    n_batches = math.ceil(math.ceil(len(rows) / process_count) / per_host_batch)
    mine = rows[process_index::process_count]
    empty = make_row([], cfg.seq_len, cfg.pad_id)
    mine += [empty] * (n_batches * per_host_batch - len(mine))
    batches = [
        {k: np.stack([r[k] for r in mine[b * per_host_batch : (b + 1) * per_host_batch]]) for k in BATCH_KEYS}
        for b in range(n_batches)
    ]
    return EvalIterator(batches, report)


def _bins(examples: list[dict[str, np.ndarray]], seq_len: int) -> list[list[int]]:
    return first_fit_decreasing([len(ex["input_ids"]) for ex in examples], seq_len)


def _split_paths(cfg: DataConfig, split: str) -> list[str]:
    held_out = split == "eval" and cfg.val_fraction and not cfg.eval_paths  # the train paths' questions
    paths = list(cfg.train_paths if split == "train" or held_out else cfg.eval_paths)
    if not paths:
        raise InputError(f"DataConfig.{split}_paths is empty; give the {split} data files")
    return [file for p in paths for file in hub.data_files(str(p))]  # a dataset id: its files


def _encoding_key(cfg: DataConfig) -> dict[str, Any]:
    """What a prepared file must have been tokenized with to be used under this config."""
    key = {
        "tokenizer": cfg.tokenizer,
        "template": cfg.template,
        "system_prompt": cfg.system_prompt,
        "objective": cfg.objective,
        "sft_only_correct": cfg.sft_only_correct,
        "seq_len": cfg.seq_len,
        "length_policy": cfg.length_policy,
    }
    # Only when set, so files prepared before these options existed still match.
    if cfg.chatml_add_im_end:
        key["chatml_add_im_end"] = True
    if cfg.train_on != "all_assistant":
        key["train_on"] = cfg.train_on
    return key


def _validate(cfg: DataConfig) -> None:
    if errors := data_errors(cfg):
        raise InputError("; ".join(errors))
