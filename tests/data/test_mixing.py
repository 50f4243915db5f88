"""Mixing sources by weight (Grain's MapDataset.mix) and holding out a validation split by question."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from cft_jax.config import DataConfig, TrainConfig, validate
from cft_jax.data.pipeline import (
    BATCH_KEYS,
    load_examples,
    load_sources,
    make_iterator,
    mixture,
    training_tokenizer,
)
from cft_jax.data.records import read_samples
from cft_jax.data.templates import Encoder
from cft_jax.schema import to_json


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> tuple[str, str]:
    """Two small sources of unequal size (20 and 30 records), so weights 0.7 / 0.3 are not their sizes."""
    d = tmp_path_factory.mktemp("mix")
    paths = []
    for name, n in (("apples", 20), ("pears", 30)):
        path = d / f"{name}.jsonl"
        rows = [
            {"instruction": f"How many {name} are in {k} boxes of 3?", "output": f"{3 * k}."}
            for k in range(n)
        ]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths.append(str(path))
    return paths[0], paths[1]


def _mixed(paths, **kw) -> DataConfig:
    return DataConfig(train_paths=paths, train_weights=(0.7, 0.3), seq_len=64, seed=3, **kw)


def _source_of(cfg: DataConfig) -> dict[tuple[int, ...], int]:
    return {tuple(ex["input_ids"].tolist()): i for i, (exs, _) in enumerate(load_sources(cfg)) for ex in exs}


def _rows(batches) -> list[tuple[int, ...]]:
    return [
        tuple(row[seg > 0].tolist())
        for b in batches
        for row, seg in zip(b["input_ids"], b["segment_ids"], strict=True)
    ]


def test_realised_ratio_over_10000_records_is_within_2_percent_of_the_weights(sources):
    # Which source the i-th record comes from is Grain's fixed interleaving, the same shuffled or not;
    # unshuffled, reading 10,000 records directly is quick (Grain's index shuffle is slow on tiny sources).
    cfg = _mixed(sources, epochs=200, shuffle=False)  # 200 epochs of 50 examples
    examples = [exs for exs, _ in load_sources(cfg)]
    mixed = mixture(cfg, examples)  # what make_iterator draws from
    assert len(mixed) == 10_000
    source_of = _source_of(cfg)
    records = [tuple(mixed[i]["input_ids"].tolist()) for i in range(len(mixed))]
    drawn = [source_of[r] for r in records]
    assert abs(drawn.count(0) / len(drawn) - 0.7) < 0.02
    # Both sources wrap around: every example of each is drawn, the smaller one more often.
    assert set(records) == set(source_of)
    # Shuffled, each source's order changes and the interleaving does not; the iterator yields exactly
    # that sequence, padded and batched.
    shuffled = dataclasses.replace(cfg, shuffle=True, epochs=2)
    it = make_iterator(shuffled, per_host_batch=10)
    rows = _rows(it)
    assert [source_of[r] for r in rows] == drawn[:100] and rows != records[:100]
    assert rows == [tuple(ex["input_ids"].tolist()) for ex in mixture(shuffled, examples)]
    assert it.batches_per_epoch == 5 and it.report.examples == 50
    assert [(s["weight"], s["examples"]) for s in it.report.sources] == [(0.7, 20), (0.3, 30)]


def test_mixing_is_deterministic_by_seed(sources):
    a = _rows(make_iterator(_mixed(sources, epochs=2), per_host_batch=10))
    assert a == _rows(make_iterator(_mixed(sources, epochs=2), per_host_batch=10))
    assert a != _rows(
        make_iterator(dataclasses.replace(_mixed(sources, epochs=2), seed=4), per_host_batch=10)
    )


@pytest.mark.parametrize("packing", [False, True])
def test_restored_mixed_iterator_continues_the_same_sequence(sources, packing):
    cfg = _mixed(sources, epochs=3, packing=packing, packing_buffer=8)
    for host in (0, 1):
        full = list(make_iterator(cfg, per_host_batch=4, process_index=host, process_count=2))
        it = make_iterator(cfg, per_host_batch=4, process_index=host, process_count=2)
        k = len(full) // 2 + 1  # past the first epoch
        head = [next(it) for _ in range(k)]
        state = json.loads(json.dumps(it.get_state()))
        fresh = make_iterator(cfg, per_host_batch=4, process_index=host, process_count=2)
        fresh.set_state(state)
        rest = head + list(fresh)
        assert len(rest) == len(full) and all(
            (x[key] == y[key]).all() for x, y in zip(rest, full, strict=True) for key in BATCH_KEYS
        )


def test_mixing_needs_one_weight_per_path(sources):
    with pytest.raises(ValueError, match=r"one weight per data.train_paths entry \(2\)"):
        make_iterator(dataclasses.replace(_mixed(sources), train_weights=(1.0,)), per_host_batch=2)
    with pytest.raises(ValueError, match="every weight must be > 0"):
        make_iterator(dataclasses.replace(_mixed(sources), train_weights=(1.0, 0.0)), per_host_batch=2)


@pytest.fixture(scope="module")
def critiques_by_question(tmp_path_factory, critiques) -> tuple[str, str]:
    """The 12 real critiques, each question three times over two files (ids differ)."""
    d = tmp_path_factory.mktemp("val")
    a, b = d / "a.jsonl", d / "b.jsonl"
    a.write_text(
        "".join(to_json(dataclasses.replace(r, id=f"{r.id}-{k}")) + "\n" for k in (0, 1) for r in critiques)
    )
    b.write_text("".join(to_json(dataclasses.replace(r, id=f"{r.id}-2")) + "\n" for r in critiques))
    return str(a), str(b)


@pytest.mark.parametrize("weights", [(), (2.0, 1.0)])
def test_val_fraction_holds_out_whole_questions(critiques_by_question, critiques, weights):
    cfg = DataConfig(
        train_paths=critiques_by_question, train_weights=weights, val_fraction=0.25, seq_len=8192
    )
    encoder = Encoder(training_tokenizer(cfg), cfg.template)
    question_of = {
        tuple(e.input_ids.tolist()): s.question
        for path in critiques_by_question
        for s, e in zip(read_samples([path]), encoder.encode_batch(read_samples([path])), strict=True)
    }
    train, train_report = load_examples(cfg, "train")
    val, val_report = load_examples(cfg, "eval")
    train_q = {question_of[tuple(e["input_ids"].tolist())] for e in train}
    val_q = {question_of[tuple(e["input_ids"].tolist())] for e in val}
    questions = {r.question for r in critiques}
    assert not train_q & val_q and train_q | val_q == questions and len(val_q) == round(0.25 * len(questions))
    assert len(train) + len(val) == 36 and len(val) == 3 * len(val_q)  # every copy of a question together
    assert train_report.held_out == len(val) and val_report.held_out == len(train)
    # Deterministic: the same split again, whatever the shuffling seed.
    again = load_examples(dataclasses.replace(cfg, seed=9), "eval")[0]
    assert [e["input_ids"].tolist() for e in again] == [e["input_ids"].tolist() for e in val]


def test_the_trainer_evaluates_on_the_held_out_questions(critiques_by_question):
    from cft_jax.train import data_iterator

    config = TrainConfig()
    config.model.init_config = {"model_type": "llama"}
    config.evaluation.every_steps = 10
    config.training.global_batch = 2
    config.data = DataConfig(train_paths=critiques_by_question, val_fraction=0.25, seq_len=2048)
    assert not [e for e in validate(config) if "eval_paths" in e or "val_fraction" in e]
    held_out = load_examples(config.data, "eval")[0]
    batches = list(data_iterator(config, "eval"))
    rows = [
        tuple(r[s > 0].tolist())
        for b in batches
        for r, s in zip(b["input_ids"], b["segment_ids"], strict=True)
    ]
    assert sorted(r for r in rows if r) == sorted(tuple(e["input_ids"].tolist()) for e in held_out)
    config.data = dataclasses.replace(config.data, eval_paths=critiques_by_question[:1])
    assert any("give one eval split" in e for e in validate(config))


def test_val_fraction_refuses_a_prepared_file(critiques_by_question, tmp_path):
    from cft_jax.data.__main__ import main

    out = tmp_path / "train.array_record"
    assert main(["prepare", critiques_by_question[1], "--seq-len", "2048", "--out", str(out)]) == 0
    with pytest.raises(ValueError, match="is prepared .tokens only, no questions to split by"):
        load_examples(DataConfig(train_paths=(str(out),), val_fraction=0.2), "train")


def test_bad_records_of_every_source_and_split_land_in_one_rejects_file(sources, tmp_path):
    paths = []
    for index, path in enumerate(sources):
        bad = tmp_path / f"{index}.jsonl"
        bad.write_text(Path(path).read_text() + '{"instruction": "q", "output": ""}\n')
        paths.append(str(bad))
    rejects = tmp_path / "rejects.jsonl"
    cfg = _mixed(tuple(paths), val_fraction=0.2, skip_bad=True, rejects_path=str(rejects))
    train = make_iterator(cfg, per_host_batch=2)
    make_iterator(cfg, per_host_batch=2, split="eval")  # re-reads the files: files nothing twice
    where = [json.loads(line)["where"] for line in rejects.read_text().splitlines()]
    assert where == [f"{paths[0]}:21", f"{paths[1]}:31"]
    assert train.report.read.rejected == 2 and train.report.examples + train.report.held_out == 50


def test_a_prepared_source_mixes_as_its_raw_file(sources, tmp_path):
    from cft_jax.data.__main__ import main

    prepared = tmp_path / "apples.array_record"
    assert main(["prepare", sources[0], "--seq-len", "64", "--out", str(prepared)]) == 0
    raw = _mixed(sources, epochs=2)
    a = list(make_iterator(raw, per_host_batch=5))
    mixed = dataclasses.replace(raw, train_paths=(str(prepared), sources[1]))
    b = list(make_iterator(mixed, per_host_batch=5))
    assert len(a) == len(b) == 20
    assert all((x[key] == y[key]).all() for x, y in zip(a, b, strict=True) for key in BATCH_KEYS)
