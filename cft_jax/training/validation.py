"""Validation accuracy inside training: the current weights answer a benchmark, graded while training goes on.

Every `evaluation.generate_every_steps` updates the trainer hands its in-memory parameters to
`Validation.start`: the KV-cache sampler (`cft_jax.sampling`) answers every validation problem on the
training mesh, greedy, with one compiled program (every batch has the same rows and the same prompt
bucket, so the first validation compiles and the later ones reuse it). The answers' tokens then go
to a background thread that decodes them and grades them in worker processes (`ValidationTask.grade`:
the evaluation tool's sympy grader, handed in by the trainer, since the training layer imports no side
tool), and the device goes back to training at once. `Validation.collect` hands back the scores of
the validations that are done, oldest first.

The best step (`BestStep`) is the one with the highest accuracy, the earliest among equals; the
scores so far are in WORKDIR/best.json, which a resumed run reads back.

Several processes: every process samples (a collective) and receives every row's tokens; process 0
alone grades, and `collect` broadcasts its counts, so every process must call it at the same steps
(the trainer does: before each checkpoint and at the end; polling for finished grades is for one
process only).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from cft_jax.sampling.sampler import SampleConfig, Sampler
from cft_jax.schema import ResponseRecord, to_json

BEST_FILE = "best.json"  # WORKDIR/best.json: the best step, its score, and every score so far
ANSWERS_DIR = "validation"  # WORKDIR/validation/step_N.jsonl: each validation's answers, graded


@dataclasses.dataclass(frozen=True)
class ValidationTask:
    """What a validation samples and how its answers are scored."""

    benchmark: str  # the benchmark's name or file, as the config gives it
    ids: tuple[str, ...]  # each problem's id
    prompts: tuple[tuple[int, ...], ...]  # each problem rendered with the prompt template, as token ids
    references: tuple[str, ...]  # each problem's reference answer
    sample_config: SampleConfig  # greedy, new tokens, EOS ids and stop sequences
    decode: Callable[[list[int]], str]  # generated tokens -> the answer's text, cut at the stop strings
    grade: Callable[[list[str], list[str]], list[bool]]  # (answers, references) -> verdicts


@dataclasses.dataclass(frozen=True)
class Score:
    """One validation's result: `correct` of `total` problems answered right by the weights of `step`."""

    step: int
    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total


class Validation:
    """Samples a `ValidationTask` with the trainer's parameters and grades the answers in the background.

    Args:
      task: the problems and their grading.
      mesh, graphdef, rest: the training step's mesh, its model graph and the parameters it does not
        train (a LoRA run's frozen base): `start(step, params)` samples the model they make with params.
      batch_size: rows per sampler call, rounded up to a multiple of the mesh's data x fsdp devices.
      answers_dir: where each validation's graded answers go (`step_N.jsonl`); None: nowhere.
    """

    def __init__(
        self,
        task: ValidationTask,
        *,
        mesh: Mesh,
        graphdef: nnx.GraphDef,
        rest: nnx.State,
        batch_size: int,
        cache_dtype: jnp.dtype = jnp.bfloat16,
        answers_dir: epath.Path | None = None,
    ):
        shards = mesh.shape["data"] * mesh.shape["fsdp"]
        self.task = task
        self.mesh, self.graphdef, self.rest = mesh, graphdef, rest
        self.batch_size = -(-batch_size // shards) * shards
        # One bucket for every prompt, so one program; the longest prompt rounded up to 64 tokens.
        self.bucket = -(-max(len(p) for p in task.prompts) // 64) * 64
        self.cache_dtype = cache_dtype
        self.answers_dir = answers_dir if jax.process_index() == 0 else None
        self._grading = ThreadPoolExecutor(max_workers=1, thread_name_prefix="validation-grading")
        self._pending: dict[int, Future | None] = {}
        self.best = BestStep(task.benchmark, len(task.prompts))
        self._pinned: frozenset[int] = frozenset()

    def pinned(self) -> frozenset[int]:
        """The steps whose checkpoints must stay: the best one and those being graded. A snapshot,
        replaced whenever they change, so Orbax's thread may call this at any time."""
        return self._pinned

    def _update_pinned(self) -> None:
        best = self.best.best
        self._pinned = frozenset([*self._pending, *([best.step] if best else [])])

    def resume(self, workdir: epath.Path, step: int) -> None:
        """Takes up the scores a run resumed at `step` had recorded (`BestStep.load`)."""
        self.best = BestStep.load(
            workdir, benchmark=self.best.benchmark, total=self.best.total, resumed_step=step
        )
        self._update_pinned()

    def sample(self, params: nnx.State) -> list[list[int]]:
        """The tokens the model with `params` generates for every prompt, in order."""
        model = nnx.merge(self.graphdef, params, self.rest)
        sampler = Sampler(
            model,
            mesh=self.mesh,
            cache_dtype=self.cache_dtype,
            batch_size=self.batch_size,
            min_bucket=self.bucket,
        )
        prompts, out = self.task.prompts, []
        for start in range(0, len(prompts), self.batch_size):
            out += sampler.generate(prompts[start : start + self.batch_size], self.task.sample_config)
        return out

    def start(self, step: int, params: nnx.State) -> None:
        """Samples the answers of the weights `params` of `step` now; grades them in the background."""
        tokens = self.sample(params)
        grading = self._grading.submit(self._grade, step, tokens) if jax.process_index() == 0 else None
        self._pending[step] = grading
        self._update_pinned()

    def _grade(self, step: int, tokens: list[list[int]]) -> int:
        answers = [self.task.decode(t) for t in tokens]
        verdicts = self.task.grade(answers, list(self.task.references))
        if self.answers_dir is not None:
            records = [
                ResponseRecord(id=i, benchmark=self.task.benchmark, response=a, answer=r, correct=v)
                for i, a, r, v in zip(self.task.ids, answers, self.task.references, verdicts, strict=True)
            ]
            self.answers_dir.mkdir(parents=True, exist_ok=True)
            (self.answers_dir / f"step_{step}.jsonl").write_text("".join(to_json(r) + "\n" for r in records))
        return sum(verdicts)

    def collect(self, *, wait_below: float, saved: int) -> list[tuple[Score, bool]]:
        """(score, whether it is the new best) of the finished validations, oldest first, recorded in
        `best`: those of steps below `wait_below` are waited for; with one process, later ones are
        taken too if their grading is done. Steps after `saved` (no checkpoint yet, so a best one
        could not be exported from it) stay pending whatever their grading's state."""
        single = jax.process_count() == 1
        ready = [
            step
            for step, grading in sorted(self._pending.items())
            if step <= saved and (step < wait_below or (single and grading is not None and grading.done()))
        ]
        scores = []
        for step in ready:
            grading = self._pending.pop(step)
            correct = grading.result() if grading is not None else 0
            if not single:
                correct = int(multihost_utils.broadcast_one_to_all(np.int32(correct)))
            score = Score(step, correct, len(self.task.prompts))
            scores.append((score, self.best.add(score)))
        self._update_pinned()
        return scores

    def close(self) -> None:
        """Stops the grading thread; validations not graded yet are dropped (a resume redoes them)."""
        self._grading.shutdown(wait=False, cancel_futures=True)


@dataclasses.dataclass
class BestStep:
    """The validation scores of a run so far, and its best step: the highest accuracy, earliest first."""

    benchmark: str
    total: int  # problems per validation
    scores: dict[int, Score] = dataclasses.field(default_factory=dict)

    @property
    def best(self) -> Score | None:
        if not self.scores:
            return None
        return max(self.scores.values(), key=lambda s: (s.correct, -s.step))

    def add(self, score: Score) -> bool:
        """Records `score`; whether its step is now the best."""
        self.scores[score.step] = score
        return self.best is score

    def to_json(self) -> dict:
        best = self.best
        return {
            "step": best.step if best else None,
            "score": best.accuracy if best else None,
            "correct": best.correct if best else None,
            "benchmark": self.benchmark,
            "n": self.total,
            "history": [
                {"step": s.step, "score": s.accuracy, "correct": s.correct}
                for _, s in sorted(self.scores.items())
            ],
        }

    def write(self, workdir: epath.Path) -> None:
        """WORKDIR/best.json (process 0)."""
        if jax.process_index() == 0:
            (workdir / BEST_FILE).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, workdir: epath.Path, *, benchmark: str, total: int, resumed_step: int) -> BestStep:
        """The scores a resumed run keeps: WORKDIR/best.json's, of the steps up to the one it resumes
        from (later ones are trained and validated again), if they are of the same validation set."""
        fresh = cls(benchmark, total)
        path = workdir / BEST_FILE
        if resumed_step == 0 or not path.exists():
            return fresh
        saved = json.loads(path.read_text())
        if (saved.get("benchmark"), saved.get("n")) != (benchmark, total):
            print(
                f"warning: {path} scores {saved.get('n')} problems of {saved.get('benchmark')!r}, this run "
                f"{total} of {benchmark!r}: the validation set changed, so the best step starts afresh",
                file=sys.stderr,
            )
            return fresh
        for entry in saved.get("history", []):
            if entry["step"] <= resumed_step:
                fresh.scores[entry["step"]] = Score(entry["step"], entry["correct"], total)
        return fresh
