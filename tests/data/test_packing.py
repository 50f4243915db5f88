"""Packing: segments never see each other, positions restart, nothing is lost or duplicated."""

from __future__ import annotations

import gzip
import itertools

import numpy as np
import pytest

from cft_jax.config import DataConfig
from cft_jax.data import asset_path
from cft_jax.data.packing import first_fit_decreasing, make_row, packing_efficiency
from cft_jax.data.pipeline import load_examples, make_iterator


@pytest.fixture(scope="module")
def solutions(tmp_path_factory) -> str:
    """240 real labelled GSM8K solutions (SFT: question -> solution)."""
    path = tmp_path_factory.mktemp("packing") / "solutions.jsonl"
    with gzip.open(asset_path("gsm8k_model_solutions"), "rt", encoding="utf-8") as f:
        path.write_text("".join(itertools.islice(f, 240)))
    return str(path)


def _cfg(path: str, **kw) -> DataConfig:
    return DataConfig(**{"train_paths": (path,), "objective": "sft", "seq_len": 512, **kw})


@pytest.fixture(scope="module")
def epoch_rows(solutions):
    cfg = _cfg(solutions, packing=True, packing_buffer=64, shuffle=False)
    rows = [{k: v[0] for k, v in batch.items()} for batch in make_iterator(cfg, per_host_batch=1)]
    return cfg, load_examples(cfg)[0], rows


def _segments(row):
    for s in range(1, int(row["segment_ids"].max()) + 1):
        idx = np.flatnonzero(row["segment_ids"] == s)
        yield s, idx


def test_segments_are_contiguous_numbered_from_one_and_padding_is_zero(epoch_rows):
    _, _, rows = epoch_rows
    for row in rows:
        seg = row["segment_ids"]
        n = int(seg.max())
        real = seg[seg > 0]
        assert (np.diff(real) >= 0).all() and set(real.tolist()) == set(range(1, n + 1))
        assert (seg[len(real) :] == 0).all()
        assert (row["loss_mask"][seg == 0] == 0).all() and (row["positions"][seg == 0] == 0).all()
        for _, idx in _segments(row):
            assert (np.diff(idx) == 1).all()
            assert row["positions"][idx].tolist() == list(range(len(idx)))


def test_model_attention_mask_keeps_each_segment_to_itself(epoch_rows):
    import jax.numpy as jnp

    from cft_jax.models.attention import attention_mask

    _, _, rows = epoch_rows
    seg = np.stack([r["segment_ids"] for r in rows[:8]])
    mask = np.asarray(attention_mask(jnp.asarray(seg)))
    for b in range(len(seg)):
        expected = np.zeros_like(mask[b])
        for _, idx in _segments(rows[b]):
            for q in idx:
                expected[q, idx[0] : q + 1] = True
        assert (mask[b] == expected).all()


def test_an_epoch_of_packed_rows_holds_every_example_exactly_once(epoch_rows):
    _, examples, rows = epoch_rows
    got = []
    for row in rows:
        for _, idx in _segments(row):
            got.append((tuple(row["input_ids"][idx].tolist()), tuple(row["loss_mask"][idx].tolist())))
    want = [(tuple(e["input_ids"].tolist()), tuple(e["loss_mask"].tolist())) for e in examples]
    assert sorted(got) == sorted(want)


def test_first_fit_decreasing_respects_capacity_and_places_everything():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, size=500).tolist()
    bins = first_fit_decreasing(lengths, 512)
    assert sorted(i for b in bins for i in b) == list(range(500))
    assert all(sum(lengths[i] for i in b) <= 512 for b in bins)
    # FFD is within 11/9 OPT + 1; the sum bound is a valid lower bound on OPT.
    assert len(bins) <= 11 / 9 * np.ceil(sum(lengths) / 512) + 1


def test_packing_efficiency_matches_the_rows_built(epoch_rows):
    cfg, examples, rows = epoch_rows
    eff, n_rows = packing_efficiency([len(e["input_ids"]) for e in examples], cfg.seq_len, cfg.packing_buffer)
    assert n_rows == len(rows)
    assert eff == pytest.approx(
        sum(int((r["segment_ids"] > 0).sum()) for r in rows) / (len(rows) * cfg.seq_len)
    )
    assert eff > 0.9


def test_no_packing_pads_one_example_per_row(solutions):
    it = make_iterator(_cfg(solutions, packing=False, shuffle=False), per_host_batch=4)
    batch = next(it)
    assert all(v.shape == (4, 512) and v.dtype == np.int32 for v in batch.values())
    assert set(np.unique(batch["segment_ids"]).tolist()) == {0, 1}
    n = (batch["segment_ids"] > 0).sum(axis=1)
    assert (batch["positions"][0, : n[0]] == np.arange(n[0])).all()


def test_empty_row_is_all_padding():
    row = make_row([], 8)
    assert all((v == 0).all() for v in row.values())
