"""Templates render the papers' exact strings and token ids; the loss mask is exactly the target."""

from __future__ import annotations

import numpy as np
import pytest

from cft_jax.assets.tokenizers import _without_llama_cpp_padding, load_tokenizer, with_im_end_eos
from cft_jax.config import DataConfig
from cft_jax.data.pipeline import check_vocab_fits, training_tokenizer, write_export_tokenizer
from cft_jax.data.records import CFT_INPUT, CFT_INSTRUCTION, Sample, cft_prompt
from cft_jax.data.templates import Encoder

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


def test_chatml_refuses_a_tokenizer_without_chatml_tokens_and_names_the_option():
    with pytest.raises(ValueError, match="im_start") as error:
        Encoder(load_tokenizer("deepseek_llm"), "chatml")
    assert "data.chatml_add_im_end=True" in str(error.value)


# DeepSeek-LLM's HF tokenizer: 100,000 BPE tokens + 15 added (bos 100000, eos 100001, ...); the shipped
# one (rebuilt from llama.cpp) pads it to 102,400 with "[PAD<id>]" placeholders.
DEEPSEEK_HF_SIZE = 100015
# "<|im_start|>" as DeepSeek's BPE splits it: "<", "|", "im", "_", "start", "|>".
DEEPSEEK_IM_START = [27, 91, 309, 62, 4789, 66325]


def test_chatml_add_im_end_renders_a_cft_example_as_llama_factory_did(critiques):
    """LLaMA-Factory's `qwen` template on DeepSeek: <|im_end|> one new token, <|im_start|> plain text."""
    deepseek = load_tokenizer("deepseek_llm")
    assert len(deepseek) == 102400 and deepseek.convert_ids_to_tokens(DEEPSEEK_HF_SIZE) == "[PAD100015]"
    enc = Encoder(deepseek, "chatml", add_im_end=True)
    tok = enc.tokenizer
    im_end = DEEPSEEK_HF_SIZE  # the id add_special_tokens gives it on the HF tokenizer (its length)
    assert tok is not deepseek and len(tok) == DEEPSEEK_HF_SIZE + 1
    assert (tok.eos_token, tok.eos_token_id, tok.pad_token) == ("<|im_end|>", im_end, "<|im_end|>")
    # The shared cached tokenizer is untouched.
    assert len(deepseek) == 102400 and deepseek.eos_token_id == 100001

    rec = critiques[0]
    got = enc.encode(_sample(rec))
    ids = got.input_ids.tolist()
    reference = RECIPE_CFT.format(**_alpaca(rec))

    def text(piece: str) -> list[int]:
        return deepseek(piece, add_special_tokens=False)["input_ids"]

    # The paper's string, each <|im_end|> one token (the new id), the text between as DeepSeek's BPE
    # splits it, every <|im_start|> among it as plain-text pieces.
    expected: list[int] = []
    for i, piece in enumerate(reference.split("<|im_end|>")):
        expected += ([im_end] if i else []) + text(piece)
    assert ids == expected
    assert ids[: len(DEEPSEEK_IM_START)] == DEEPSEEK_IM_START
    assert ids.count(im_end) == 3 and ids[-1] == im_end
    assert sum(ids[i : i + 6] == DEEPSEEK_IM_START for i in range(len(ids))) == 3
    assert max(ids) == im_end and ids.count(100001) == 0 and 100000 not in ids  # no bos, no old eos

    # The loss mask: 0 on the prompt, 1 on exactly the critique's tokens and the final <|im_end|>.
    mask = got.loss_mask
    start = int(np.argmax(mask))
    assert mask[start:].all() and not mask[:start].any() and got.prompt_len == start
    assert ids[start:] == text(rec.critique) + [im_end]
    assert tok.decode(ids[:start]).endswith("<|im_start|>assistant\n")
    assert tok.decode(ids[start:]) == rec.critique + "<|im_end|>"


def test_chatml_add_im_end_keeps_every_other_token_id():
    deepseek = load_tokenizer("deepseek_llm")
    tok = with_im_end_eos(deepseek)
    text = "Solve $x^2=4$. 解答: x = ±2 <｜end▁of▁sentence｜> [PAD100015] ø <|im_start|>"
    assert tok(text)["input_ids"] == deepseek(text)["input_ids"]  # bos added as before, same ids
    assert tok.convert_ids_to_tokens(list(range(99998, 100015))) == deepseek.convert_ids_to_tokens(
        list(range(99998, 100015))
    )


def test_chatml_add_im_end_is_a_no_op_on_ids_where_the_tokens_exist(qwen, critiques):
    plain = Encoder(qwen, "chatml").encode(_sample(critiques[0]))
    added = Encoder(qwen, "chatml", add_im_end=True).encode(_sample(critiques[0]))
    assert added.input_ids.tolist() == plain.input_ids.tolist()
    assert added.loss_mask.tolist() == plain.loss_mask.tolist()


def test_chatml_add_im_end_refuses_non_chatml_templates(qwen):
    with pytest.raises(ValueError, match="chatml_add_im_end applies to the ChatML templates"):
        Encoder(qwen, "raw", add_im_end=True)


def test_the_added_token_must_fit_the_model_embedding():
    cfg = DataConfig(tokenizer="deepseek_llm", chatml_add_im_end=True)
    assert check_vocab_fits(cfg, 102400) == []
    [error] = check_vocab_fits(cfg, DEEPSEEK_HF_SIZE)
    assert "data.chatml_add_im_end=True" in error and f"vocab_size={DEEPSEEK_HF_SIZE}" in error


def test_every_token_id_and_the_pad_id_must_fit_the_model_embedding():
    cfg = DataConfig(tokenizer="deepseek_llm")  # 102,400 ids, [PAD] placeholders included
    assert check_vocab_fits(cfg, 102400) == []
    [error] = check_vocab_fits(cfg, DEEPSEEK_HF_SIZE)
    assert (
        f"data.tokenizer='deepseek_llm': 102400 tokens (ids 0..102399), but the model's embedding has "
        f"vocab_size={DEEPSEEK_HF_SIZE} rows" in error
    )
    [error] = check_vocab_fits(DataConfig(tokenizer="deepseek_llm", pad_id=102400), 102400)
    assert error.startswith("data.pad_id=102400: no row in the model's embedding")


def test_export_tokenizer_carries_im_end_as_eos(tmp_path):
    cfg = DataConfig(tokenizer="deepseek_llm", chatml_add_im_end=True)
    assert write_export_tokenizer(DataConfig(tokenizer="deepseek_llm"), None, tmp_path / "no") is None
    # A stand-in for the checkpoint's own HF tokenizer: no placeholders, 100,015 tokens, no <|im_end|>.
    checkpoint = tmp_path / "checkpoint"
    _without_llama_cpp_padding(load_tokenizer("deepseek_llm")).save_pretrained(checkpoint)
    assert len(load_tokenizer(str(checkpoint))) == DEEPSEEK_HF_SIZE
    (checkpoint / "generation_config.json").write_text('{"eos_token_id": 100001}')
    out = write_export_tokenizer(cfg, checkpoint, tmp_path / "export")
    exported = load_tokenizer(str(out))
    assert (exported.eos_token, exported.eos_token_id, len(exported)) == (
        "<|im_end|>",
        DEEPSEEK_HF_SIZE,
        100016,
    )
    assert (out / "generation_config.json").read_text() == '{"eos_token_id": 100001}'
    sample = Sample("a", "What is 2+2?", "4")
    trained = Encoder(training_tokenizer(cfg), "chatml", add_im_end=True).encode(sample)
    assert Encoder(exported, "chatml", add_im_end=True).encode(sample).input_ids.tolist() == (
        trained.input_ids.tolist()
    )
    # From the data's own (shipped) tokenizer when the source has none.
    out = write_export_tokenizer(cfg, tmp_path / "empty", tmp_path / "export2")
    assert load_tokenizer(str(out)).eos_token_id == DEEPSEEK_HF_SIZE
