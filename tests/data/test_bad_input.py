"""Bad input: an error naming file, line and field; with skip_bad, rejects are filed and counted."""

from __future__ import annotations

import json

import pytest

from cft_jax.config import DataConfig
from cft_jax.data.pipeline import encode_split
from cft_jax.data.records import ReadOptions, ReadReport, RecordError, Rejects, read_samples

GOOD = {"id": "a", "question": "What is 1+1?", "solution": "2", "critique": "Right. Conclusion: right [END]"}


def _jsonl(tmp_path, lines: list[bytes], name: str = "data.jsonl") -> str:
    path = tmp_path / name
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return str(path)


def _good(**change) -> bytes:
    return json.dumps({**GOOD, **change}).encode()


CASES = {
    "invalid JSON": (b'{"id": "b", "question": ', None, "invalid JSON"),
    "missing field": (json.dumps({k: v for k, v in GOOD.items() if k != "critique"}).encode(), None, None),
    "empty field": (_good(solution="  "), "solution", "is empty"),
    "wrong type": (_good(question=42), "question", "must be a string"),
    "wrong verdict": (_good(verdict="maybe"), "verdict", "'right', 'wrong'"),
    "unknown field": (_good(score=1), "score", "provenance"),
    "not UTF-8": (b'{"id": "b", "question": "caf\xe9", "solution": "s", "critique": "c"}', None, "not UTF-8"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_record_names_file_line_and_field(tmp_path, case):
    bad, field, words = CASES[case]
    path = _jsonl(tmp_path, [_good(), bad, _good(id="c")])
    with pytest.raises(RecordError) as e:
        read_samples([path])
    assert e.value.path == path and e.value.line == 2
    assert str(e.value).startswith(f"{path}:2: ")
    if field:
        assert e.value.field == field and f"field '{field}'" in str(e.value)
    if words:
        assert words in str(e.value)


def test_missing_field_of_a_detected_format_is_named(tmp_path):
    alpaca = {"instruction": "Solve 1+1", "input": "", "output": "2"}
    path = _jsonl(tmp_path, [json.dumps(alpaca).encode(), json.dumps({**alpaca, "output": None}).encode()])
    with pytest.raises(RecordError, match=r"data\.jsonl:2: field 'output': missing"):
        read_samples([path])
    path = _jsonl(tmp_path, [json.dumps({"id": "x", "question": "q", "critique": "c"}).encode()], "m.jsonl")
    with pytest.raises(RecordError, match=r"m\.jsonl:1: field 'solution': missing"):
        read_samples([path])


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"\n\n")
    with pytest.raises(RecordError, match="empty"):
        read_samples([str(path)])


def test_bad_record_in_a_json_array_names_its_record_number(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"instruction": "q", "output": "a"}, {"instruction": "q", "output": ""}]))
    with pytest.raises(RecordError, match=r"a\.json:record 2: field 'output': is empty"):
        read_samples([str(path)])


def test_skip_bad_files_every_reject_and_counts_it(tmp_path):
    lines = [_good(id=str(i)) for i in range(3)] + [bad for bad, _, _ in CASES.values()]
    path = _jsonl(tmp_path, lines)
    rejects_path = tmp_path / "rejects.jsonl"
    report = ReadReport()
    rejects = Rejects(rejects_path)
    samples = read_samples([path], skip_bad=True, rejects=rejects, report=report)
    assert [s.id for s in samples] == ["0", "1", "2"]
    assert report.read == 3 + len(CASES) and report.rejected == len(CASES) and report.kept == 3
    rows = [json.loads(line) for line in rejects_path.read_text().splitlines()]
    assert [r["where"] for r in rows] == [f"{path}:{n}" for n in range(4, 4 + len(CASES))]
    assert all(r["error"] and r["raw"] for r in rows)


def test_over_long_record_fails_with_file_line_and_field(tmp_path):
    long = _good(id="long", critique="word " * 400)
    path = _jsonl(tmp_path, [_good(), long])
    cfg = DataConfig(train_paths=(path,), seq_len=128, length_policy="fail")
    with pytest.raises(RecordError, match=r"data\.jsonl:2: field 'critique': example is \d+ tokens"):
        encode_split(cfg, [path])


def test_over_long_record_with_skip_bad_goes_to_rejects(tmp_path):
    path = _jsonl(tmp_path, [_good(), _good(id="long", critique="word " * 400)])
    rejects = tmp_path / "rejects.jsonl"
    cfg = DataConfig(
        train_paths=(path,), seq_len=128, length_policy="fail", skip_bad=True, rejects_path=str(rejects)
    )
    encoded, report = encode_split(cfg, [path])
    assert [e.id for e in encoded] == ["a"]
    assert report.length.rejected == 1 and report.read.rejected == 1
    assert json.loads(rejects.read_text())["where"] == f"{path}:2"


def test_record_over_the_character_limit_is_rejected(tmp_path):
    path = _jsonl(tmp_path, [_good(critique="x" * 2000)])
    with pytest.raises(RecordError, match=r":1: record is \d+ characters, over max_record_chars=1000"):
        read_samples([path], ReadOptions(max_record_chars=1000))


def test_skip_bad_without_a_rejects_path_is_refused(tmp_path):
    path = _jsonl(tmp_path, [_good()])
    with pytest.raises(ValueError, match="rejects_path"):
        encode_split(DataConfig(train_paths=(path,), skip_bad=True), [path])
