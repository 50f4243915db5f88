"""What to do with an example longer than `seq_len`: truncate proportionally, drop, or fail.

- `truncate` (the CFT paper, LLaMA-Factory): keep the head of the prompt and the head of the
  target, sharing `seq_len` between them: a short side keeps its full length and the other side
  gets the rest; when both are long, each gets a share proportional to its length. A truncated
  target loses its end-of-turn token, exactly as in LLaMA-Factory.
- `drop` (ms-swift, the one-shot runs): the example is left out and counted.
- `fail`: an error naming the record; with `skip_bad` it goes to the rejects file instead.
"""

from __future__ import annotations

import dataclasses

import numpy as np

LENGTH_POLICIES = ("truncate", "drop", "fail")


@dataclasses.dataclass
class LengthReport:
    total: int = 0
    truncated: int = 0
    dropped: int = 0
    rejected: int = 0
    tokens_before: int = 0
    tokens_after: int = 0


def proportional_lengths(prompt_len: int, target_len: int, seq_len: int) -> tuple[int, int]:
    """(kept prompt tokens, kept target tokens) for an example of those lengths in `seq_len`."""
    if prompt_len + target_len <= seq_len:
        return prompt_len, target_len
    if 2 * target_len < seq_len:
        target_budget = target_len  # the target is short: only the prompt is cut
    elif 2 * prompt_len < seq_len:
        target_budget = seq_len - prompt_len  # the prompt is short: only the target is cut
    else:
        target_budget = int(seq_len * target_len / (prompt_len + target_len))
    kept_target = min(target_budget, target_len)
    kept_prompt = min(max(seq_len - kept_target, 0), prompt_len)
    return kept_prompt, kept_target


def fit(
    input_ids: np.ndarray, loss_mask: np.ndarray, prompt_len: int, seq_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """Proportionally truncated (input_ids, loss_mask), both [<= seq_len] int32."""
    n = len(input_ids)
    keep_p, keep_t = proportional_lengths(prompt_len, n - prompt_len, seq_len)
    idx = np.concatenate([np.arange(keep_p), prompt_len + np.arange(keep_t)])
    return input_ids[idx], loss_mask[idx]
