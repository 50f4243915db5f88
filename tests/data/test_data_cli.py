"""`python -m cft_jax.data`: inspect, check, prepare (read back by the pipeline), contamination."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cft_jax.config import DataConfig
from cft_jax.data.__main__ import main
from cft_jax.data.pipeline import BATCH_KEYS, make_iterator
from cft_jax.data.records import RecordError
from cft_jax.schema import to_json


@pytest.fixture(scope="module")
def data(tmp_path_factory, critiques) -> str:
    path = tmp_path_factory.mktemp("cli") / "cft.jsonl"
    path.write_text("".join(to_json(r) + "\n" for r in critiques))
    return str(path)


def test_inspect_shows_counts_and_marks_the_trained_span(data, capsys):
    assert main(["inspect", data, "--seq-len", "1024"]) == 0
    out = capsys.readouterr().out
    assert "examples: 12" in out and "truncated:" in out and "verdicts: right" in out
    assert "efficiency" in out and "tokens per epoch" in out
    shown = out.split("trained in 1 span(s) between [[TRAIN>> and <<TRAIN]]:")[1]
    assert "<|im_start|>assistant\n[[TRAIN>>" in shown and shown.rstrip().endswith("<|im_end|><<TRAIN]]")


def test_check_passes_good_data_and_names_the_bad_line(data, tmp_path, capsys):
    assert main(["check", data]) == 0
    assert json.loads(capsys.readouterr().out)["kept"] == 12
    bad = tmp_path / "bad.jsonl"
    bad.write_text(Path(data).read_text() + '{"id": "x", "question": "q", "solution": "", "critique": "c"}\n')
    with pytest.raises(RecordError, match=f"{bad}:13: field 'solution': is empty"):
        main(["check", str(bad)])
    rejects = tmp_path / "rejects.jsonl"
    assert main(["check", str(bad), "--skip-bad", "--rejects", str(rejects)]) == 0
    assert json.loads(capsys.readouterr().out)["rejected"] == 1 and rejects.exists()


def test_prepared_file_feeds_the_pipeline_the_same_batches(data, tmp_path, capsys):
    out = tmp_path / "cft.array_record"
    assert main(["prepare", data, "--seq-len", "1024", "--out", str(out)]) == 0
    raw = DataConfig(train_paths=(data,), seq_len=1024, packing=True, packing_buffer=8, epochs=2)
    prepared = DataConfig(**{**raw.__dict__, "train_paths": (str(out),), "num_workers": 0})
    a = list(make_iterator(raw, per_host_batch=2))
    b = list(make_iterator(prepared, per_host_batch=2))
    assert len(a) == len(b) > 0
    assert all(np.array_equal(x[k], y[k]) for x, y in zip(a, b, strict=True) for k in BATCH_KEYS)


def test_prepared_file_refuses_other_settings(data, tmp_path):
    out = tmp_path / "cft.array_record"
    main(["prepare", data, "--seq-len", "1024", "--out", str(out)])
    with pytest.raises(ValueError, match="seq_len"):
        make_iterator(DataConfig(train_paths=(str(out),), seq_len=2048), per_host_batch=2)


def test_contamination_warns_with_counts(tmp_path, capsys):
    from cft_jax.evaluation.suites import load_benchmark

    leaked = load_benchmark("math-500")[:3]
    recs = [{"id": p.id, "question": p.question, "solution": "s", "critique": "c"} for p in leaked]
    recs.append(
        {"id": "fresh", "question": "How many legs do three spiders have?", "solution": "24", "critique": "c"}
    )
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert main(["contamination", str(path), "--benchmarks", "math-500,gsm8k"]) == 0
    out = capsys.readouterr().out
    assert "WARNING: 3 of 4 training questions" in out and "'math-500'" in out
    assert "ok: no 13-gram overlap with 'gsm8k'" in out
