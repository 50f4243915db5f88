"""The two before/after measurements of the demo, run the same way on the base and the trained model.

- Held-out critique loss: the mean masked token NLL of the test critiques, rendered, tokenized and
  cut exactly as training renders them (the training config's `DataConfig`, with the test file as
  the eval split) and computed by the trainer's own `eval_step` on the JAX model.
- Verdict accuracy: the model critiques labelled test solutions (greedy, transformers backend,
  batched with a KV cache, which on CPU is far faster than the cache-less JAX greedy loop); the
  text after its last "Conclusion" is parsed by `cft_jax.schema.parse_verdict` and compared with the
  label. No conclusion within `max_new_tokens` counts as wrong and is also counted on its own.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path

import jax

from cft_jax.config import DataConfig
from cft_jax.data.pipeline import make_eval_iterator
from cft_jax.data.records import Sample, cft_prompt
from cft_jax.data.templates import Encoder
from cft_jax.models.hf import load_hf
from cft_jax.schema import CritiqueRecord, parse_verdict
from cft_jax.training.step import eval_step, model_parts


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


def heldout_loss(
    model_dir: Path, data: DataConfig, test_path: Path, *, batch_size: int, vocab_chunk: int
) -> tuple[float, int, int]:
    """(mean target-token NLL, examples, target tokens) of `test_path` under the model in `model_dir`."""
    cfg = dataclasses.replace(data, eval_paths=(str(test_path),), shuffle=False)
    batches = make_eval_iterator(cfg, per_host_batch=batch_size)
    model, _ = load_hf(model_dir, remat="none")
    graphdef, params, rest = model_parts(model)
    step = jax.jit(functools.partial(eval_step, graphdef=graphdef, rest=rest, vocab_chunk=vocab_chunk))
    loss_sum, tokens = 0.0, 0.0
    for batch in batches:
        out = step(params, batch)
        loss_sum += float(out["loss_sum"])
        tokens += float(out["target_tokens"])
    return loss_sum / max(tokens, 1.0), batches.report.examples, int(tokens)


def verdict_set(records: list[CritiqueRecord], count: int) -> list[CritiqueRecord]:
    """Up to `count` distinct labelled solutions, alternating correct / wrong while both last.

    Balanced on purpose: the test split holds about twice as many wrong solutions as correct ones,
    and a model that always says "wrong" should not look good.
    """
    seen, right, wrong = set(), [], []
    for r in records:
        key = (r.question, r.solution.strip())
        if r.is_correct is None or key in seen:
            continue
        seen.add(key)
        (right if r.is_correct else wrong).append(r)
    chosen = []
    while len(chosen) < count and (right or wrong):
        for pool in (right, wrong):
            if pool and len(chosen) < count:
                chosen.append(pool.pop(0))
    return chosen


def critique_prompts(tokenizer, records: list[CritiqueRecord], template: str) -> list[str]:
    """The CFT user turn for each solution, rendered with the training template up to the assistant turn."""
    encoder = Encoder(tokenizer, template)
    return [
        encoder.render(Sample(id=r.id, prompt=cft_prompt(r.question, r.solution), target=""))[0]
        for r in records
    ]


def verdicts(
    model_dir: Path,
    records: list[CritiqueRecord],
    *,
    template: str,
    max_new_tokens: int,
    batch_size: int,
    out_path: Path,
) -> tuple[list[str | None], int]:
    """(parsed verdict per record, generated tokens); the critiques are written to `out_path` (JSONL)."""
    from cft_jax.evaluation.backends import Sampling, TransformersBackend

    backend = TransformersBackend(str(model_dir), batch_size=batch_size)
    prompts = critique_prompts(backend.tokenizer, records, template)
    texts = [c[0] for c in backend.generate(prompts, Sampling(max_new_tokens=max_new_tokens))]
    parsed = [parse_verdict(t) for t in texts]
    with out_path.open("w", encoding="utf-8") as f:
        for record, text, verdict in zip(records, texts, parsed, strict=True):
            row = {"id": record.id, "is_correct": record.is_correct, "verdict": verdict, "critique": text}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return parsed, backend.generated_tokens


def measure(
    model_dir: Path,
    data: DataConfig,
    *,
    loss_path: Path,
    verdict_records: list[CritiqueRecord],
    max_new_tokens: int,
    batch_size: int,
    vocab_chunk: int,
    out_dir: Path,
) -> Measurement:
    """Both measurements of the model in `model_dir`; its critiques go to `out_dir/critiques.jsonl`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    loss, examples, tokens = heldout_loss(
        model_dir, data, loss_path, batch_size=batch_size, vocab_chunk=vocab_chunk
    )
    loss_seconds = time.perf_counter() - start
    start = time.perf_counter()
    parsed, generated = verdicts(
        model_dir,
        verdict_records,
        template=data.template,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
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
