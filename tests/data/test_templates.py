"""Templates render the papers' exact strings and token ids; the loss mask is exactly the target."""

from __future__ import annotations

import numpy as np
import pytest

from cft_jax.data.records import CFT_INPUT, CFT_INSTRUCTION, Sample, cft_prompt
from cft_jax.data.templates import Encoder, load_tokenizer

# recipe.md section 4, verbatim: the template of every CFT run, and the one-shot Qwen2.5-Math system.
RECIPE_CFT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{instruction}\n{input}"
    "<|im_end|>\n<|im_start|>assistant\n{output}<|im_end|>"
)
QWEN25_MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."

IM_START, IM_END = 151644, 151645


def _alpaca(rec):
    return {
        "instruction": CFT_INSTRUCTION,
        "input": CFT_INPUT.format(question=rec.question, solution=rec.solution),
        "output": rec.critique,
    }


def _sample(rec) -> Sample:
    return Sample(rec.id, cft_prompt(rec.question, rec.solution), rec.critique, where="x:1")


def _piecewise(tok, text: str) -> list[int]:
    """Tokenizes at the ChatML special-token boundaries, each text piece on its own."""
    ids: list[int] = []
    for i, part in enumerate(text.split("<|im_start|>")):
        if i:
            ids.append(IM_START)
        for j, piece in enumerate(part.split("<|im_end|>")):
            if j:
                ids.append(IM_END)
            if piece:
                ids += tok(piece, add_special_tokens=False)["input_ids"]
    return ids


def test_chatml_renders_recipe_string_token_for_token(qwen, critiques):
    enc = Encoder(qwen, "chatml")
    for rec in critiques:
        reference = RECIPE_CFT.format(**_alpaca(rec))
        prompt, target = enc.render(_sample(rec))
        assert prompt + target == reference
        got = enc.encode(_sample(rec))
        assert got.input_ids.tolist() == _piecewise(qwen, reference)
        assert got.input_ids.tolist() == qwen(reference, add_special_tokens=False)["input_ids"]
        assert got.input_ids.dtype == np.int32 and got.loss_mask.dtype == np.int32


def test_chatml_loss_mask_is_exactly_the_critique_and_im_end(qwen, critiques):
    enc = Encoder(qwen, "chatml")
    for rec in critiques:
        got = enc.encode(_sample(rec))
        mask = got.loss_mask
        start = int(np.argmax(mask))
        # Contiguous to the very end, and the last trained token is <|im_end|>.
        assert mask[start:].all() and not mask[:start].any()
        assert got.input_ids[-1] == IM_END and mask[-1] == 1
        assert qwen.decode(got.input_ids[start:]) == rec.critique + "<|im_end|>"
        assert qwen.decode(got.input_ids[:start]).endswith("<|im_start|>assistant\n")
        assert not got.straddles


def test_qwen25_math_template_uses_the_one_shot_system_prompt(qwen, critiques):
    rec = critiques[0]
    got = Encoder(qwen, "qwen25_math").encode(_sample(rec))
    reference = RECIPE_CFT.format(**_alpaca(rec)).replace("You are a helpful assistant.", QWEN25_MATH_SYSTEM)
    assert got.input_ids.tolist() == _piecewise(qwen, reference)
    assert qwen.decode(got.input_ids[got.loss_mask == 1]) == rec.critique + "<|im_end|>"


def test_system_message_of_the_data_replaces_the_templates(qwen):
    sample = Sample("a", "What is 2+2?", "4", system="Be brief.")
    prompt, target = Encoder(qwen, "chatml").render(sample)
    assert prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert target == "4<|im_end|>"


def test_raw_template_adds_bos_when_the_tokenizer_does_and_trains_eos():
    llama = load_tokenizer("llama3")
    got = Encoder(llama, "raw").encode(Sample("a", "Question: 1+1?\nAnswer:", " 2"))
    assert got.input_ids[0] == llama.bos_token_id and got.loss_mask[0] == 0
    assert got.input_ids[-1] == llama.eos_token_id and got.loss_mask[-1] == 1
    assert llama.convert_ids_to_tokens(got.input_ids[got.loss_mask == 1].tolist()) == [
        "Ġ",
        "2",
        "<|end_of_text|>",
    ]


def test_raw_template_without_bos(qwen):
    got = Encoder(qwen, "raw").encode(Sample("a", "1+1=", "2"))
    assert qwen.decode(got.input_ids) == "1+1=2<|im_end|>"
    assert got.loss_mask.tolist() == [0] * (len(got.input_ids) - 2) + [1, 1]


def test_tokenizer_chat_template_matches_apply_chat_template(qwen):
    sample = Sample("a", "What is 2+2?", "It is 4.", system="You are a helpful assistant.")
    got = Encoder(qwen, "tokenizer").encode(sample)
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "It is 4."},
    ]
    full = qwen.apply_chat_template(messages, tokenize=False)
    assert got.input_ids.tolist() == qwen(full, add_special_tokens=False)["input_ids"]
    # Qwen's template closes the turn with "<|im_end|>\n": all of it trains.
    assert qwen.decode(got.input_ids[got.loss_mask == 1]) == "It is 4.<|im_end|>\n"


def test_token_merged_across_the_boundary_trains_and_is_flagged(qwen):
    # "assistant\n" + "\n\nHi": the newlines merge into one token spanning prompt and target.
    got = Encoder(qwen, "chatml").encode(Sample("a", "q", "\n\nHi"))
    prompt, target = Encoder(qwen, "chatml").render(Sample("a", "q", "\n\nHi"))
    assert got.input_ids.tolist() == qwen(prompt + target, add_special_tokens=False)["input_ids"]
    assert got.straddles
    assert qwen.decode(got.input_ids[got.loss_mask == 1]).endswith("\n\nHi<|im_end|>")


def test_chatml_refuses_a_tokenizer_without_chatml_tokens():
    with pytest.raises(ValueError, match="im_start"):
        Encoder(load_tokenizer("deepseek_llm"), "chatml")
