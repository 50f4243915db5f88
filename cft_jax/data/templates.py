"""Rendering a Sample with a chat template into `(input_ids, loss_mask)`, token for token.

Named templates reproduce the papers exactly (recipe.md section 4):

- `chatml`: `<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n{prompt}`
  `<|im_end|>\\n<|im_start|>assistant\\n{target}<|im_end|>`, the template of every CFT run (LLaMA-Factory
  `qwen`), for every base model.
- `qwen25_math`: the same shape with the Qwen2.5-Math system prompt of the one-shot runs.
- `raw`: no template: `[bos] {prompt}{target}{eos}` (bos only if the tokenizer adds one).
- `tokenizer`: the tokenizer's own chat template (`apply_chat_template`).

ChatML on a tokenizer without ChatML tokens (DeepSeek, Llama) is refused unless `add_im_end=True`
(`DataConfig.chatml_add_im_end`), which makes the tokenizer what LLaMA-Factory made it for the CFT
paper's non-Qwen models: `<|im_end|>` a new special eos token, `<|im_start|>` plain text
(`cft_jax.assets.tokenizers.with_im_end_eos`, where the module docstring has the details).

The loss mask is 1 on every target token *including* the closing end-of-turn / end-of-text token
and 0 elsewhere. The full rendered string is tokenized once, so the ids are exactly what the
tokenizer gives for the whole conversation (special tokens split out as the tokenizer splits
them); the prompt is tokenized alone, and the tokens after the longest common prefix of the two
train. A token that BPE merged across the prompt/target boundary therefore trains (it must be
predicted to produce the target), and `Encoded.straddles` flags it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from cft_jax.assets.tokenizers import IM_END, IM_START, with_im_end_eos
from cft_jax.data.records import Sample
from cft_jax.errors import InputError

CHATML_SYSTEM = "You are a helpful assistant."
QWEN25_MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclasses.dataclass(frozen=True)
class Template:
    name: str
    kind: str  # "chatml" | "raw" | "tokenizer"
    system: str | None = None


TEMPLATES: dict[str, Template] = {
    "chatml": Template("chatml", "chatml", CHATML_SYSTEM),
    "qwen25_math": Template("qwen25_math", "chatml", QWEN25_MATH_SYSTEM),
    "raw": Template("raw", "raw"),
    "tokenizer": Template("tokenizer", "tokenizer"),
}


@dataclasses.dataclass(frozen=True)
class Encoded:
    """One tokenized example.

    input_ids: [n] int32; loss_mask: [n] int32 (0 on the prompt, 1 on the target);
    prompt_len: number of leading mask-0 tokens.
    """

    id: str
    input_ids: np.ndarray
    loss_mask: np.ndarray
    prompt_len: int
    where: str = ""
    verdict: str | None = None
    straddles: bool = False


class Encoder:
    """Renders and tokenizes Samples with one template and one tokenizer."""

    def __init__(
        self,
        tokenizer: Any,
        template: str = "chatml",
        system_prompt: str | None = None,
        *,
        add_im_end: bool = False,
    ):
        """add_im_end: with a ChatML template, make the tokenizer LLaMA-Factory's (`with_im_end_eos`):
        `<|im_end|>` one special token (added if missing), `<|im_start|>` as the tokenizer splits it.
        `self.tokenizer` is then that copy: decode the ids with it."""
        if template not in TEMPLATES:
            raise InputError(f"unknown template {template!r}; choose one of {sorted(TEMPLATES)}")
        self.tokenizer = tokenizer
        self.template = TEMPLATES[template]
        self.system_prompt = system_prompt if system_prompt is not None else self.template.system
        self._bos: list[int] = []
        if self.template.kind == "raw":
            if tokenizer.eos_token is None:
                raise InputError("template 'raw' needs a tokenizer with an eos token to end the target")
            self._bos = list(tokenizer("", add_special_tokens=True)["input_ids"])
        if add_im_end and self.template.kind != "chatml":
            chatml = sorted(name for name, t in TEMPLATES.items() if t.kind == "chatml")
            raise InputError(
                f"data.chatml_add_im_end applies to the ChatML templates {chatml}, not {template!r}; "
                "turn it off"
            )
        if add_im_end:
            self.tokenizer = with_im_end_eos(tokenizer)
        elif self.template.kind == "chatml":
            missing = [t for t in (IM_START, IM_END) if not _is_single_token(tokenizer, t)]
            if missing:
                # Without them the markers would be tokenized as plain text, silently.
                raise InputError(
                    f"template {template!r} needs the tokens {missing}, which this tokenizer lacks; "
                    "set data.chatml_add_im_end=True (CLI --chatml-add-im-end) to do what LLaMA-Factory's "
                    "'qwen' template did in the CFT paper (<|im_end|> added as a new special eos token, "
                    "<|im_start|> tokenized as plain text), or use template 'tokenizer'"
                )
        if self.template.kind == "tokenizer" and not getattr(tokenizer, "chat_template", None):
            raise InputError(
                "template 'tokenizer': this tokenizer has no chat template; use template 'chatml' or 'raw', "
                "or a tokenizer that has one (the model's own: data.tokenizer = its HF checkpoint directory)"
            )

    def render(self, sample: Sample) -> tuple[str, str]:
        """(prompt text, target text): their concatenation is the full rendered example."""
        system = sample.system if sample.system is not None else self.system_prompt
        kind = self.template.kind
        if kind == "chatml":
            head = f"<|im_start|>system\n{system}<|im_end|>\n" if system is not None else ""
            prompt = f"{head}<|im_start|>user\n{sample.prompt}<|im_end|>\n<|im_start|>assistant\n"
            return prompt, sample.target + "<|im_end|>"
        if kind == "raw":
            return sample.prompt, sample.target + self.tokenizer.eos_token
        messages = [{"role": "user", "content": sample.prompt}]
        if system is not None:
            messages.insert(0, {"role": "system", "content": system})
        prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        full = self.tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": sample.target}], tokenize=False
        )
        if not full.startswith(prompt):
            raise InputError(
                f"{sample.where}: the tokenizer's chat template does not render the prompt as a prefix of "
                "the conversation, so the trained span cannot be located; use template 'chatml'"
            )
        return prompt, full[len(prompt) :]

    def encode(self, sample: Sample) -> Encoded:
        return self.encode_batch([sample])[0]

    def encode_batch(self, samples: list[Sample]) -> list[Encoded]:
        """Tokenizes many Samples in one tokenizer call (the Rust tokenizer parallelises it)."""
        rendered = [self.render(s) for s in samples]
        full = self.tokenizer([p + t for p, t in rendered], add_special_tokens=False)["input_ids"]
        prompts = self.tokenizer([p for p, _ in rendered], add_special_tokens=False)["input_ids"]
        out = []
        for sample, ids, prompt_ids in zip(samples, full, prompts, strict=True):
            common = _common_prefix(ids, prompt_ids)
            straddles = common < len(prompt_ids)
            mask = [0] * common + [1] * (len(ids) - common)
            ids = self._bos + list(ids)
            mask = [0] * len(self._bos) + mask
            prompt_len = mask.index(1) if 1 in mask else len(mask)
            out.append(
                Encoded(
                    sample.id,
                    np.asarray(ids, np.int32),
                    np.asarray(mask, np.int32),
                    prompt_len,
                    sample.where,
                    sample.verdict,
                    straddles,
                )
            )
        return out


def _is_single_token(tokenizer: Any, text: str) -> bool:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) == 1


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def show_trained_span(tokenizer: Any, input_ids: np.ndarray, loss_mask: np.ndarray) -> str:
    """The decoded example with the trained span wrapped in `[[TRAIN>>` ... `<<TRAIN]]`."""
    parts, current, state = [], [], 0
    for tok, m in zip(input_ids.tolist(), loss_mask.tolist(), strict=True):
        if m != state and current:
            parts.append((state, tokenizer.decode(current)))
            current = []
        state = m
        current.append(tok)
    if current:
        parts.append((state, tokenizer.decode(current)))
    return "".join(f"[[TRAIN>>{text}<<TRAIN]]" if m else text for m, text in parts)
