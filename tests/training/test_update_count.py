"""The number of updates is the recipe's: an epoch's last partial batch is an update, as in the
papers' trainers (LLaMA-Factory and ms-swift train with transformers' `Trainer`, whose dataloader
keeps it).

transformers' own `Trainer` is run for real on a tiny random Llama (hidden 16, 2 layers) and its
optimizer steps counted; the global batch is per_device x accumulation chosen so that the last
update of each epoch takes fewer micro-batches (HF's remainder path), with the rows and the global
batch of the papers: 600 rows / 512 / 50 epochs (one-shot CFT) and 50K / 512 / 1 epoch (CFT).
cft_jax's count is the trainer's (`total_steps` of the real data iterator's `batches_per_epoch`), its
schedule is compared with HF's learning rate at every step, and a tiny trainer run shows the partial
batch trained token-weighted on exactly its rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from cft_jax.config import load_config
from cft_jax.data.length import LengthReport
from cft_jax.data.pipeline import DataReport, batches_per_epoch, load_examples, make_iterator
from cft_jax.data.records import ReadReport
from cft_jax.train import data_iterator, total_steps, train
from cft_jax.training.metrics import read_jsonl
from cft_jax.training.state import schedule_of
from tests.tolerances import assert_close_to_scale

REPO = Path(__file__).resolve().parents[2]
PEAK_LR = 1e-3


def hf_trainer_run(rows: int, per_device: int, accumulation: int, epochs: int, out: Path) -> list[float]:
    """The learning rate of each optimizer step of transformers' Trainer on `rows` two-token rows
    (one entry per step, counted by a callback: the length is HF's number of updates)."""
    import torch
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        default_data_collator,
    )

    class Steps(TrainerCallback):
        def __init__(self):
            self.lrs: list[float] = []

        def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
            self.lrs.append(optimizer.param_groups[0]["lr"])  # the rate this step was taken at

    shape = {"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_key_value_heads": 2}
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=8, num_hidden_layers=2, max_position_embeddings=8, **shape)
    model = LlamaForCausalLM(config)
    args = TrainingArguments(
        str(out),
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        num_train_epochs=epochs,
        learning_rate=PEAK_LR,
        lr_scheduler_type="cosine",
        warmup_steps=0.1,  # a ratio (< 1): ceil(0.1 * total), the recipes' warm-up
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    steps = Steps()
    data = [{"input_ids": [1, 2], "labels": [1, 2]} for _ in range(rows)]
    trainer = Trainer(
        model=model, args=args, train_dataset=data, data_collator=default_data_collator, callbacks=[steps]
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: more threads only contend for the 2 cores
    try:
        trainer.train()
    finally:
        torch.set_num_threads(threads)
    assert trainer.state.global_step == len(steps.lrs)
    return steps.lrs


def recipe_config(workdir: Path, train_path: Path, *overrides: str):
    return load_config(
        REPO / "configs" / "cpu_demo.py",
        [
            f"--config.training.workdir={workdir}",
            f"--config.data.train_paths=('{train_path}',)",
            "--config.data.format=alpaca",
            "--config.data.template=raw",
            "--config.training.max_steps=0",
            f"--config.optimizer.lr={PEAK_LR}",
            "--config.optimizer.schedule=cosine",
            "--config.optimizer.warmup_ratio=0.1",
            *overrides,
        ],
    )


def alpaca_rows(path: Path, rows: int, words=lambda i: 1) -> Path:
    lines = [
        json.dumps({"instruction": f"Question {i}?", "input": "", "output": " ".join(["yes"] * words(i))})
        for i in range(rows)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("rows", "per_device", "accumulation", "epochs", "updates"),
    [
        (600, 256, 2, 50, 100),  # one-shot CFT: per epoch 3 micro-batches -> updates of 2 and 1
        (50_000, 256, 2, 1, 98),  # CFT: 196 micro-batches -> 98 updates, the last of 168 rows
    ],
)
def test_update_count_and_schedule_equal_hf_trainers(
    rows, per_device, accumulation, epochs, updates, tmp_path
):
    hf_lrs = hf_trainer_run(rows, per_device, accumulation, epochs, tmp_path / "hf")
    assert len(hf_lrs) == updates  # HF's own count, measured

    global_batch = per_device * accumulation
    assert global_batch == 512
    epochs_option = f"--config.data.epochs={epochs}"
    if rows == 600:  # the real data iterator over 600 real rows
        data = alpaca_rows(tmp_path / "oneshot.jsonl", rows)
        config = recipe_config(tmp_path / "run", data, epochs_option, "--config.training.global_batch=512")
        train_iter = data_iterator(config)
        real_rows = [int((next(train_iter)["segment_ids"].max(axis=1) > 0).sum()) for _ in range(3)]
        assert real_rows == [512, 88, 512]  # the epoch's partial batch, then the next epoch
        per_epoch = train_iter.batches_per_epoch
        train_iter.close()
    else:  # 50K rows tokenized would take seconds: the same count from the epoch's size
        data = tmp_path / "unused.jsonl"
        config = recipe_config(tmp_path / "run", data, epochs_option, "--config.training.global_batch=512")
        report = DataReport(ReadReport(), LengthReport(), examples=rows, rows_per_epoch=rows)
        per_epoch = batches_per_epoch(report, config.data, config.training.global_batch)
    steps = total_steps(config, per_epoch)
    assert steps == updates

    # HF's rate at step i (1-based) is the schedule's at update i - 1: warm-up ceil(0.1 * 100) = 10.
    schedule = schedule_of(config, steps)
    ours = [float(schedule(i)) for i in range(steps)]
    # optax evaluates the cosine in fp32, HF in float64: a few fp32 roundings of the peak.
    assert_close_to_scale(ours, hf_lrs, ulps=8, err_msg="learning rate per update")


def test_drop_last_leaves_the_partial_batch_out(tmp_path):
    data = alpaca_rows(tmp_path / "rows.jsonl", 10)
    for drop_last, per_epoch, rows in ((False, 3, [4, 4, 2, 4]), (True, 2, [4, 4, 4, 4])):
        config = recipe_config(
            tmp_path / "run", data, "--config.data.epochs=2", f"--config.data.drop_last={drop_last}"
        )
        train_iter = make_iterator(config.data, per_host_batch=4)
        batches = list(train_iter)
        assert train_iter.batches_per_epoch == per_epoch and len(batches) == 2 * per_epoch
        assert [int((b["segment_ids"].max(axis=1) > 0).sum()) for b in batches][:4] == rows


@pytest.mark.slow
def test_the_partial_batch_trains_token_weighted_on_its_rows(tmp_path):
    """N = B + D rows, batch B: 2 updates, the second on the D last rows (unshuffled). The rate is ~0
    (1e-30: fp32 weights do not move), so each step's loss is the start weights'; the export (those
    weights) in transformers gives the dense reference, row by row without padding."""
    batch = 2 * jax.device_count()
    partial = max(1, jax.device_count() // 2)
    rows = batch + partial
    data = alpaca_rows(tmp_path / "rows.jsonl", rows, words=lambda i: 1 + 2 * (i % 4))  # <= 16 tokens
    config = recipe_config(
        tmp_path / "run",
        data,
        "--config.data.epochs=1",
        "--config.data.shuffle=false",
        "--config.data.seq_len=16",
        f"--config.training.global_batch={batch}",
        "--config.optimizer.lr=1e-30",
        "--config.optimizer.schedule=constant",
        "--config.optimizer.warmup_steps=0",
        "--config.checkpoint.async_save=false",
        "--config.logging.progress_bar=false",
        "--config.logging.tensorboard=false",
        # What eval select and a full disk need of the run, checked on this run too:
        "--config.evaluation.select_benchmark=math-500",
        "--config.export.every_steps=1",
        "--config.export.keep=1",
    )
    train(config)
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2]
    assert sorted(p.name for p in (tmp_path / "run" / "hf").glob("step_*")) == ["step_2"]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["select_benchmark"] == "math-500"

    examples, report = load_examples(config.data)
    assert report.length.truncated == 0
    references = dense_losses(tmp_path / "run" / "hf" / "step_2", [examples[:batch], examples[batch:rows]])
    for record, (loss, tokens) in zip(records, references, strict=True):
        assert record["target_tokens"] == tokens
        # Both are means of a few hundred fp32 NLLs, each a log-sum-exp over 151,936 logits computed
        # in another order (chunked here, dense in torch): 2^8 roundings of the loss's scale.
        assert_close_to_scale(record["loss"], loss, ulps=256, err_msg=f"step {record['step']}")


def dense_losses(model_dir: Path, batches: list[list[dict]]) -> list[tuple[float, int]]:
    """(token-weighted mean NLL of the target tokens, their number) of each batch of examples, each
    example run alone through transformers in float32: no padding, no batch to fill."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    out = []
    for examples in batches:
        total, tokens = 0.0, 0
        for ex in examples:
            ids = torch.tensor(np.asarray(ex["input_ids"], np.int64))[None]
            with torch.no_grad():
                logits = model(ids).logits[0, :-1].double()
            nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none")
            weights = torch.tensor(np.asarray(ex["loss_mask"][1:], np.float64))
            total += float((nll * weights).sum())
            tokens += int(weights.sum())
        out.append((total / tokens, tokens))
    return out
