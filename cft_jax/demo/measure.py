"""The two before/after measurements of the demo, run the same way on the base and the trained model.

- Held-out critique loss: the mean masked token NLL of the test critiques, rendered, tokenized and
  cut exactly as training renders them (the training config's `DataConfig`, with the test file as
  the eval split) and computed by the trainer's own `eval_step` on the JAX model.
- Verdict accuracy: the model critiques labelled held-out solutions (`splits.verdict_solutions`),
  greedy, with the KV-cache sampler (`cft_jax.sampling`) on the same loaded JAX model, all of them in
  one call: every prompt padded to the longest, so the base and the trained model share one compiled
  program. The text after its last "Conclusion" is parsed by `cft_jax.schema.parse_verdict` and
  compared with the label; no conclusion within `max_new_tokens` counts as wrong and is also counted
  on its own. The accuracy comes with its 95% Wilson interval: on 64 balanced verdicts, chance (50%)
  lies inside roughly 38-62%.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from statistics import NormalDist
from typing import Any

import jax

from cft_jax.assets.tokenizers import load_tokenizer
from cft_jax.config import DataConfig
from cft_jax.data.pipeline import make_eval_iterator
from cft_jax.data.records import Sample, cft_prompt
from cft_jax.data.templates import Encoder
from cft_jax.models.config import ModelConfig
from cft_jax.models.hf import load_hf
from cft_jax.models.transformer import Decoder
from cft_jax.sampling import SampleConfig, Sampler
from cft_jax.schema import SolutionRecord, parse_verdict
from cft_jax.training.step import eval_step, model_parts

Z_95 = NormalDist().inv_cdf(0.975)  # the z of a two-sided 95% interval


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% by default): unlike the normal
    approximation it stays inside [0, 1] and is honest at 0/n and n/n, where small demos live."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclasses.dataclass
class Measurement:
    """One model's numbers on the test split."""

    loss: float
    loss_examples: int
    loss_tokens: int
    verdicts: int
    verdict_correct: int
    verdict_missing: int
    verdict_correct_on_right: int  # solutions labelled correct that it called right
    verdict_correct_on_wrong: int  # solutions labelled wrong that it called wrong
    labelled_right: int
    labelled_wrong: int
    generated_tokens: int
    loss_seconds: float
    verdict_seconds: float

    @property
    def accuracy(self) -> float:
        return self.verdict_correct / max(self.verdicts, 1)

    @property
    def accuracy_interval(self) -> tuple[float, float]:
        """The verdict accuracy's 95% Wilson interval."""
        return wilson_interval(self.verdict_correct, self.verdicts)


# One program for the base model and the trained one: the weights are arguments, not constants.
_eval_step = jax.jit(eval_step, static_argnames=("graphdef", "vocab_chunk"))


def heldout_loss(
    model: Decoder, data: DataConfig, test_path: Path, *, batch_size: int, vocab_chunk: int
) -> tuple[float, int, int]:
    """(mean target-token NLL, examples, target tokens) of `test_path` under `model`."""
    cfg = dataclasses.replace(data, eval_paths=(str(test_path),), shuffle=False)
    batches = make_eval_iterator(cfg, per_host_batch=batch_size)
    graphdef, params, rest = model_parts(model)
    loss_sum, tokens = 0.0, 0.0
    for batch in batches:
        out = _eval_step(params, batch, rest, graphdef=graphdef, vocab_chunk=vocab_chunk)
        loss_sum += float(out["loss_sum"])
        tokens += float(out["target_tokens"])
    return loss_sum / max(tokens, 1.0), batches.report.examples, int(tokens)


def critique_prompts(tokenizer, records: list[SolutionRecord], template: str) -> list[str]:
    """The CFT user turn for each solution, rendered with the training template up to the assistant turn."""
    encoder = Encoder(tokenizer, template)
    return [
        encoder.render(Sample(id=r.id, prompt=cft_prompt(r.question, r.solution), target=""))[0]
        for r in records
    ]


def eos_ids(model_config: ModelConfig, tokenizer: Any) -> tuple[int, ...]:
    """The ids that end a critique: the model config's EOS ids and the tokenizer's."""
    eos = model_config.eos_token_id
    ids = [*(eos if isinstance(eos, tuple) else [] if eos is None else [eos]), tokenizer.eos_token_id]
    return tuple(dict.fromkeys(i for i in ids if i is not None))


def verdicts(
    model: Decoder,
    model_config: ModelConfig,
    tokenizer: Any,
    records: list[SolutionRecord],
    *,
    template: str,
    max_new_tokens: int,
    out_path: Path,
) -> tuple[list[str | None], int]:
    """(parsed verdict per record, generated tokens), all records in one sampler call; the critiques
    are written to `out_path` (JSONL)."""
    prompts = critique_prompts(tokenizer, records, template)
    ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    sampler = Sampler(model, batch_size=len(ids), min_bucket=max(map(len, ids)))
    config = SampleConfig(max_new_tokens=max_new_tokens, eos_token_ids=eos_ids(model_config, tokenizer))
    generated = sampler.generate(ids, config)
    texts = [tokenizer.decode(out, skip_special_tokens=True) for out in generated]
    parsed = [parse_verdict(t) for t in texts]
    with out_path.open("w", encoding="utf-8") as f:
        for record, text, verdict in zip(records, texts, parsed, strict=True):
            row = {"id": record.id, "is_correct": record.is_correct, "verdict": verdict, "critique": text}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return parsed, sum(map(len, generated))


def measure(
    model_dir: Path,
    data: DataConfig,
    *,
    loss_path: Path,
    verdict_records: list[SolutionRecord],
    max_new_tokens: int,
    batch_size: int,
    vocab_chunk: int,
    out_dir: Path,
) -> Measurement:
    """Both measurements of the model in `model_dir`, loaded once; its critiques go to
    `out_dir/critiques.jsonl`. `batch_size` is the held-out loss's; the verdicts go in one call."""
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model, model_config = load_hf(model_dir, remat="none")
    loss, examples, tokens = heldout_loss(
        model, data, loss_path, batch_size=batch_size, vocab_chunk=vocab_chunk
    )
    loss_seconds = time.perf_counter() - start
    start = time.perf_counter()
    parsed, generated = verdicts(
        model,
        model_config,
        load_tokenizer(str(model_dir)),
        verdict_records,
        template=data.template,
        max_new_tokens=max_new_tokens,
        out_path=out_dir / "critiques.jsonl",
    )
    expected = ["right" if r.is_correct else "wrong" for r in verdict_records]
    hits = [p == e for p, e in zip(parsed, expected, strict=True)]
    return Measurement(
        loss=loss,
        loss_examples=examples,
        loss_tokens=tokens,
        verdicts=len(parsed),
        verdict_correct=sum(hits),
        verdict_missing=sum(p is None for p in parsed),
        verdict_correct_on_right=sum(h for h, e in zip(hits, expected, strict=True) if e == "right"),
        verdict_correct_on_wrong=sum(h for h, e in zip(hits, expected, strict=True) if e == "wrong"),
        labelled_right=expected.count("right"),
        labelled_wrong=expected.count("wrong"),
        generated_tokens=generated,
        loss_seconds=loss_seconds,
        verdict_seconds=time.perf_counter() - start,
    )
