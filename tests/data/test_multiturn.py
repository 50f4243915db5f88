"""Multi-turn conversations: the ids are the chat template's rendering with the real tokenizers, and the
loss mask is exactly each assistant turn's content and its end token."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest

from cft_jax.assets.tokenizers import load_tokenizer
from cft_jax.data.__main__ import main
from cft_jax.data.records import ReadOptions, RecordError, read_samples
from cft_jax.data.templates import Encoder

SYSTEM = "You are a careful math tutor."
# Three exchanges; contents start with a letter so no BPE merge crosses a turn boundary, which makes
# tokenizing each piece on its own an independent reference for the whole string's ids.
TURNS = [
    ("What is 12 * 7?", "It is 84, since 12 * 7 = 70 + 14."),
    ("And 84 / 4?", "That is 21.\nCheck: 21 * 4 = 84."),
    ("Is 21 prime?", "No: 21 = 3 * 7, so it is not prime."),
]

# The project's templates written out, the trained spans between [[ and ]].
CHATML = (
    "<|im_start|>system\n{system}<|im_end|>\n"
    "<|im_start|>user\n{u0}<|im_end|>\n<|im_start|>assistant\n[[{a0}<|im_end|>]]\n"
    "<|im_start|>user\n{u1}<|im_end|>\n<|im_start|>assistant\n[[{a1}<|im_end|>]]\n"
    "<|im_start|>user\n{u2}<|im_end|>\n<|im_start|>assistant\n[[{a2}<|im_end|>]]"
)
LLAMA3 = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n{u0}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    "[[{a0}<|eot_id|>]]"
    "<|start_header_id|>user<|end_header_id|>\n\n{u1}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    "[[{a1}<|eot_id|>]]"
    "<|start_header_id|>user<|end_header_id|>\n\n{u2}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    "[[{a2}<|eot_id|>]]"
)


def _fill(template: str) -> str:
    values = {"system": SYSTEM}
    for i, (user, assistant) in enumerate(TURNS):
        values |= {f"u{i}": user, f"a{i}": assistant}
    return template.format(**values)


def _messages(system: bool = True) -> list[dict[str, str]]:
    out = [{"role": "system", "content": SYSTEM}] if system else []
    for user, assistant in TURNS:
        out += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return out


def _reference(tok, marked: str) -> tuple[list[int], list[int]]:
    """(ids, mask) of a [[marked]] string: each piece tokenized on its own, marked pieces trained."""
    ids, mask = [], []
    for i, piece in enumerate(re.split(r"\[\[|\]\]", marked)):
        piece_ids = tok(piece, add_special_tokens=False)["input_ids"] if piece else []
        ids += piece_ids
        mask += [i % 2] * len(piece_ids)
    return ids, mask


@pytest.fixture(scope="module")
def llama3():
    return load_tokenizer("llama3")


@pytest.fixture(scope="module")
def conversation(tmp_path_factory) -> tuple[str, str]:
    """The conversation as a messages record and as its ShareGPT twin, each in a JSONL file."""
    d = tmp_path_factory.mktemp("multiturn")
    sharegpt = [
        {"from": {"system": "system", "user": "human", "assistant": "gpt"}[m["role"]], "value": m["content"]}
        for m in _messages()
    ]
    (d / "messages.jsonl").write_text(json.dumps({"id": "chat", "messages": _messages()}) + "\n")
    (d / "sharegpt.jsonl").write_text(json.dumps({"id": "chat", "conversations": sharegpt}) + "\n")
    return str(d / "messages.jsonl"), str(d / "sharegpt.jsonl")


def _read(paths: tuple[str, ...]) -> list:
    """Samples as every pipeline reads them (format detected from the keys)."""
    return [sample for path in paths for sample in read_samples([path])]


def test_messages_and_sharegpt_read_as_the_same_three_turn_conversation(conversation):
    messages, sharegpt = _read(conversation)
    assert dataclasses.replace(sharegpt, where=messages.where, target_field=messages.target_field) == messages
    assert messages.system == SYSTEM and messages.history == tuple(TURNS[:2])
    assert (messages.prompt, messages.target) == TURNS[2]
    assert (
        messages.target_field == "messages[6].content" and sharegpt.target_field == "conversations[6].value"
    )


@pytest.mark.parametrize(
    ("tokenizer", "template", "marked"), [("qwen", "chatml", CHATML), ("llama3", "llama3", LLAMA3)]
)
def test_project_templates_render_three_turns_token_for_token(
    request, conversation, tokenizer, template, marked
):
    tok = request.getfixturevalue(tokenizer)
    reference = _fill(marked)
    ids, mask = _reference(tok, reference)
    # The piecewise reference is the whole string's tokenization.
    assert ids == tok(reference.replace("[[", "").replace("]]", ""), add_special_tokens=False)["input_ids"]
    for sample in _read(conversation):
        got = Encoder(tok, template, system_prompt="unused: the data's system wins").encode(sample)
        assert got.input_ids.tolist() == ids and got.loss_mask.tolist() == mask
        assert not got.straddles
    end = "<|im_end|>" if template == "chatml" else "<|eot_id|>"
    spans = _spans(tok, got)
    assert spans == [assistant + end for _, assistant in TURNS]


def _spans(tok, encoded) -> list[str]:
    """The decoded runs of trained tokens."""
    mask = np.concatenate([[0], encoded.loss_mask, [0]])
    starts, ends = np.flatnonzero(np.diff(mask) == 1), np.flatnonzero(np.diff(mask) == -1)
    return [tok.decode(encoded.input_ids[a:b]) for a, b in zip(starts, ends, strict=True)]


def test_qwen_tokenizer_chat_template_three_turns_equal_apply_chat_template(qwen, conversation):
    messages = _messages()
    full = qwen.apply_chat_template(messages, tokenize=False)
    # The trained spans of Qwen's own template: each assistant turn's content, <|im_end|> and the "\n"
    # its template closes every turn with, up to the next <|im_start|>.
    marked, at = full, 0
    for _, assistant in TURNS:
        span = f"{assistant}<|im_end|>\n"
        at = marked.index("<|im_start|>assistant\n" + span, at) + len("<|im_start|>assistant\n")
        marked = marked[:at] + "[[" + span + "]]" + marked[at + len(span) :]
        at += len(span) + 4
    ids, mask = _reference(qwen, marked)
    assert ids == list(qwen.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    for sample in _read(conversation):
        got = Encoder(qwen, "tokenizer").encode(sample)
        assert got.input_ids.tolist() == ids and got.loss_mask.tolist() == mask
    assert _spans(qwen, got) == [f"{assistant}<|im_end|>\n" for _, assistant in TURNS]


def test_last_assistant_trains_only_the_final_turn(qwen, conversation):
    sample = _read(conversation)[0]
    every = Encoder(qwen, "chatml").encode(sample)
    last = Encoder(qwen, "chatml", train_on="last_assistant").encode(sample)
    assert last.input_ids.tolist() == every.input_ids.tolist()
    assert _spans(qwen, last) == [TURNS[2][1] + "<|im_end|>"]
    assert last.loss_mask.sum() < every.loss_mask.sum() and last.prompt_len > every.prompt_len


def test_without_a_system_turn_the_template_default_is_used(qwen, llama3, tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": _messages(system=False)}) + "\n")
    [sample] = read_samples([str(path)])
    chatml = Encoder(qwen, "chatml").render(sample)
    assert "".join(chatml).startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    got = Encoder(llama3, "llama3").encode(sample)
    reference = _fill(LLAMA3).replace(f"<|start_header_id|>system<|end_header_id|>\n\n{SYSTEM}<|eot_id|>", "")
    assert (got.input_ids.tolist(), got.loss_mask.tolist()) == _reference(llama3, reference)


def test_raw_template_refuses_a_multi_turn_conversation(qwen, conversation):
    with pytest.raises(ValueError, match="template 'raw' has no turn markers"):
        Encoder(qwen, "raw").encode(_read(conversation)[0])


def _turn(role: str, content: str = "text") -> dict:
    return {"role": role, "content": content}


BAD = {
    "two user turns": (
        {"messages": [_turn("user"), _turn("user"), _turn("assistant")]},
        "messages[1].role",
        "'user': expected 'assistant'",
    ),
    "ends with a user turn": (
        {"messages": [_turn("user"), _turn("assistant"), _turn("user")]},
        "messages[2].role",
        "must end with the 'assistant' turn",
    ),
    "system in the middle": (
        {"messages": [_turn("user"), _turn("system"), _turn("assistant")]},
        "messages[1].role",
        "a system turn may only come first",
    ),
    "starts with the assistant": (
        {"messages": [_turn("system"), _turn("assistant"), _turn("user")]},
        "messages[1].role",
        "expected 'user'",
    ),
    "missing content": (
        {"messages": [_turn("user"), {"role": "assistant"}]},
        "messages[1].content",
        "missing",
    ),
    "empty content": (
        {"messages": [_turn("user"), _turn("assistant"), _turn("user", "  "), _turn("assistant")]},
        "messages[2].content",
        "is empty",
    ),
    "unknown role": (
        {"messages": [_turn("user"), _turn("bot")]},
        "messages[1].role",
        "'bot' is not a role here; use one of ['system', 'user', 'assistant']",
    ),
    "sharegpt role": (
        {"conversations": [{"from": "human", "value": "q"}, {"from": "assistant", "value": "a"}]},
        "conversations[1].from",
        "use one of ['system', 'human', 'gpt']",
    ),
    "sharegpt order": (
        {"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]},
        "conversations[0].from",
        "'gpt': expected 'human'",
    ),
    "not a list": ({"messages": "hello"}, "messages", "non-empty list"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_conversation_is_one_error_with_file_line_and_field(tmp_path, case):
    record, field, words = BAD[case]
    fmt = next(iter(record))
    good = {"messages": [_turn("user"), _turn("assistant")]}
    if fmt == "conversations":
        good = {fmt: [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(RecordError) as error:
        read_samples([str(path)], ReadOptions(fmt=fmt))
    assert str(error.value).startswith(f"{path}:2: field '{field}': ") and words in str(error.value)


def test_inspect_marks_every_trained_turn_of_a_multi_turn_record(conversation, capsys):
    path = conversation[0]
    assert main(["inspect", path, "--seq-len", "512"]) == 0
    out = capsys.readouterr().out
    assert (
        "multi-turn: 1 examples train more than one assistant turn (up to 3; train_on all_assistant)" in out
    )
    shown = out.split("in 3 span(s) between [[TRAIN>> and <<TRAIN]]:")[1]
    assert [f"[[TRAIN>>{a}<|im_end|><<TRAIN]]" in shown for _, a in TURNS] == [True] * 3
    assert shown.count("[[TRAIN>>") == 3 and f"<|im_start|>user\n{TURNS[1][0]}<|im_end|>" in shown
    assert main(["inspect", path, "--seq-len", "512", "--train-on", "last_assistant"]) == 0
    assert "in 1 span(s)" in capsys.readouterr().out
