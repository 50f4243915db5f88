"""The JSONL contract shared by the core and the side tools."""

import json
import subprocess
import sys

import pytest

from cft_jax import schema


@pytest.mark.parametrize(
    ("critique", "verdict"),
    [
        ("The steps hold.\nConclusion: right [END]", "right"),
        ("Step 2 is off.\nConclusion: wrong [END]", "wrong"),
        ("Conclusion: the solution is incorrect.", "wrong"),
        ("Conclusion: correct", "right"),
        ("Conclusion: wrong. Wait, re-check.\nConclusion: right [END]", "right"),
        ("no verdict at all", None),
        ("Conclusion: unclear", None),
    ],
)
def test_parse_verdict_reads_the_text_after_the_last_conclusion(critique, verdict):
    assert schema.parse_verdict(critique) == verdict


def test_stable_id_is_deterministic_and_content_sensitive():
    assert schema.stable_id("q", "s") == schema.stable_id("q", "s")
    assert schema.stable_id("q", "s") != schema.stable_id("q", "s2")
    assert schema.stable_id("ab", "c") != schema.stable_id("a", "bc")


def test_read_jsonl_names_file_and_line_on_bad_json(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"id": "a"}\n\n{"id": \n')
    with pytest.raises(schema.JsonlError, match=r"x.jsonl:3: invalid JSON"):
        list(schema.read_jsonl(p))


def test_read_jsonl_rejects_non_utf8_and_non_objects(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"id": "a"}\n{"id": "\xff"}\n')
    with pytest.raises(schema.JsonlError, match=r":2: not UTF-8"):
        list(schema.read_jsonl(p))
    p.write_text("[1, 2]\n")
    with pytest.raises(schema.JsonlError, match=r":1: expected a JSON object"):
        list(schema.read_jsonl(p))


def test_from_dict_names_missing_and_unknown_fields():
    with pytest.raises(ValueError, match=r"f.jsonl:4: missing field\(s\) \['critique'\]"):
        schema.from_dict(schema.CritiqueRecord, {"id": "1", "question": "q", "solution": "s"}, "f.jsonl:4")
    with pytest.raises(ValueError, match="unknown field"):
        schema.from_dict(schema.ProblemRecord, {"id": "1", "question": "q", "extra": 1})


def test_appender_repairs_a_torn_tail_and_done_ids_skips_it(tmp_path):
    p = tmp_path / "out.jsonl"
    with schema.JsonlAppender(p) as out:
        out.write(schema.ProblemRecord(id="a", question="q"))
    with open(p, "ab") as f:  # a writer killed mid-record
        f.write(b'{"id": "b", "quest')
    assert schema.done_ids(p) == {"a"}
    with schema.JsonlAppender(p) as out:
        out.write({"id": "b", "question": "q2"})
    lines = p.read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["a", "b"]


def test_schema_imports_only_the_standard_library():
    code = (
        "import sys, cft_jax.schema; bad = {'jax', 'torch', 'numpy'} & set(sys.modules); print(sorted(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
