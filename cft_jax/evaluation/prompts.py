"""How a benchmark question becomes the model's input.

| name              | input                                                                 |
|-------------------|-----------------------------------------------------------------------|
| `qwen25-math-cot` | ChatML with the "reason step by step ... \\boxed{}" system prompt      |
| `deepseek-math`   | `User: ... Assistant:` as DeepSeek-Math was evaluated                 |
| `chat-template`   | the question as one user turn through the model's own chat template   |
| anything with `{question}` | a custom template string                                     |

The first two strings are the evaluation protocol of the CFT papers (recipe section 5).
"""

from __future__ import annotations

from typing import Any

from cft_jax.errors import InputError

PROMPTS: dict[str, str] = {
    "qwen25-math-cot": (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}."
        "<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    ),
    "deepseek-math": (
        "User: {question}\nPlease reason step by step, and put your final answer within \\boxed{}."
        "\n\nAssistant:"
    ),
}
CHAT_TEMPLATE = "chat-template"

# Generation stops at the first of these (recipe section 5).
STOP_STRINGS = ("</s>", "<|im_end|>", "<|endoftext|>", "(END)", "\\[END\\]", "**END**", "[END]")


def check_prompt(prompt: str) -> None:
    """Refuses a prompt that is neither a known name nor a template with `{question}`."""
    if prompt in PROMPTS or prompt == CHAT_TEMPLATE or "{question}" in prompt:
        return
    raise InputError(
        f"unknown prompt {prompt!r}: use one of {[*PROMPTS, CHAT_TEMPLATE]} "
        "or a template string containing {question}"
    )


def render(prompt: str, question: str, tokenizer: Any | None = None) -> str:
    """The model input for one question; `chat-template` needs the model's tokenizer."""
    check_prompt(prompt)
    if prompt == CHAT_TEMPLATE:
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise InputError("prompt 'chat-template' needs a tokenizer with a chat_template")
        messages = [{"role": "user", "content": question}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    template = PROMPTS.get(prompt, prompt)
    # str.replace, not str.format: templates hold LaTeX braces such as \boxed{}.
    return template.replace("{question}", question)


def cut_at_stop(text: str) -> str:
    """The text up to (not including) the first stop string."""
    cut = min((i for s in STOP_STRINGS if (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]
