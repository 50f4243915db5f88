"""Prompt templates for teachers and generators; the papers' teacher prompt is the default.

Placeholders are literal `{question}` and `{solution}` substrings, replaced verbatim: math prompts
are full of braces (`\\boxed{}`), so `str.format` would be a trap. A template's sha256 goes into
every record's provenance and into critique ids, so changing the prompt never silently reuses
critiques written under the old one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from cft_jax.critique.client import ConfigError

# recipe.md section 3: the CFT teacher prompt (gpt-4o-2024-11-20, temperature 0.3, top_p 0.95).
CFT_TEACHER_SYSTEM = (
    "You are a science expert. A student is trying to solve a question, please explain briefly "
    "whether his solution is correct or not. Finally, conclude your judgement with "
    "'Conclusion: right/wrong [END]'."
)
CFT_TEACHER_USER = "Question: {question}\n\nSolution: {solution}"

# The Qwen2.5-Math chain-of-thought instruction, for sampling candidate solutions.
SOLVER_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
SOLVER_USER = "{question}"


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
    """A system message (optional) and a user message with `{question}` / `{solution}` slots."""

    user: str
    system: str | None = None

    @property
    def sha256(self) -> str:
        payload = json.dumps({"system": self.system, "user": self.user}, sort_keys=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def render(self, question: str, solution: str | None = None) -> list[dict[str, str]]:
        user = self.user.replace("{question}", question)
        if solution is not None:
            user = user.replace("{solution}", solution)
        messages = [{"role": "system", "content": self.system}] if self.system else []
        return messages + [{"role": "user", "content": user}]

    @classmethod
    def load(cls, path: str | Path, *, needs: tuple[str, ...]) -> PromptTemplate:
        """A template from a JSON file `{"system": ..., "user": ...}`, checked for its slots."""
        try:
            obj = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: cannot read prompt template ({e})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("user"), str):
            raise ConfigError(f'{path}: a prompt template is a JSON object {{"system": str, "user": str}}')
        template = cls(user=obj["user"], system=obj.get("system"))
        template.check(needs, where=str(path))
        return template

    def check(self, needs: tuple[str, ...], where: str) -> None:
        missing = [slot for slot in needs if "{" + slot + "}" not in self.user]
        if missing:
            raise ConfigError(f"{where}: the user template lacks {missing}; add e.g. '{{{missing[0]}}}'")


TEACHER = PromptTemplate(user=CFT_TEACHER_USER, system=CFT_TEACHER_SYSTEM)
SOLVER = PromptTemplate(user=SOLVER_USER, system=SOLVER_SYSTEM)
