"""`python -m cft_jax.critique sample|teach|filter|build`: the critique data side tool's CLI.

Each command prints a JSON summary on stdout. Exit status: 0 when every record was produced,
3 when some records failed after the retry budget (they are in the failures file; rerun to retry
them), 2 for a configuration or input error (the message names the file, line or key to fix).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from cft_jax.critique.client import ConfigError
from cft_jax.critique.config import SAMPLING_KEYS, retry_from_dict, spec_from_dict
from cft_jax.critique.runner import failures_path_for
from cft_jax.errors import run_cli

EXIT_FAILED_RECORDS = 3


def _model_flags(p: argparse.ArgumentParser, role: str) -> None:
    g = p.add_argument_group(f"{role} (one model; use --config for several)")
    g.add_argument("--config", type=Path, help=f'JSON file {{"{role}s": [...], "retry": {{...}}}}')
    g.add_argument("--model", help="model name served by the endpoint")
    g.add_argument("--name", help="label in ids and provenance (default: the model name)")
    g.add_argument("--base-url", help="OpenAI-compatible base URL (default: OpenAI's)")
    g.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key")
    g.add_argument("--no-api-key", action="store_true", help="the server needs no key (local vLLM/SGLang)")
    g.add_argument("--concurrency", type=int, help="requests in flight at most")
    g.add_argument("--timeout", type=float, help="seconds per request before it is retried")
    g.add_argument("--temperature", type=float)
    g.add_argument("--top-p", dest="top_p", type=float)
    g.add_argument("--max-tokens", dest="max_tokens", type=int)
    g.add_argument("--seed", type=int)
    g.add_argument("--prompt", help='prompt template JSON {"system": ..., "user": ...}')
    g.add_argument("--strip-reasoning", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--price-input", type=float, help="USD per million prompt tokens")
    g.add_argument("--price-output", type=float, help="USD per million completion tokens")
    g.add_argument("--max-attempts", type=int, help="attempts per record before it goes to the failures file")
    if role == "generator":
        g.add_argument("-k", dest="k", type=int, help="samples per problem")
        g.add_argument("--backend", choices=("openai", "vllm"))
        g.add_argument(
            "--max-model-len",
            dest="max_model_len",
            type=int,
            help="vllm: longest prompt + completion (tokens)",
        )


def _specs(args: argparse.Namespace, role: str) -> tuple[list, Any]:
    """The model specs and retry policy from --config or from the single-model flags."""
    if args.config is not None:
        try:
            cfg = json.loads(args.config.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{args.config}: cannot read config ({e})") from None
        items = cfg.get(f"{role}s") if isinstance(cfg, dict) else None
        if not isinstance(items, list) or not items:
            raise ConfigError(f'{args.config}: needs a non-empty list "{role}s"')
        specs = [
            spec_from_dict(o, role=role, where=f"{args.config}: {role}s[{i}]", base=args.config.parent)
            for i, o in enumerate(items)
        ]
        return specs, retry_from_dict(cfg.get("retry"), f"{args.config}")
    if not args.model:
        raise ConfigError(f"{role}: give --model (or --config with a list of {role}s)")
    keys = ("model", "name", "base_url", "concurrency", "timeout", "prompt", "strip_reasoning")
    keys += ("price_input", "price_output", "k", "backend", "max_model_len", *SAMPLING_KEYS)
    obj = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    obj["api_key_env"] = None if args.no_api_key else args.api_key_env
    retry = retry_from_dict(
        {"max_attempts": args.max_attempts} if args.max_attempts else None, "--max-attempts"
    )
    return [spec_from_dict(obj, role=role, where="command line")], retry


def _finish(summary: dict[str, Any], failures: Path | None) -> int:
    if failures is not None:
        summary["failures_file"] = str(failures)
    print(json.dumps(summary, sort_keys=True))
    if summary.get("failed"):
        print(
            f"[critique] {summary['failed']} record(s) failed after the retry budget; see {failures}. "
            f"Rerun the same command to retry them.",
            file=sys.stderr,
        )
        return EXIT_FAILED_RECORDS
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from cft_jax.critique.sample import sample

    specs, retry = _specs(args, "generator")
    failures = args.failures or failures_path_for(args.out)
    return _finish(sample(args.problems, args.out, failures, specs, retry).as_dict(), failures)


def cmd_teach(args: argparse.Namespace) -> int:
    specs, retry = _specs(args, "teacher")
    failures = args.failures or failures_path_for(args.out)
    if args.batch:
        from cft_jax.critique.batch import teach_batch

        state = args.batch_state or args.out.with_name(args.out.name + ".batch-state.json")
        summary = teach_batch(
            args.solutions, args.out, failures, specs, state, poll_seconds=args.poll_seconds
        )
        return _finish(summary.as_dict(), failures)
    from cft_jax.critique.teach import teach

    summary = asyncio.run(
        teach(args.solutions, args.out, failures, specs, retry, progress_every=args.progress)
    )
    return _finish(summary.as_dict(), failures)


def cmd_filter(args: argparse.Namespace) -> int:
    from cft_jax.critique.filter import FilterConfig, filter_file

    config = FilterConfig(
        require=tuple(r for r in args.require.split(",") if r),
        combine=args.combine,
        balance_ratio=args.balance_ratio,
        target=args.target,
        trim=args.trim,
        seed=args.seed,
    )
    report = filter_file(args.critiques, args.out, config)
    if args.report:
        args.report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, sort_keys=True))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from cft_jax.critique.build import build

    summary = build(args.config)
    print(json.dumps(summary, sort_keys=True))
    return EXIT_FAILED_RECORDS if summary.get("failed") else 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m cft_jax.critique", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sample", help="K candidate solutions per problem, graded against the reference")
    p.add_argument("--problems", type=Path, required=True, help="ProblemRecord JSONL")
    p.add_argument("--out", type=Path, required=True, help="SolutionRecord JSONL (appended, resumable)")
    p.add_argument("--failures", type=Path, help="default: <out>.failures.jsonl")
    _model_flags(p, "generator")
    p.set_defaults(run=cmd_sample)

    p = sub.add_parser("teach", help="one critique per (solution, teacher)")
    p.add_argument("--solutions", type=Path, required=True, help="SolutionRecord JSONL")
    p.add_argument("--out", type=Path, required=True, help="CritiqueRecord JSONL (appended, resumable)")
    p.add_argument("--failures", type=Path, help="default: <out>.failures.jsonl")
    p.add_argument("--batch", action="store_true", help="use the OpenAI Batch API (submit, poll, collect)")
    p.add_argument("--batch-state", type=Path, help="default: <out>.batch-state.json")
    p.add_argument("--poll-seconds", type=float, default=30.0)
    p.add_argument("--progress", type=int, default=0, help="print a progress line every N records")
    _model_flags(p, "teacher")
    p.set_defaults(run=cmd_teach)

    p = sub.add_parser("filter", help="keep agreeing critiques; balance, trim, dedupe; report per rule")
    p.add_argument("--critiques", type=Path, required=True, help="CritiqueRecord JSONL")
    p.add_argument("--out", type=Path, required=True, help="filtered CritiqueRecord JSONL (rewritten)")
    p.add_argument("--require", default="verdict", help="comma list of: verdict, answer (empty: none)")
    p.add_argument("--combine", choices=("all", "any"), default="all", help="how --require rules combine")
    p.add_argument("--balance-ratio", type=float, help="majority verdict at most R times the minority")
    p.add_argument("--target", type=int, help="trim to this many records")
    p.add_argument("--trim", choices=("ends", "longest"), default="ends")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", type=Path, help="also write the report here as JSON")
    p.set_defaults(run=cmd_filter)

    p = sub.add_parser("build", help="a whole recipe (one-shot or 50K-style) from one JSON config")
    p.add_argument("config", type=Path)
    p.set_defaults(run=cmd_build)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    run_cli(main)
