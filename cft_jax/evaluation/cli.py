"""`python -m cft_jax.eval generate|grade|report|select`: the evaluation tool's commands.

generate  benchmarks x prompt x backend -> OUT/<benchmark>.jsonl (graded, resumable) + summary
grade     an existing JSONL of responses (id, benchmark, response, answer) -> pred and correct
report    several run directories side by side -> summary.md + summary.json
select    every exported checkpoint of a training run on a validation benchmark -> the best one
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from etils import epath

from cft_jax.errors import InputError
from cft_jax.evaluation.backends import Backend, Sampling, make_backend
from cft_jax.evaluation.grader import DEFAULT_TIMEOUT, GRADERS, extract_answer, grade_many
from cft_jax.evaluation.prompts import check_prompt, render
from cft_jax.evaluation.reports import run_names, summarize, summarize_dir, write_report
from cft_jax.evaluation.suites import BENCHMARKS, PAPER_SUITE, load_benchmark
from cft_jax.remote import as_path, cache_root, is_remote, local_copy
from cft_jax.schema import JsonlAppender, ResponseRecord, done_ids, from_dict, read_jsonl

RUN_METADATA = "run.json"  # written by the trainer into its workdir: what select needs of the recipe
SELECTION = "selection.json"  # RUN/eval/selection.json: the best export (export.keep never prunes it)


@dataclasses.dataclass
class GradeOptions:
    grader: str = "qwen25-math"
    workers: int | None = None
    timeout: float = DEFAULT_TIMEOUT


def grade_records(records: list[ResponseRecord], options: GradeOptions) -> None:
    """Fills `pred` and `correct` of each record in place."""
    for r in records:
        r.pred = extract_answer(r.response, r.benchmark)
    by_bench: dict[str, list[ResponseRecord]] = {}
    for r in records:
        by_bench.setdefault(r.benchmark, []).append(r)
    for bench, group in by_bench.items():
        verdicts = grade_many(
            [(r.pred, r.answer) for r in group],
            workers=options.workers,
            timeout=options.timeout,
            grader=options.grader,
            benchmark=bench,
        )
        for r, ok in zip(group, verdicts, strict=True):
            r.correct = ok


def generate(
    backend: Backend,
    benchmarks: Sequence[str],
    out_dir: Path,
    *,
    prompt: str = "qwen25-math-cot",
    sampling: Sampling | None = None,
    small_set_samples: int = 1,
    limit: int | None = None,
    batch_size: int = 64,
    grading: GradeOptions | None = None,
    provenance: dict[str, Any] | None = None,
) -> dict[str, dict[str, float]]:
    """Generates, grades and appends one record per (problem, sample); skips ids already written.

    Small sets (AIME, AMC) get `small_set_samples` samples per problem, averaged in the summary.
    """
    from tqdm import tqdm

    sampling, grading = sampling or Sampling(), grading or GradeOptions()
    check_prompt(prompt)
    work: list[tuple[str, list[tuple[Any, list[int]]], Sampling]] = []
    for bench in benchmarks:
        n = small_set_samples if BENCHMARKS[bench].small else sampling.n
        done = done_ids(out_dir / f"{bench}.jsonl")
        todo = []
        for problem in load_benchmark(bench)[:limit]:
            missing = [k for k in range(n) if f"{problem.id}#{k}" not in done]
            if missing:
                todo.append((problem, missing))
        work.append((bench, todo, dataclasses.replace(sampling, n=n)))
    total = sum(len(m) for _, todo, _ in work for _, m in todo)
    with tqdm(total=total, desc="generate", unit="sample", dynamic_ncols=True) as bar:
        for bench, todo, bench_sampling in work:
            with JsonlAppender(out_dir / f"{bench}.jsonl") as out:
                for start in range(0, len(todo), batch_size):
                    batch = todo[start : start + batch_size]
                    prompts = [render(prompt, p.question, backend.tokenizer) for p, _ in batch]
                    completions = backend.generate(prompts, bench_sampling)
                    records = [
                        ResponseRecord(
                            id=f"{problem.id}#{k}",
                            benchmark=bench,
                            response=texts[k],
                            answer=problem.reference_answer,
                            prompt=text,
                            sample=k,
                            provenance=dict(provenance or {}),
                        )
                        for (problem, missing), text, texts in zip(batch, prompts, completions, strict=True)
                        for k in missing
                    ]
                    grade_records(records, grading)
                    out.write_all(records)
                    bar.update(len(records))
    summary = summarize(obj for bench in benchmarks for _, obj in read_jsonl(out_dir / f"{bench}.jsonl"))
    write_report({out_dir.name: summary}, out_dir)
    return summary


def read_responses(path: Path) -> list[ResponseRecord]:
    """Response records from a JSONL file; each error names the file, the line and the field."""
    records = []
    for line_no, obj in read_jsonl(path):
        where = f"{path}:{line_no}"
        record = from_dict(ResponseRecord, obj, where)
        for field in ("id", "benchmark", "response", "answer"):
            if not isinstance(getattr(record, field), str):
                raise InputError(f"{where}: field {field!r} must be a string, got {getattr(record, field)!r}")
        records.append(record)
    return records


def _backend_from_args(args: argparse.Namespace, model: str) -> Backend:
    """The backend of the flags for `model`: a checkpoint directory (a `gs://` one is staged on local
    disk first, as the backends read local files; the `jax` backend reads `gs://` itself, and also a
    training run's Orbax checkpoint) or, for `openai`, the served model's name."""
    if args.backend not in ("openai", "jax") and is_remote(model):
        model = str(local_copy(model))
    if args.backend == "transformers":
        options = {"batch_size": args.batch_size, "device": args.device, "dtype": args.dtype or "float32"}
    elif args.backend == "jax":
        options = {"batch_size": args.batch_size, "dtype": args.dtype or "float32", "mesh": args.jax_mesh}
        options["cache_dtype"] = args.cache_dtype
    elif args.backend == "vllm":
        options = {"tensor_parallel_size": args.tensor_parallel_size, "dtype": args.dtype}
        options["max_model_len"] = args.max_model_len
    else:
        if not args.base_url:
            raise InputError("--backend openai needs --base-url (the key comes from OPENAI_API_KEY)")
        options = {"base_url": args.base_url}
    return make_backend(args.backend, model, **options)


def _sampling(args: argparse.Namespace) -> Sampling:
    return Sampling(args.max_new_tokens, args.temperature, args.top_p, args.n, args.seed)


def _grading(args: argparse.Namespace) -> GradeOptions:
    return GradeOptions(args.grader, args.workers, args.timeout)


def _cmd_generate(args: argparse.Namespace) -> None:
    if is_remote(args.out):
        raise InputError(
            f"--out {args.out}: the responses are appended (and resumed) on local disk; give a local "
            "directory and copy it to the bucket afterwards (gsutil -m cp -r OUT gs://...)"
        )
    backend = _backend_from_args(args, args.model)
    try:
        summary = generate(
            backend,
            args.benchmarks,
            Path(args.out),
            prompt=args.prompt,
            sampling=_sampling(args),
            small_set_samples=args.small_set_samples,
            limit=args.limit,
            batch_size=args.batch_size,
            grading=_grading(args),
            provenance={"model": args.model, "backend": args.backend, "prompt": args.prompt},
        )
    finally:
        backend.close()
    print(json.dumps(summary, indent=2))


def _cmd_grade(args: argparse.Namespace) -> None:
    path = Path(args.input)
    records = read_responses(path)
    grade_records(records, _grading(args))
    out = Path(args.output) if args.output else path.with_suffix(".graded.jsonl")
    if out.exists():
        out.unlink()
    with JsonlAppender(out, fsync=False) as f:
        f.write_all(records)
    summary = summarize(dataclasses.asdict(r) for r in records)
    write_report({path.stem: summary}, out.parent)
    print(f"wrote {out}")
    print(json.dumps(summary, indent=2))


def _cmd_report(args: argparse.Namespace) -> None:
    names = run_names(args.runs)
    summaries = {name: summarize_dir(run) for name, run in zip(names, args.runs, strict=True)}
    md, js = write_report(summaries, args.out)
    print(md.read_text(encoding="utf-8"), end="")
    print(f"wrote {md} and {js}")


def _export_step(directory: Path | epath.Path) -> int:
    """The training step of an export directory `step_N` (the trainer's `WORKDIR/hf/step_N`)."""
    digits = directory.name.removeprefix("step_")
    if not digits.isdigit():
        raise InputError(f"{directory}: expected an export directory named step_N, as the trainer writes")
    return int(digits)


def run_benchmark(run: epath.Path) -> str:
    """The validation benchmark the run's recipe selects on, from `RUN/run.json` (the trainer writes
    `select_benchmark` there from `evaluation.select_benchmark`)."""
    meta_path = run / RUN_METADATA
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    name = meta.get("select_benchmark") or ""
    if not name:
        where = f"{meta_path} has no select_benchmark" if meta_path.exists() else f"no {meta_path}"
        raise InputError(
            f"select --run {run}: {where} (the trainer writes it from evaluation.select_benchmark); "
            "name the validation benchmark with --benchmark, e.g. --benchmark math-500"
        )
    if name not in BENCHMARKS:
        raise InputError(f"{meta_path}: select_benchmark {name!r} is not one of {sorted(BENCHMARKS)}")
    return name


def _eval_dir(run: epath.Path) -> Path:
    """Where select appends its responses: RUN/eval, or for a `gs://` run its local mirror in the
    cache (appending and resuming need a local file); the selection is written to RUN/eval too."""
    if not is_remote(run):
        return Path(run) / "eval"
    scheme, rest = str(run).split("://", 1)
    return cache_root() / "remote" / scheme / rest.strip("/") / "eval"


def _cmd_select(args: argparse.Namespace) -> None:
    run = as_path(args.run)
    exports = run / "hf"
    # In training order (step_10 after step_2): ties go to the earlier one.
    checkpoints = sorted((p.parent for p in exports.glob("step_*/config.json")), key=_export_step)
    if not checkpoints:
        raise InputError(
            f"{exports}: no exported checkpoints (step_N directories with a config.json); the trainer "
            "writes them with export.every_steps, or run `python -m cft_jax.convert export` per checkpoint"
        )
    benchmark = args.benchmark or run_benchmark(run)
    eval_dir = _eval_dir(run)
    results = {}
    for ckpt in checkpoints:
        print(f"evaluating {ckpt} on {benchmark}", file=sys.stderr)
        staged = local_copy(ckpt) if args.backend != "openai" else None
        # One model (one vLLM engine) at a time: each is closed before the next checkpoint loads.
        backend = _backend_from_args(args, str(staged or ckpt))
        try:
            summary = generate(
                backend,
                [benchmark],
                eval_dir / ckpt.name,
                prompt=args.prompt,
                sampling=_sampling(args),
                limit=args.limit,
                batch_size=args.batch_size,
                grading=_grading(args),
                provenance={"model": str(ckpt), "backend": args.backend, "prompt": args.prompt},
            )
        finally:
            backend.close()
            if staged is not None and is_remote(ckpt):
                shutil.rmtree(staged, ignore_errors=True)  # a 7B export is ~15 GB of local disk
        results[ckpt.name] = summary[benchmark]["accuracy"]
    # Ties go to the earlier checkpoint: less training for the same validation score.
    order = [c.name for c in checkpoints]
    best = max(results, key=lambda name: (results[name], -order.index(name)))
    selection = {
        "benchmark": benchmark,
        "accuracy": results,
        "best": best,
        "best_dir": str(exports / best),
    }
    text = json.dumps(selection, indent=2) + "\n"
    for directory in {str(eval_dir): eval_dir, str(run / "eval"): run / "eval"}.values():
        directory.mkdir(parents=True, exist_ok=True)
        (directory / SELECTION).write_text(text, encoding="utf-8")
    print(text, end="")


def _add_generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=["transformers", "vllm", "openai", "jax"], default="vllm")
    p.add_argument("--prompt", default="qwen25-math-cot", help="prompt name, 'chat-template', or template")
    p.add_argument("--max-new-tokens", type=int, default=2048)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--n", type=int, default=1, help="samples per problem")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, help="only the first N problems of each benchmark")
    p.add_argument("--batch-size", type=int, default=64, help="prompts per generate call")
    p.add_argument("--device", default="cpu", help="transformers backend: torch device")
    p.add_argument(
        "--dtype",
        help="parameter dtype (transformers, jax: default float32; vllm: auto, 16-bit for float32 weights)",
    )
    p.add_argument("--cache-dtype", default="bfloat16", help="jax backend: KV cache dtype")
    p.add_argument("--jax-mesh", default="1,-1,1", help="jax backend: DATA,FSDP,TENSOR device mesh")
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm backend")
    p.add_argument(
        "--max-model-len",
        type=int,
        help="vllm backend: longest prompt + completion in tokens (default: the config's)",
    )
    p.add_argument("--base-url", help="openai backend: the endpoint, e.g. http://localhost:8000/v1")


def _add_grading_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--grader", choices=sorted(GRADERS), default="qwen25-math")
    p.add_argument("--workers", type=int, help="grading processes (default: CPU count)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per item")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cft_jax.eval", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="generate, grade and summarise benchmark responses")
    p.add_argument(
        "--model",
        required=True,
        help="HF checkpoint directory, local or gs:// (or the served model name); with --backend jax also a "
        "training run's Orbax checkpoint: the run, its checkpoints/ or one checkpoints/STEP",
    )
    p.add_argument("--benchmarks", nargs="+", default=list(PAPER_SUITE), choices=sorted(BENCHMARKS))
    p.add_argument("--out", required=True, help="output directory: <benchmark>.jsonl + summary")
    p.add_argument("--small-set-samples", type=int, default=1, help="samples per AIME/AMC problem")
    _add_generation_args(p)
    _add_grading_args(p)
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("grade", help="grade a JSONL of responses (id, benchmark, response, answer)")
    p.add_argument("input")
    p.add_argument("--output", help="default: INPUT with .graded.jsonl")
    _add_grading_args(p)
    p.set_defaults(func=_cmd_grade)

    p = sub.add_parser("report", help="several runs side by side")
    p.add_argument("runs", nargs="+", help="run directories written by generate")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("select", help="pick the best exported checkpoint of a run")
    p.add_argument(
        "--run",
        required=True,
        help="training run directory, local or gs:// (the trainer's workdir, with hf/step_N/ exports)",
    )
    p.add_argument(
        "--benchmark",
        choices=sorted(BENCHMARKS),
        help="validation benchmark; default: the recipe's, from RUN/run.json (evaluation.select_benchmark)",
    )
    _add_generation_args(p)
    _add_grading_args(p)
    p.set_defaults(func=_cmd_select)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)
