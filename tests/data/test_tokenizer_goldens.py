"""Each shipped tokenizer reproduces llama.cpp's tokenization goldens for its vocabulary."""

from __future__ import annotations

from pathlib import Path

import pytest

from cft_jax.assets.tokenizers import load_tokenizer

GOLDEN = Path(__file__).with_name("golden")
CASES = {"qwen2.5": "qwen2", "llama3": "llama-bpe", "deepseek_llm": "deepseek-llm"}


def _goldens(vocab: str) -> list[tuple[str, list[int]]]:
    # Each text is followed by a separator line; each id line by a newline (the empty text has an
    # empty id line), so both splits end with an empty remainder.
    texts = (
        (GOLDEN / f"ggml-vocab-{vocab}.gguf.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    )
    outs = (GOLDEN / f"ggml-vocab-{vocab}.gguf.out").read_text(encoding="utf-8").split("\n")
    assert texts[-1] == "" and outs[-1] == "" and len(texts) == len(outs)
    return [(t, [int(x) for x in o.split()]) for t, o in zip(texts[:-1], outs[:-1], strict=True)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_shipped_tokenizer_matches_llama_cpp_goldens(name):
    tok = load_tokenizer(name)
    cases = _goldens(CASES[name])
    assert len(cases) == 46
    for text, ids in cases:
        assert tok(text, add_special_tokens=False)["input_ids"] == ids, repr(text)
