"""`gs://` work directory and data: the trainer and the converter against a GCS server on 127.0.0.1.

Every client is pointed at `tests/gcs_server.py` the way it is pointed at a test endpoint in
production code: gcsfs (behind `etils.epath`: data, metrics.jsonl, JSON checkpoint items, HF export)
and google-cloud-storage (tensorboardX's GCS writer) through STORAGE_EMULATOR_HOST, tensorstore
(Orbax's arrays) through TENSORSTORE_GCS_HTTP_URL. Checked against a run on local disk:
  - a run whose data and work directory are in the bucket, stopped at step 3 and restarted from the
    gs:// checkpoint, reaches the local run's losses exactly, with metrics, TensorBoard events, the
    newest checkpoint only (keep=1 deletes in the bucket) and an HF export byte-identical to the
    local run's;
  - `python -m cft_jax.convert export gs://... gs://...` writes the same safetensors bytes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cft_jax.data import asset_path
from tests.gcs_server import GCSServer
from tests.trainer_runs import REPO, SMALL_RUN, trainer_env

BUCKET = "cft"
DATA = asset_path("realcritic_critiques")
SMALL = [*SMALL_RUN, "--config.checkpoint.keep=1", "--config.export.dtype=float32"]


def run(args: list[str], env: dict[str, str], cache: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env=trainer_env(cache, extra=env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def losses(jsonl: bytes) -> dict[int, float]:
    records = [json.loads(line) for line in jsonl.decode().splitlines() if line.strip()]
    steps = [r["step"] for r in records]
    assert steps == sorted(set(steps)), f"steps repeat or go back: {steps}"
    return {r["step"]: r["loss"] for r in records}


@pytest.mark.slow
def test_training_in_a_bucket_resumes_from_it_and_equals_a_local_run(tmp_path):
    cache, local = tmp_path / "xla_cache", tmp_path / "local"
    run(
        ["cft_jax.train", f"--config.training.workdir={local}", "--config.logging.tensorboard=false", *SMALL],
        {},
        cache,
    )

    with GCSServer(buckets=(BUCKET,)) as gcs:
        data = f"gs://{BUCKET}/data/{DATA.name}"
        gcs.put(BUCKET, f"data/{DATA.name}", DATA.read_bytes())
        in_bucket = [
            "cft_jax.train",
            f"--config.training.workdir=gs://{BUCKET}/run",
            f"--config.data.train_paths=('{data}',)",
            *SMALL,
        ]
        run([*in_bucket, "--config.training.halt_at_step=3"], gcs.environment(), cache)
        names = {name for bucket, name in gcs.objects if bucket == BUCKET}
        assert "run/checkpoints/3/model/manifest.ocdbt" in names  # written by tensorstore, not gcsfs
        assert "run/checkpoints/3/data_iter/process_0-of-1.json" in names
        assert not any(n.startswith("run/hf/") for n in names)  # halted before the end: no export

        out = run(in_bucket, gcs.environment(), cache)
        assert "resumed from the checkpoint of step 3" in out and "step 3:" not in out and "step 4:" in out, (
            out
        )
        names = {name for bucket, name in gcs.objects if bucket == BUCKET}
        checkpoints = {n.split("/")[2] for n in names if n.startswith("run/checkpoints/")}
        assert checkpoints == {"6", "hf"}, checkpoints  # keep=1 deleted step 3 in the bucket
        assert any(n.startswith("run/tensorboard/events.out.tfevents.") for n in names)
        assert losses(gcs.objects[(BUCKET, "run/metrics.jsonl")].data) == losses(
            (local / "metrics.jsonl").read_bytes()
        )
        exported = gcs.objects[(BUCKET, "run/hf/step_6/model.safetensors")].data
        assert exported == (local / "hf" / "step_6" / "model.safetensors").read_bytes()
        assert (BUCKET, "run/hf/step_6/tokenizer.json") in gcs.objects

        run(
            ["cft_jax.convert", "export", f"gs://{BUCKET}/run/checkpoints", f"gs://{BUCKET}/converted"],
            gcs.environment(),
            cache,
        )
        assert gcs.objects[(BUCKET, "converted/model.safetensors")].data == exported

        assert gcs.unhandled == []
        # tensorstore's OCDBT writes are compare-and-swap on object generations: they were exercised.
        assert gcs.preconditions["ifGenerationMatch"] > 0, gcs.preconditions
