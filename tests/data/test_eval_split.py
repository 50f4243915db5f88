"""The eval iterator: one unshuffled pass, the same number of batches on every host, nothing lost."""

from __future__ import annotations

import numpy as np
import pytest

from cft_jax.config import DataConfig
from cft_jax.data.pipeline import load_examples, make_iterator
from cft_jax.schema import to_json


@pytest.fixture(scope="module")
def data(tmp_path_factory, critiques) -> str:
    path = tmp_path_factory.mktemp("eval") / "eval.jsonl"
    path.write_text("".join(to_json(r) + "\n" for r in critiques[:11]))
    return str(path)


@pytest.mark.parametrize("packing", [False, True])
def test_eval_split_covers_every_example_once_across_hosts(data, packing):
    cfg = DataConfig(eval_paths=(data,), seq_len=2048, packing=packing)
    hosts = [
        make_iterator(cfg, per_host_batch=2, process_index=h, process_count=2, split="eval") for h in (0, 1)
    ]
    assert len(hosts[0]) == len(hosts[1]) > 0
    segments = []
    for it in hosts:
        for batch in it:
            assert batch["input_ids"].shape == (2, 2048)
            for row in range(2):
                seg = batch["segment_ids"][row]
                for s in range(1, int(seg.max()) + 1):
                    segments.append(tuple(batch["input_ids"][row][seg == s].tolist()))
                # Filler rows train nothing.
                if not seg.any():
                    assert not batch["loss_mask"][row].any()
    examples, _ = load_examples(cfg, "eval")
    assert sorted(segments) == sorted(tuple(e["input_ids"].tolist()) for e in examples)
    assert np.all([len(s) > 0 for s in segments])
