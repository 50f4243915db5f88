""".venv-vllm is exactly requirements/lock-vllm.txt, has no JAX, and the side tools ran there without it."""

from __future__ import annotations

import json
import subprocess

from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.vllm_cpu.side_env import REPO

JAX = ("jax", "jaxlib", "flax", "optax", "orbax", "orbax-checkpoint", "grain")
LOCK = REPO / "requirements" / "lock-vllm.txt"
INSTALLER_TOOLS = {"pip", "setuptools", "wheel", "cft-jax"}


def test_the_side_tools_imported_no_jax(vllm_results):
    # Every check (eval generate and select, critique sample, the engine's errors) in one process.
    assert vllm_results["jax_modules"] == []


def test_the_environment_is_exactly_its_lock_with_no_jax(vllm_python):
    listing = subprocess.run(
        [str(vllm_python), "-c", "import importlib.metadata as m, json; "
         "print(json.dumps([[d.metadata['Name'], d.version] for d in m.distributions()]))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    installed: dict[str, str] = {}
    for name, version in json.loads(listing.stdout):
        installed.setdefault(canonicalize_name(name), version)
    for name in INSTALLER_TOOLS:
        installed.pop(name, None)
    pins = {
        canonicalize_name(line.partition("==")[0]): Version(line.partition("==")[2])
        for line in LOCK.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert not [n for n in installed if n in JAX], installed
    differ = {n: (installed.get(n), str(pins.get(n))) for n in set(installed) | set(pins)}
    differ = {n: v for n, v in differ.items() if v[0] is None or n not in pins or Version(v[0]) != pins[n]}
    assert not differ, (
        f".venv-vllm is not {LOCK.name} (name: (installed, locked)): {differ}; "
        "reinstall with `rm -f .venv-vllm/.cft_jax-installed && bash scripts/env_vllm.sh`"
    )
