"""Real tokenizers shipped with the package, unpacked once into a cache directory.

The tests and the demo need real vocabularies (the exact token ids of the papers' templates
depend on them) and nothing may be fetched from a hub, so the files ship gzip-compressed under
`cft_jax/assets/tokenizers/<folder>/` (licenses in `LICENSES.md` there).
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

from cft_jax.errors import InputError

_ROOT = Path(__file__).resolve().parent / "tokenizers"

TOKENIZERS = ("qwen2.5", "llama3", "deepseek_llm")
# Folder names must be valid package names, or setuptools leaves them out of the wheel.
_FOLDERS = {"qwen2.5": "qwen2_5", "llama3": "llama3", "deepseek_llm": "deepseek_llm"}


def _cache_root() -> Path:
    base = os.environ.get("CFT_JAX_CACHE") or os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cft_jax" / "tokenizers"


def tokenizer_dir(name: str) -> Path:
    """A directory holding the shipped tokenizer `name`, loadable with `AutoTokenizer.from_pretrained`.

    Unpacks on first use; later calls return the same directory. Set `CFT_JAX_CACHE` to move it.
    """
    if name not in TOKENIZERS:
        raise InputError(f"unknown shipped tokenizer {name!r}; choose one of {TOKENIZERS}")
    src = _ROOT / _FOLDERS[name]
    out = _cache_root() / name
    stamp = out / ".complete"
    packed = sorted(src.glob("*.gz"))
    if stamp.exists() and stamp.read_text() == _fingerprint(packed):
        return out
    # Unpack into a private directory and rename it into place, so concurrent processes (test
    # workers, Grain workers) never see a half-written tokenizer.
    tmp = out.with_name(f"{name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for gz in packed:
        with gzip.open(gz, "rb") as fin, open(tmp / gz.name[: -len(".gz")], "wb") as fout:
            shutil.copyfileobj(fin, fout)
    (tmp / ".complete").write_text(_fingerprint(packed))
    shutil.rmtree(out, ignore_errors=True)
    try:
        tmp.rename(out)
    except OSError:
        # Another process won the race with identical content.
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _fingerprint(files: list[Path]) -> str:
    return ";".join(f"{f.name}:{f.stat().st_size}" for f in files)
