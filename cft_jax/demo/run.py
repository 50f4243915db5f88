"""The demo, step by step, each timed: inputs -> base measurement -> training -> export measurement -> report.

The trainer runs as the user would run it, `python -m cft_jax.train --config configs/demo_smollm2.py`,
in a subprocess (its progress bar shows). The measurements load the same config with the same
overrides, so the held-out loss renders and cuts the test critiques exactly as training does.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cft_jax.assets.tokenizers import load_tokenizer
from cft_jax.config import load_config
from cft_jax.data.records import Sample, cft_prompt
from cft_jax.data.templates import Encoder
from cft_jax.demo import inputs as demo_inputs_lib
from cft_jax.demo.measure import Measurement, measure
from cft_jax.demo.report import plot_losses, write_report
from cft_jax.demo.splits import verdict_solutions
from cft_jax.schema import CritiqueRecord, SolutionRecord, from_dict, read_jsonl

CONFIG = demo_inputs_lib.REPO / "configs" / "demo_smollm2.py"
# The longest critique prompt judged (tokens): the verdicts' cost is their prompts' prefill, and the
# shortest GSM8K solutions keep 64 verdicts within the wall time 8 long ones took.
VERDICT_PROMPT_TOKENS = 160
T = TypeVar("T")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cft_jax.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo", help="report, measurements and the training run")
    parser.add_argument("--cache", help=f"converted model and splits (${demo_inputs_lib.CACHE_ENV})")
    parser.add_argument("--model-dir", help="a pre-converted SmolLM2 HF directory (skips the conversion)")
    parser.add_argument("--steps", type=int, help="training steps (default: the config's)")
    parser.add_argument(
        "--eval-every", type=int, help="validation loss every N steps (default: the config's)"
    )
    parser.add_argument("--test-examples", type=int, default=16, help="test critiques for the held-out loss")
    parser.add_argument(
        "--verdict-examples",
        type=int,
        default=64,
        help="held-out labelled solutions to judge, half of them correct",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=16,
        help="tokens per critique (the verdict comes in the first 10)",
    )
    parser.add_argument("--batch-size", type=int, default=4, help="the held-out loss's batch")
    return parser.parse_args(argv)


def timed(name: str, timings: dict[str, float], fn: Callable[[], T]) -> T:
    """Runs `fn`, printing the step's name before and its wall time after."""
    print(f"== {name}", flush=True)
    start = time.perf_counter()
    result = fn()
    timings[name] = time.perf_counter() - start
    print(f"   {name}: {timings[name]:.1f} s", flush=True)
    return result


def trained_export(workdir: Path) -> Path:
    """The trainer's final HF export, `workdir/hf/step_<last>`."""
    exports = sorted((workdir / "hf").glob("step_*"), key=lambda p: int(p.name.removeprefix("step_")))
    if not exports:
        raise FileNotFoundError(f"{workdir / 'hf'}: the trainer wrote no HF export")
    return exports[-1]


def train(overrides: list[str], workdir: Path) -> None:
    """`python -m cft_jax.train --config configs/demo_smollm2.py` from scratch in `workdir`."""
    if workdir.exists():
        # The trainer resumes from the newest checkpoint in its workdir; a demo run starts fresh.
        shutil.rmtree(workdir)
    command = [sys.executable, "-m", "cft_jax.train", "--config", str(CONFIG), *overrides]
    print("   " + " ".join(command), flush=True)
    subprocess.run(command, check=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Read by configs/demo_smollm2.py too, in this process and in the trainer's.
    if args.cache:
        os.environ[demo_inputs_lib.CACHE_ENV] = str(Path(args.cache).resolve())
    if args.model_dir:
        os.environ[demo_inputs_lib.MODEL_ENV] = str(Path(args.model_dir).resolve())
    out = Path(args.out).resolve()
    workdir = out / "train"
    overrides = [f"--config.training.workdir={workdir}"]
    if args.steps is not None:
        overrides.append(f"--config.training.max_steps={args.steps}")
    if args.eval_every is not None:
        overrides.append(f"--config.evaluation.every_steps={args.eval_every}")

    timings: dict[str, float] = {}
    total_start = time.perf_counter()
    inputs = timed(
        "1. SmolLM2-135M-Instruct (cached conversion) and 2. the CFT splits",
        timings,
        demo_inputs_lib.demo_inputs,
    )
    print(f"   model: {inputs.model_dir} ({'converted now' if inputs.converted else 'cached'})")
    for name, path in inputs.splits.items():
        print(f"   {name}: {path} ({sum(1 for _ in path.open())} critiques)")
    config = load_config(CONFIG, overrides)
    test_records = [from_dict(CritiqueRecord, obj) for _, obj in read_jsonl(inputs.splits["test"])]
    encoder = Encoder(load_tokenizer(config.data.tokenizer), config.data.template)

    def fits(record: CritiqueRecord) -> bool:
        """Prompt and critique fit one training row: the examples the length policy keeps whole."""
        sample = Sample(
            id=record.id, prompt=cft_prompt(record.question, record.solution), target=record.critique
        )
        return len(encoder.encode(sample).input_ids) <= config.data.seq_len

    test_records = [r for r in test_records if fits(r)]
    out.mkdir(parents=True, exist_ok=True)
    loss_path = out / "test_loss_subset.jsonl"
    loss_path.write_text(
        "".join(
            json.dumps(dataclasses.asdict(r), ensure_ascii=False) + "\n"
            for r in test_records[: args.test_examples]
        ),
        encoding="utf-8",
    )

    def short(record: SolutionRecord) -> bool:
        """Its critique prompt, rendered as the verdict measurement renders it, is short enough."""
        sample = Sample(id=record.id, prompt=cft_prompt(record.question, record.solution), target="")
        prompt = encoder.render(sample)[0]
        return len(encoder.tokenizer(prompt, add_special_tokens=False)["input_ids"]) <= VERDICT_PROMPT_TOKENS

    verdict_records = verdict_solutions(args.verdict_examples, short)

    def measure_model(model_dir: Path, name: str) -> Measurement:
        result = measure(
            model_dir,
            config.data,
            loss_path=loss_path,
            verdict_records=verdict_records,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            vocab_chunk=config.training.vocab_chunk,
            out_dir=out / name,
        )
        low, high = result.accuracy_interval
        print(
            f"   held-out loss {result.loss:.4f}; verdicts {result.verdict_correct}/{result.verdicts} "
            f"right (95% CI {100 * low:.1f}-{100 * high:.1f}%), {result.verdict_missing} without a conclusion"
        )
        return result

    before = timed("3. measure the base model", timings, lambda: measure_model(inputs.model_dir, "before"))
    timed("4. train (python -m cft_jax.train)", timings, lambda: train(overrides, workdir))
    export = trained_export(workdir)
    after = timed("5. measure the HF export", timings, lambda: measure_model(export, "after"))

    png = out / "loss_curves.png"
    report = out / "report.md"
    paths = {
        "report": report,
        "loss curves": png,
        "exported HF model": export,
        "checkpoints": workdir / "checkpoints",
        "metrics JSONL": workdir / "metrics.jsonl",
        "TensorBoard": workdir / "tensorboard",
        "splits": inputs.splits["train"].parent,
        "critiques before / after": out / "before" / "critiques.jsonl",
    }

    def write() -> None:
        plot_losses(workdir / "metrics.jsonl", before.loss, after.loss, png)
        settings = {
            "config": f"{CONFIG} {' '.join(overrides)}",
            "training": f"{config.training.max_steps} steps x {config.training.global_batch} sequences of "
            f"{config.data.seq_len} tokens, lr {config.optimizer.lr}",
            "verdict generation": f"greedy, max_new_tokens {args.max_new_tokens}, the JAX KV-cache "
            f"sampler, all {len(verdict_records)} in one call",
        }
        timings["total"] = time.perf_counter() - total_start
        write_report(
            report,
            before=before,
            after=after,
            png_name=png.name,
            settings=settings,
            timings=timings,
            paths=paths,
        )
        (out / "measurements.json").write_text(
            json.dumps(
                {
                    "before": {
                        **dataclasses.asdict(before),
                        "accuracy_interval_95": before.accuracy_interval,
                    },
                    "after": {**dataclasses.asdict(after), "accuracy_interval_95": after.accuracy_interval},
                    "timings_s": timings,
                },
                indent=2,
            ),
            encoding="utf-8",
        )

    timed("6. report", timings, write)
    print(f"== done in {time.perf_counter() - total_start:.1f} s")
    for name, path in paths.items():
        print(f"   {name}: {path}")
