"""Rendering a Sample with a chat template into `(input_ids, loss_mask)`, token for token.

Named templates reproduce the papers exactly (recipe.md section 4):

- `chatml`: `<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n{prompt}`
  `<|im_end|>\\n<|im_start|>assistant\\n{target}<|im_end|>`, the template of every CFT run (LLaMA-Factory
  `qwen`), for every base model.
- `qwen25_math`: the same shape with the Qwen2.5-Math system prompt of the one-shot runs.
- `llama3`: Llama 3's chat format (LLaMA-Factory `llama3`, no default system):
  `<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{prompt}<|eot_id|>`
  `<|start_header_id|>assistant<|end_header_id|>\n\n{target}<|eot_id|>`.
- `raw`: no template: `[bos] {prompt}{target}{eos}` (bos only if the tokenizer adds one).
- `tokenizer`: the tokenizer's own chat template (`apply_chat_template`).

ChatML on a tokenizer without ChatML tokens (DeepSeek, Llama) is refused unless `add_im_end=True`
(`DataConfig.chatml_add_im_end`), which makes the tokenizer what LLaMA-Factory made it for the CFT
paper's non-Qwen models: `<|im_end|>` a new special eos token, `<|im_start|>` plain text
(`cft_jax.assets.tokenizers.with_im_end_eos`, where the module docstring has the details).

A multi-turn conversation renders turn after turn in the same format (ChatML separates an
assistant turn from the next user turn with "\n", as LLaMA-Factory does); `train_on` says which
assistant turns train: `all_assistant` (LLaMA-Factory's default) or `last_assistant` (its
`mask_history`).

The loss mask is 1 on every trained assistant token *including* the turn's closing end-of-turn /
end-of-text token and 0 elsewhere. The full rendered string is tokenized once, so the ids are
exactly what the tokenizer gives for the whole conversation (special tokens split out as the
tokenizer splits them); each prefix of it that ends at a turn boundary is tokenized alone too, and
a boundary falls after the longest common prefix of the two. A token that BPE merged across a
boundary therefore belongs to the span after it (a token merged across the start of an assistant
turn trains: it must be predicted to produce the turn), and `Encoded.straddles` flags it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from cft_jax.assets.tokenizers import IM_END, IM_START, with_im_end_eos
from cft_jax.data.records import Sample
from cft_jax.errors import InputError

TRAIN_ON = ("all_assistant", "last_assistant")
CHATML_SYSTEM = "You are a helpful assistant."
# The special tokens the llama3 template is written in.
LLAMA3_MARKERS = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
QWEN25_MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclasses.dataclass(frozen=True)
class Template:
    name: str
    kind: str  # "chatml" | "raw" | "tokenizer"
    system: str | None = None


TEMPLATES: dict[str, Template] = {
    "chatml": Template("chatml", "chatml", CHATML_SYSTEM),
    "qwen25_math": Template("qwen25_math", "chatml", QWEN25_MATH_SYSTEM),
    "llama3": Template("llama3", "llama3"),
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
        train_on: str = "all_assistant",
    ):
        """add_im_end: with a ChatML template, make the tokenizer LLaMA-Factory's (`with_im_end_eos`):
        `<|im_end|>` one special token (added if missing), `<|im_start|>` as the tokenizer splits it.
        `self.tokenizer` is then that copy: decode the ids with it.
        train_on: which assistant turns of a multi-turn conversation train (`TRAIN_ON`)."""
        if template not in TEMPLATES:
            raise InputError(f"unknown template {template!r}; choose one of {sorted(TEMPLATES)}")
        if train_on not in TRAIN_ON:
            raise InputError(f"data.train_on={train_on!r}: choose one of {list(TRAIN_ON)}")
        self.train_on = train_on
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
        elif self.template.kind == "llama3":
            missing = [t for t in LLAMA3_MARKERS if not _is_single_token(tokenizer, t)]
            if missing:
                raise InputError(
                    f"template 'llama3' needs the tokens {missing}, which this tokenizer lacks; use a "
                    "Llama 3 tokenizer (data.tokenizer='llama3' or the model's own), or template 'tokenizer'"
                )
        if self.template.kind == "tokenizer" and not getattr(tokenizer, "chat_template", None):
            raise InputError(
                "template 'tokenizer': this tokenizer has no chat template; use template 'chatml' or 'raw', "
                "or a tokenizer that has one (the model's own: data.tokenizer = its HF checkpoint directory)"
            )

    def render(self, sample: Sample) -> tuple[str, str]:
        """(everything before the last assistant turn, that turn): their concatenation is the full
        rendered example."""
        parts = self.segments(sample)
        return "".join(text for text, _ in parts[:-1]), parts[-1][0]

    def segments(self, sample: Sample) -> list[tuple[str, bool]]:
        """The rendered conversation as (text, trains) pieces, joining to the full string: prompt
        pieces and assistant turns alternate, the last assistant turn last and always trained."""
        system = sample.system if sample.system is not None else self.system_prompt
        turns = [*sample.history, (sample.prompt, sample.target)]
        kind = self.template.kind
        if kind == "raw":
            if sample.history:
                raise InputError(
                    f"{sample.where}: template 'raw' has no turn markers to render a multi-turn "
                    "conversation with; use template 'chatml', 'llama3' or 'tokenizer'"
                )
            return [(sample.prompt, False), (sample.target + self.tokenizer.eos_token, True)]
        if kind == "tokenizer":
            texts = self._chat_template_texts(sample, system, turns)
        else:
            texts = []
            for index, (user, assistant) in enumerate(turns):
                head = _head(kind, system) if index == 0 else ("\n" if kind == "chatml" else "")
                texts += [head + _user(kind, user), _assistant(kind, assistant)]
        last = len(texts) - 1
        return [
            (text, i % 2 == 1 and (self.train_on == "all_assistant" or i == last))
            for i, text in enumerate(texts)
        ]

    def _chat_template_texts(self, sample: Sample, system: str | None, turns: list) -> list[str]:
        """The tokenizer's own rendering, cut where each assistant turn starts and ends."""
        messages = [] if system is None else [{"role": "system", "content": system}]
        cuts = []
        for user, assistant in turns:
            messages.append({"role": "user", "content": user})
            cuts.append(self._apply(messages, generation_prompt=True))
            messages.append({"role": "assistant", "content": assistant})
            cuts.append(self._apply(messages, generation_prompt=False))
        full = cuts[-1]
        ends = [0]
        for cut in cuts:
            if not full.startswith(cut) or len(cut) < ends[-1]:
                raise InputError(
                    f"{sample.where}: the tokenizer's chat template does not render each turn as a prefix "
                    "of the conversation, so the trained spans cannot be located; use template 'chatml'"
                )
            ends.append(len(cut))
        return [full[a:b] for a, b in zip(ends, ends[1:], strict=False)]

    def _apply(self, messages: list[dict[str, str]], *, generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )

    def encode(self, sample: Sample) -> Encoded:
        return self.encode_batch([sample])[0]

    def encode_batch(self, samples: list[Sample]) -> list[Encoded]:
        """Tokenizes many Samples in as few tokenizer calls as possible (the Rust tokenizer
        parallelises them): each full conversation, and its prefixes ending at turn boundaries."""
        rendered = [self.segments(s) for s in samples]
        full = self._ids(["".join(text for text, _ in parts) for parts in rendered])
        prefixes = [
            "".join(text for text, _ in parts[: k + 1]) for parts in rendered for k in range(len(parts) - 1)
        ]
        prefix_ids = iter(self._ids(prefixes))
        out = []
        for sample, parts, ids in zip(samples, rendered, full, strict=True):
            mask, start, straddles = [], 0, False
            for k, (_, trains) in enumerate(parts):
                if k < len(parts) - 1:
                    boundary = next(prefix_ids)
                    end = max(_common_prefix(ids, boundary), start)
                    straddles |= end < len(boundary)
                else:
                    end = len(ids)
                mask += [int(trains)] * (end - start)
                start = end
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

    def _ids(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


def _head(kind: str, system: str | None) -> str:
    """What opens a conversation: the system turn (if any) and, for Llama 3, bos."""
    if kind == "chatml":
        return f"<|im_start|>system\n{system}<|im_end|>\n" if system is not None else ""
    if system is None:
        return "<|begin_of_text|>"
    return f"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>"


def _user(kind: str, text: str) -> str:
    """A user turn and the header of the assistant turn answering it (masked: the model reads it)."""
    if kind == "chatml":
        return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
    return (
        f"<|start_header_id|>user<|end_header_id|>\n\n{text}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def _assistant(kind: str, text: str) -> str:
    """An assistant turn with its end token (trained: the model must learn to stop)."""
    return text + ("<|im_end|>" if kind == "chatml" else "<|eot_id|>")


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
