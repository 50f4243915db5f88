"""Every reader yields the same Samples for the same content, whatever the file format."""

from __future__ import annotations

import dataclasses
import json

import datasets
import pytest

from cft_jax.data.records import CFT_INPUT, CFT_INSTRUCTION, ReadOptions, read_samples
from cft_jax.schema import to_json


def _alpaca(rec) -> dict:
    return {
        "id": rec.id,
        "instruction": CFT_INSTRUCTION,
        "input": CFT_INPUT.format(question=rec.question, solution=rec.solution),
        "output": rec.critique,
    }


def _messages(rec) -> dict:
    a = _alpaca(rec)
    user = a["instruction"] + "\n" + a["input"]
    return {
        "id": rec.id,
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": a["output"]}],
    }


def _content(samples):
    return [(s.id, s.prompt, s.target, s.system) for s in samples]


@pytest.fixture(scope="module")
def files(tmp_path_factory, critiques):
    from array_record.python.array_record_module import ArrayRecordWriter

    d = tmp_path_factory.mktemp("formats")
    out = {}
    out["native.jsonl"] = d / "native.jsonl"
    out["native.jsonl"].write_text("".join(to_json(r) + "\n" for r in critiques))
    alpaca = [_alpaca(r) for r in critiques]
    messages = [_messages(r) for r in critiques]
    out["alpaca.json"] = d / "alpaca.json"
    out["alpaca.json"].write_text(json.dumps(alpaca, indent=2))
    out["alpaca.jsonl"] = d / "alpaca.jsonl"
    out["alpaca.jsonl"].write_text("".join(json.dumps(a) + "\n" for a in alpaca))
    out["messages.jsonl"] = d / "messages.jsonl"
    out["messages.jsonl"].write_text("".join(json.dumps(m) + "\n" for m in messages))
    ds = datasets.Dataset.from_list(messages)
    out["messages.parquet"] = d / "messages.parquet"
    ds.to_parquet(str(out["messages.parquet"]))
    alpaca_ds = datasets.Dataset.from_list(alpaca)
    out["alpaca_disk"] = d / "alpaca_disk"
    alpaca_ds.save_to_disk(str(out["alpaca_disk"]))
    out["alpaca.arrow"] = next(out["alpaca_disk"].glob("*.arrow"))
    out["native.array_record"] = d / "native.array_record"
    writer = ArrayRecordWriter(str(out["native.array_record"]), "group_size:1")
    for r in critiques:
        writer.write(to_json(r).encode("utf-8"))
    writer.close()
    return out


def test_every_file_format_gives_the_same_samples(files):
    reference = _content(read_samples([str(files["native.jsonl"])]))
    assert len(reference) == 12
    for name, path in files.items():
        assert _content(read_samples([str(path)])) == reference, name


def test_format_override_and_detection_agree(files):
    detected = read_samples([str(files["alpaca.jsonl"])])
    explicit = read_samples([str(files["alpaca.jsonl"])], ReadOptions(fmt="alpaca"))
    assert detected == explicit


def test_tfds_builder_gives_the_same_samples(tmp_path, critiques, files):
    import tensorflow_datasets as tfds

    alpaca = [_alpaca(r) for r in critiques]

    class TinyAlpacaCft(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            text = tfds.features.Text()
            features = {"id": text, "instruction": text, "input": text, "output": text}
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            yield from enumerate(alpaca)

    # ArrayRecord storage: TFDS reads it without TensorFlow.
    TinyAlpacaCft(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    got = read_samples(["tfds:tiny_alpaca_cft:train"], ReadOptions(tfds_data_dir=str(tmp_path)))
    reference = _content(read_samples([str(files["native.jsonl"])]))
    # TFDS shuffles records on write; compare as sets of content.
    assert sorted(_content(got)) == sorted(reference)


def test_sft_objective_trains_question_to_solution(files, critiques):
    got = read_samples([str(files["native.jsonl"])], ReadOptions(objective="sft"))
    assert [(s.prompt, s.target) for s in got] == [(r.question, r.solution) for r in critiques]


def test_sft_only_correct_keeps_labelled_correct_solutions(tmp_path, critiques):
    recs = [dataclasses.replace(r, is_correct=i % 3 == 0) for i, r in enumerate(critiques)]
    path = tmp_path / "labelled.jsonl"
    path.write_text("".join(to_json(r) + "\n" for r in recs))
    from cft_jax.data.records import ReadReport

    report = ReadReport()
    got = read_samples([str(path)], ReadOptions(objective="sft", sft_only_correct=True), report=report)
    assert [s.id for s in got] == [r.id for r in recs if r.is_correct]
    assert report.filtered_incorrect == 8 and report.kept == 4 and report.read == 12


def test_shipped_real_data_reads_in_both_objectives():
    from cft_jax.data import asset_path

    cft = read_samples([str(asset_path("realcritic_critiques"))])
    sft = read_samples(
        [str(asset_path("gsm8k_model_solutions"))], ReadOptions(objective="sft", sft_only_correct=True)
    )
    assert len(cft) == 532 and cft[0].prompt.startswith(CFT_INSTRUCTION)
    assert len(sft) == 2001 and all(s.is_correct for s in sft)
