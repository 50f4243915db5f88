"""`critique sample --backend vllm`: K samples per problem, seeded, resumable.

The generator is a tiny random Llama export (its next-token distribution near uniform, so the K
samples at temperature 1 differ) with SmolLM2's tokenizer and chat template (tests/vllm_cpu/conftest.py).
"""

from __future__ import annotations

from tests.vllm_cpu.side_env import PROBLEMS, SAMPLE_DROP, SAMPLE_K


def test_sample_with_vllm_writes_k_seeded_samples_and_regenerates_only_what_was_lost(vllm_results):
    result = vllm_results["sample"]
    first, second, third = result["runs"]
    total = SAMPLE_K * len(PROBLEMS)
    assert first["status"] == 0 and first["summary"]["written"] == total and first["engine_starts"] == 1
    records = result["first"]
    assert sorted({r["problem_id"] for r in records}) == sorted(p["id"] for p in PROBLEMS)
    assert sorted(r["provenance"]["sample_index"] for r in records) == sorted(list(range(SAMPLE_K)) * 2)
    assert all(
        r["provenance"]["backend"] == "vllm" and r["provenance"]["usage"]["completion_tokens"]
        for r in records
    )
    # Each sample's seed hashes (7, problem, index): no two samples draw alike, within a problem or
    # across problems (the model's next-token distribution is near uniform).
    assert len({r["solution"] for r in records}) == total
    # The rerun after losing two records writes those two, the same texts (the same seeds), and
    # skips the rest; a third run finds everything written and starts no engine.
    assert second["summary"]["written"] == len(SAMPLE_DROP) and second["summary"]["skipped"] == total - 2
    assert second["engine_starts"] == 2
    by_id = {r["id"]: r["solution"] for r in records}
    assert sorted(result["after"], key=lambda r: r["id"]) and len(result["after"]) == total
    assert {r["id"]: r["solution"] for r in result["after"]} == by_id
    assert third["summary"]["written"] == 0 and third["summary"]["skipped"] == total
    assert third["engine_starts"] == 2
