"""A shortened demo end to end: real SmolLM2, real critiques, a few training steps on CPU."""

from __future__ import annotations

import json

import pytest

from cft_jax.demo.measure import wilson_interval
from cft_jax.demo.run import main
from tests.trainer_runs import xla_flags


@pytest.mark.slow
def test_short_demo_lowers_heldout_loss_and_exports(tmp_path, smollm2_hf_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # The demo trains on one CPU device, as `scripts/demo.sh` runs it; the suite's 8 simulated
    # devices would not split its 4-row batch.
    monkeypatch.setenv("XLA_FLAGS", xla_flags(1))
    out = tmp_path / "demo"
    main(
        [
            "--out", str(out),
            "--cache", str(tmp_path / "cache"),
            "--model-dir", str(smollm2_hf_dir),
            "--steps", "2",
            "--eval-every", "2",
            "--test-examples", "4",
            "--verdict-examples", "8",
            "--max-new-tokens", "8",
            "--batch-size", "2",
        ]
    )  # fmt: skip
    measurements = json.loads((out / "measurements.json").read_text())
    before, after = measurements["before"], measurements["after"]
    assert after["loss"] < before["loss"]
    assert before["verdicts"] == after["verdicts"] == 8
    assert before["labelled_right"] == before["labelled_wrong"] == 4
    low, high = after["accuracy_interval_95"]
    assert low <= after["verdict_correct"] / 8 <= high

    report = (out / "report.md").read_text()
    assert "| held-out critique loss" in report and "95% CI" in report
    assert (out / "loss_curves.png").read_bytes().startswith(b"\x89PNG")
    metrics = [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2]
    assert any((out / "train" / "tensorboard").iterdir())

    from transformers import AutoModelForCausalLM

    export = out / "train" / "hf" / "step_2"
    model = AutoModelForCausalLM.from_pretrained(export)
    assert model.config.num_hidden_layers == 30


@pytest.mark.parametrize(("successes", "trials"), [(0, 8), (3, 8), (32, 64), (50, 64), (64, 64)])
def test_verdict_interval_is_wilsons(successes, trials):
    from scipy.stats import binomtest

    reference = binomtest(successes, trials).proportion_ci(confidence_level=0.95, method="wilson")
    # Both evaluate the same closed form in float64: agreement to 1e-12 (a few ulps of values <= 1).
    assert wilson_interval(successes, trials) == pytest.approx((reference.low, reference.high), abs=1e-12)
