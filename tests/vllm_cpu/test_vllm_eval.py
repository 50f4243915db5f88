"""`eval generate` and `eval select` with vLLM's CPU build on the project's exports (conftest.py here)."""

from __future__ import annotations

from pathlib import Path

from cft_jax.evaluation.cli import main
from cft_jax.schema import read_jsonl
from tests.vllm_cpu.side_env import GENERATE, KV_CACHE_GIB


def test_generate_with_vllm_writes_the_transformers_backends_greedy_answers(
    vllm_results, smollm2_hf_dir, tmp_path
):
    """Both backends end to end on the real SmolLM2 export, with the same flags: the same records."""
    argv = ["generate", "--backend", "transformers", "--model", str(smollm2_hf_dir), "--out", str(tmp_path)]
    main([*argv, *GENERATE])
    theirs = [r for _, r in read_jsonl(tmp_path / "gsm8k.jsonl")]
    assert len(theirs) == 3 and all(r["response"] and r["pred"] is not None for r in theirs)
    assert theirs[0]["prompt"].startswith("User: Janet")
    assert (tmp_path / "summary.md").read_text().startswith("| benchmark |")
    ours = [r for _, r in read_jsonl(Path(vllm_results["generate"]["out"]) / "gsm8k.jsonl")]
    assert [r["provenance"]["backend"] for r in ours] == ["vllm"] * 3
    for mine, reference in zip(ours, theirs, strict=True):
        mine.pop("provenance"), reference.pop("provenance")
        assert mine == reference


def test_select_with_vllm_holds_one_engine_at_a_time_and_gives_its_memory_back(vllm_results):
    result = vllm_results["select"]
    events = result["events"]
    assert [e["event"] for e in events] == ["start", "loaded", "closed", "loaded", "closed"]
    assert [e["model"] for e in events if e["event"] == "loaded"] == ["step_1", "step_2"]
    # The CPU build runs the engine in the select process: no engine-core or worker process (the
    # children are the grader's pool).
    children = [c for e in events if e["event"] == "loaded" for c in e["children"]]
    assert not [c for c in children if "VLLM::" in c or "EngineCore" in c or "Worker" in c], children
    loaded = [e["rss_mib"] for e in events if e["event"] == "loaded"]
    closed = [e["rss_mib"] for e in events if e["event"] == "closed"]
    kv_mib = KV_CACHE_GIB * 1024
    # Each engine holds its KV cache (vLLM fills it when it allocates it): the measurement sees it ...
    assert all(live - gone > kv_mib / 2 for live, gone in zip(loaded, closed, strict=True)), events
    # ... and an engine that outlived its close would keep it: the second checkpoint's teardown ends
    # within half a KV cache of the first's.
    assert closed[1] - closed[0] < kv_mib / 2, events
    selection = result["selection"]
    assert set(selection["accuracy"]) == {"step_1", "step_2"} and selection["benchmark"] == "gsm8k"
