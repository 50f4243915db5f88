"""Resume: the batches after a restored state are those of an uninterrupted run, in a fresh process too."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cft_jax.config import DataConfig
from cft_jax.data.pipeline import BATCH_KEYS, make_iterator
from cft_jax.schema import to_json

WORKER = Path(__file__).with_name("resume_worker.py")


@pytest.fixture(scope="module")
def data(tmp_path_factory, critiques) -> str:
    # 36 real records (12 critiques x 3 ids) so an epoch spans several batches on each host.
    path = tmp_path_factory.mktemp("resume") / "cft.jsonl"
    recs = [dataclasses.replace(r, id=f"{r.id}-{k}") for k in range(3) for r in critiques]
    path.write_text("".join(to_json(r) + "\n" for r in recs))
    return str(path)


def _cfg(path: str, **kw) -> DataConfig:
    return DataConfig(
        **{"train_paths": (path,), "seq_len": 1024, "epochs": 2, "seed": 7, "packing_buffer": 8, **kw}
    )


def _run(cfg: DataConfig, host: int, n: int | None = None) -> list[dict[str, np.ndarray]]:
    it = make_iterator(cfg, per_host_batch=2, process_index=host, process_count=2)
    out = list(it) if n is None else [next(it) for _ in range(n)]
    it.close()
    return out


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        (x[k] == y[k]).all() for x, y in zip(a, b, strict=True) for k in BATCH_KEYS
    )


@pytest.mark.parametrize("packing", [False, True])
def test_restored_state_continues_exactly_in_process(data, packing):
    cfg = _cfg(data, packing=packing)
    for host in (0, 1):
        full = _run(cfg, host)
        for k in (1, len(full) // 2 + 1):  # the second crosses into epoch 2
            it = make_iterator(cfg, per_host_batch=2, process_index=host, process_count=2)
            head = [next(it) for _ in range(k)]
            state = json.loads(json.dumps(it.get_state()))
            fresh = make_iterator(cfg, per_host_batch=2, process_index=host, process_count=2)
            fresh.set_state(state)
            assert _same(head + list(fresh), full)


def test_hosts_read_disjoint_shards(data):
    cfg = _cfg(data, epochs=1, shuffle=False)
    ids = [{tuple(r) for b in _run(cfg, h) for r in b["input_ids"]} for h in (0, 1)]
    assert ids[0] and ids[1] and not ids[0] & ids[1]


def test_shuffle_is_deterministic_by_seed_and_differs_per_epoch(data):
    cfg = _cfg(data)
    a, b = _run(cfg, 0), _run(cfg, 0)
    assert _same(a, b)
    assert not _same(a, _run(dataclasses.replace(cfg, seed=8), 0))
    half = len(a) // 2
    assert not _same(a[:half], a[half : 2 * half])


@pytest.mark.slow
def test_restored_state_continues_exactly_in_a_fresh_process_with_workers(data, tmp_path):
    cfg = _cfg(data, packing=True, num_workers=2)
    cfg_json = json.dumps(dataclasses.asdict(cfg))
    full = [_run(cfg, host) for host in (0, 1)]
    k = 2
    n = min(len(f) for f in full) - k
    state, out = tmp_path / "state.json", tmp_path / "rest.npz"
    subprocess.run([sys.executable, str(WORKER), "save", cfg_json, str(k), str(state)], check=True)
    subprocess.run(
        [sys.executable, str(WORKER), "restore", cfg_json, str(n), str(state), str(out)], check=True
    )
    rest = np.load(out)
    for host in (0, 1):
        got = [{key: rest[f"{host}_{i}_{key}"] for key in BATCH_KEYS} for i in range(n)]
        assert _same(got, full[host][k : k + n])
