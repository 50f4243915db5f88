"""`python -m cft_jax.data inspect|check|prepare|contamination`: see what trains before training it.

inspect FILE...        counts, token-length percentiles, truncated/dropped, verdict balance,
                       packing efficiency, tokens per epoch, one example with the trained spans marked
check FILE...          validate records only (no tokenizer); exit status 2 on the first bad record
prepare FILE... --out OUT.array_record
                       tokenize once into ArrayRecord; give OUT as a train path afterwards
contamination FILE...  n-gram overlap of the training questions with the shipped benchmarks
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections import Counter

import numpy as np

from cft_jax.config import DataConfig
from cft_jax.data.contamination import contamination_report
from cft_jax.data.pipeline import _encoding_key, encode_split, training_tokenizer
from cft_jax.data.prepared import write_prepared
from cft_jax.data.records import ReadOptions, ReadReport, Rejects, read_samples
from cft_jax.data.templates import show_trained_span
from cft_jax.errors import InputError, run_cli


def _config_args(p: argparse.ArgumentParser) -> None:
    d = DataConfig()
    p.add_argument(
        "paths", nargs="+", help="data files (.jsonl/.json/.parquet/.arrow/dir/.array_record/tfds:NAME)"
    )
    p.add_argument(
        "--format", default=d.format, help="auto | cft | solution | alpaca | messages | conversations"
    )
    p.add_argument("--objective", default=d.objective, choices=["cft", "sft"])
    p.add_argument("--sft-only-correct", action="store_true")
    p.add_argument("--template", default=d.template, help="chatml | qwen25_math | llama3 | raw | tokenizer")
    p.add_argument(
        "--train-on",
        default=d.train_on,
        choices=["all_assistant", "last_assistant"],
        help="multi-turn conversations: the loss on every assistant turn, or on the last one",
    )
    p.add_argument("--system-prompt", default=d.system_prompt)
    p.add_argument(
        "--chatml-add-im-end",
        action="store_true",
        help="ChatML on a tokenizer without ChatML tokens: add <|im_end|> as a new eos token (LLaMA-Factory)",
    )
    p.add_argument(
        "--tokenizer", default=d.tokenizer, help="shipped name (qwen2.5, llama3, deepseek_llm) or a dir"
    )
    p.add_argument("--seq-len", type=int, default=d.seq_len)
    p.add_argument("--length-policy", default=d.length_policy, choices=["truncate", "drop", "fail"])
    p.add_argument("--packing-buffer", type=int, default=d.packing_buffer)
    p.add_argument("--tfds-data-dir", default=d.tfds_data_dir)
    p.add_argument(
        "--skip-bad", action="store_true", help="file bad records under --rejects instead of failing"
    )
    p.add_argument("--rejects", default=None, help="JSONL file for skipped records")


def _config(args: argparse.Namespace, **extra: object) -> DataConfig:
    return DataConfig(
        train_paths=tuple(args.paths),
        format=args.format,
        objective=args.objective,
        sft_only_correct=args.sft_only_correct,
        template=args.template,
        system_prompt=args.system_prompt,
        chatml_add_im_end=args.chatml_add_im_end,
        train_on=args.train_on,
        tokenizer=args.tokenizer,
        seq_len=args.seq_len,
        length_policy=args.length_policy,
        packing_buffer=args.packing_buffer,
        tfds_data_dir=args.tfds_data_dir,
        skip_bad=args.skip_bad,
        rejects_path=args.rejects,
        **extra,
    )


def _inspect(args: argparse.Namespace) -> None:
    cfg = _config(args, packing=True)
    encoded, report = encode_split(cfg, cfg.train_paths)
    lengths = np.array([len(e.input_ids) for e in encoded])
    print(
        f"records read: {report.read.read}, kept: {report.read.kept}, rejected: {report.read.rejected}, "
        f"filtered (sft_only_correct): {report.read.filtered_incorrect}"
    )
    print(f"formats: {report.read.formats}")
    print(
        f"examples: {report.examples}, truncated: {report.length.truncated}, "
        f"dropped: {report.length.dropped} (seq_len {cfg.seq_len}, policy {cfg.length_policy})"
    )
    if len(lengths):
        pct = {p: int(np.percentile(lengths, p)) for p in (50, 90, 99)}
        print(
            f"tokens per example: p50 {pct[50]}, p90 {pct[90]}, p99 {pct[99]}, max {lengths.max()} "
            f"(before the policy: {report.length.tokens_before} tokens in all)"
        )
    verdicts = Counter(e.verdict for e in encoded)
    print(f"verdicts: right {verdicts['right']}, wrong {verdicts['wrong']}, none {verdicts[None]}")
    print(f"tokens per epoch: {int(lengths.sum())} ({report.target_tokens} trained)")
    unpacked = lengths.sum() / (len(lengths) * cfg.seq_len) if len(lengths) else 0.0
    print(
        f"rows per epoch: packed {report.rows_per_epoch} (efficiency {report.packing_efficiency:.3f}), "
        f"unpacked {len(lengths)} (efficiency {unpacked:.3f})"
    )
    spans = [_trained_spans(e.loss_mask) for e in encoded]
    if any(n > 1 for n in spans):
        print(
            f"multi-turn: {sum(n > 1 for n in spans)} examples train more than one assistant turn "
            f"(up to {max(spans)}; train_on {cfg.train_on})"
        )
    straddling = sum(e.straddles for e in encoded)
    if straddling:
        print(f"note: in {straddling} examples a token spans a turn boundary; it goes with the turn after it")
    if encoded:
        index = min(args.example, len(encoded) - 1)
        e = encoded[index]
        tok = training_tokenizer(cfg)
        print(
            f"\nexample {e.id} ({e.where}), {len(e.input_ids)} tokens, {int(e.loss_mask.sum())} trained "
            f"in {spans[index]} span(s) between [[TRAIN>> and <<TRAIN]]:\n"
        )
        print(show_trained_span(tok, e.input_ids, e.loss_mask))


def _trained_spans(mask: np.ndarray) -> int:
    """How many separate runs of trained tokens: one per trained assistant turn."""
    return int(mask[0] == 1) + int(np.sum((mask[1:] == 1) & (mask[:-1] == 0))) if len(mask) else 0


def _check(args: argparse.Namespace) -> int:
    report = ReadReport(rejects_path=args.rejects)
    if args.skip_bad and not args.rejects:
        raise InputError("--skip-bad needs --rejects FILE: skipped records must go somewhere")
    rejects = Rejects(args.rejects if args.skip_bad else None)
    opts = ReadOptions(args.format, args.objective, args.sft_only_correct, tfds_data_dir=args.tfds_data_dir)
    read_samples(args.paths, opts, skip_bad=args.skip_bad, rejects=rejects, report=report)
    print(json.dumps(dataclasses.asdict(report), indent=2))
    return 0


def _prepare(args: argparse.Namespace) -> None:
    cfg = _config(args)
    encoded, report = encode_split(cfg, cfg.train_paths)
    path = write_prepared(encoded, args.out, _encoding_key(cfg))
    print(f"wrote {len(encoded)} examples to {path}")
    print(json.dumps(report.to_dict(), indent=2))


def _contamination(args: argparse.Namespace) -> int:
    opts = ReadOptions(args.format, "sft" if args.format in ("auto", "cft", "solution") else args.objective)
    samples = read_samples(args.paths, opts)
    # The shipped math test sets belong to the evaluation side tool (which parses their ground truth);
    # only their questions are compared here.
    from cft_jax.evaluation.suites import BENCHMARKS, load_benchmark

    names = args.benchmarks.split(",") if args.benchmarks else list(BENCHMARKS)
    unknown = [b for b in names if b not in BENCHMARKS]
    if unknown:
        raise InputError(f"unknown benchmark(s) {unknown}; shipped: {sorted(BENCHMARKS)}")
    problems = {name: [p.question for p in load_benchmark(name)] for name in names}
    report = contamination_report([s.prompt for s in samples], problems, n=args.ngram)
    for name, r in report.items():
        if r.contaminated_questions:
            print(
                f"WARNING: {r.contaminated_questions} of {r.questions} training questions share a "
                f"{args.ngram}-gram with {r.matched_problems} of the {r.problems} problems of '{name}'"
            )
            for q, p in r.examples[:3]:
                print(f"    train: {q[:100]!r}\n    bench: {p[:100]!r}")
        else:
            print(f"ok: no {args.ngram}-gram overlap with '{name}' ({r.problems} problems)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cft_jax.data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", help="statistics and one rendered example")
    _config_args(p)
    p.add_argument("--example", type=int, default=0, help="index of the example to show")
    p = sub.add_parser("check", help="validate records")
    _config_args(p)
    p = sub.add_parser("prepare", help="tokenize once into ArrayRecord")
    _config_args(p)
    p.add_argument("--out", required=True, help="output .array_record file")
    p = sub.add_parser("contamination", help="n-gram overlap with the shipped benchmarks")
    _config_args(p)
    p.add_argument("--benchmarks", default=None, help="comma-separated names (default: all shipped)")
    p.add_argument("--ngram", type=int, default=13)
    args = parser.parse_args(argv)
    if args.command == "inspect":
        _inspect(args)
        return 0
    if args.command == "check":
        return _check(args)
    if args.command == "prepare":
        _prepare(args)
        return 0
    return _contamination(args)


if __name__ == "__main__":
    run_cli(main)
