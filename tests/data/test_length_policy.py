"""Length policies: proportional truncation as LLaMA-Factory does it, drop, fail; all counted."""

from __future__ import annotations

import gzip
import itertools

import numpy as np
import pytest

from cft_jax.config import DataConfig
from cft_jax.data import asset_path
from cft_jax.data.length import fit, proportional_lengths
from cft_jax.data.pipeline import encode_split


@pytest.mark.parametrize(
    ("prompt", "target", "seq_len", "want"),
    [
        (10, 20, 64, (10, 20)),  # fits
        (1000, 100, 512, (412, 100)),  # short target kept whole, the prompt cut
        (100, 1000, 512, (100, 412)),  # short prompt kept whole, the target cut
        (600, 1800, 1024, (256, 768)),  # both long: shares proportional to length
    ],
)
def test_proportional_lengths(prompt, target, seq_len, want):
    assert proportional_lengths(prompt, target, seq_len) == want


def test_fit_keeps_the_heads_of_prompt_and_target():
    ids = np.arange(30, dtype=np.int32)
    mask = np.array([0] * 10 + [1] * 20, np.int32)
    got_ids, got_mask = fit(ids, mask, 10, 16)
    keep_p, keep_t = proportional_lengths(10, 20, 16)
    assert got_ids.tolist() == list(range(keep_p)) + list(range(10, 10 + keep_t))
    assert got_mask.tolist() == [0] * keep_p + [1] * keep_t


@pytest.fixture(scope="module")
def critiques_file(tmp_path_factory) -> str:
    """60 real RealCritic critiques: many are longer than 1024 tokens."""
    path = tmp_path_factory.mktemp("length") / "critiques.jsonl"
    with gzip.open(asset_path("realcritic_critiques"), "rt", encoding="utf-8") as f:
        path.write_text("".join(itertools.islice(f, 60)))
    return str(path)


@pytest.mark.parametrize("policy", ["truncate", "drop"])
def test_policies_count_what_they_do(critiques_file, policy):
    cfg = DataConfig(train_paths=(critiques_file,), seq_len=1024, length_policy=policy)
    encoded, report = encode_split(cfg, [critiques_file])
    over = report.length.truncated if policy == "truncate" else report.length.dropped
    assert over > 0 and report.length.total == 60
    assert len(encoded) == 60 - report.length.dropped
    assert all(len(e.input_ids) <= 1024 for e in encoded)
    assert report.examples == len(encoded)
