"""Tokenizers: the shipped ones, loading any one, the files an HF directory carries, ChatML's `<|im_end|>`.

Shipped: the tests and the demo need real vocabularies (the exact token ids of the papers' templates
depend on them) and nothing may be fetched from a hub, so the files ship gzip-compressed under
`cft_jax/assets/tokenizers/<folder>/` (licenses in `LICENSES.md` there), unpacked once into a cache
directory (`tokenizer_dir`). `load_tokenizer` takes one of them by name, or a local or `gs://` directory.

An HF checkpoint directory carries its tokenizer as the files `TOKENIZER_FILES`; `copy_tokenizer` puts
them into an export or a checkpoint's `hf/` directory.

ChatML on a tokenizer without ChatML tokens (DeepSeek, Llama) is what LLaMA-Factory did for the CFT
paper's non-Qwen models. In hiyouga/LLaMA-Factory `src/llamafactory/data/template.py` (v0.9.1, Nov 2024,
the release the paper's runs could use; today's `Template.fix_special_tokens` does the same) the `qwen`
template is registered with `stop_words=["<|im_end|>"]` and `replace_eos=True`, so
`get_template_and_fix_tokenizer` makes `<|im_end|>` the eos token through
`tokenizer.add_special_tokens({"eos_token": ...})` (in `_add_or_replace_eos_token`), which appends
it as a new special token when the vocabulary lacks it, and sets the pad token to the eos token when
there is none. `<|im_start|>` is never added: it stays ordinary text, split by BPE. The new id
(`len(tokenizer)` of the checkpoint's HF tokenizer) must have a row in the model's embedding;
LLaMA-Factory resizes only when the tokenizer outgrew it (`resize_embedding_layer`), which DeepSeek's
(100,015 tokens, 102,400 embedding rows) does not. `with_im_end_eos` makes that change, and
`write_im_end_tokenizer` writes the changed tokenizer exports must then carry.
"""

from __future__ import annotations

import copy
import functools
import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from etils import epath

from cft_jax.errors import InputError
from cft_jax.remote import is_remote, local_copy

_ROOT = Path(__file__).resolve().parent / "tokenizers"

TOKENIZERS = ("qwen2.5", "llama3", "deepseek_llm")
# Folder names must be valid package names, or setuptools leaves them out of the wheel.
_FOLDERS = {"qwen2.5": "qwen2_5", "llama3": "llama3", "deepseek_llm": "deepseek_llm"}

IM_START, IM_END = "<|im_start|>", "<|im_end|>"

# The files of a tokenizer in an HF directory: what exports and checkpoints copy.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
)
# A directory is a tokenizer when it has one of these (what AutoTokenizer reads).
LOADABLE_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


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
    if stamp.exists() and stamp.read_text() == _fingerprint(packed):
        # Another process unpacked it meanwhile (and may be reading it): keep theirs.
        shutil.rmtree(tmp, ignore_errors=True)
        return out
    shutil.rmtree(out, ignore_errors=True)  # an older or half-removed unpacking
    try:
        tmp.rename(out)
    except OSError:
        # Another process won the race with identical content.
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _fingerprint(files: list[Path]) -> str:
    return ";".join(f"{f.name}:{f.stat().st_size}" for f in files)


def has_tokenizer(directory: str | os.PathLike) -> bool:
    """Whether `directory` (local or `gs://`) holds a tokenizer AutoTokenizer can load."""
    return any((epath.Path(directory) / name).is_file() for name in LOADABLE_FILES)


@functools.lru_cache(maxsize=8)
def load_tokenizer(name_or_path: str, *, add_im_end: bool = False) -> Any:
    """A transformers tokenizer: a shipped one by name (`qwen2.5`, `llama3`, `deepseek_llm`) or a local dir.

    add_im_end: the tokenizer as `with_im_end_eos` makes it (`DataConfig.chatml_add_im_end`).
    Cached: loading takes seconds and the pipeline only reads from it (never modify the result).
    """
    if add_im_end:
        return with_im_end_eos(load_tokenizer(name_or_path))
    from transformers import AutoTokenizer

    if name_or_path in TOKENIZERS:
        path = tokenizer_dir(name_or_path)
    elif is_remote(name_or_path):
        path = local_copy(name_or_path)  # staged once per host (cft_jax.remote); names a missing one
    else:
        path = Path(name_or_path)
    if not Path(path).is_dir():
        raise FileNotFoundError(
            f"tokenizer {name_or_path!r}: not a shipped tokenizer {TOKENIZERS} nor a directory (local or gs://)"
        )
    if not has_tokenizer(path):
        # transformers would answer with a long traceback about slow-tokenizer conversion instead.
        raise InputError(
            f"tokenizer {name_or_path!r}: {path} has none of {list(LOADABLE_FILES)}; give an HF checkpoint "
            f"or tokenizer directory, or a shipped tokenizer {TOKENIZERS}"
        )
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def with_im_end_eos(tokenizer: Any) -> Any:
    """A copy of `tokenizer` fixed as LLaMA-Factory's `qwen` template fixes it (module docstring).

    `<|im_end|>` becomes the eos token, added as a new special token (id = the vocabulary size) when
    the tokenizer lacks it; the pad token becomes the eos token when there is none. `<|im_start|>` is
    left alone. The tokenizer passed in is not modified (`load_tokenizer` caches and shares it).

    A tokenizer rebuilt from llama.cpp's GGUF vocabulary (the shipped `deepseek_llm`) carries
    placeholder entries `[PAD<id>]` that pad its vocabulary to the model's embedding size (102,400)
    and that no text ever tokenizes to; the HF tokenizer the paper used ends before them (100,015
    tokens). They are dropped before `<|im_end|>` is added, so it gets the id it got in the paper's runs
    (100015 for DeepSeek), the one the checkpoint's own tokenizer gives it too.
    """
    if tokenizer.eos_token == IM_END and tokenizer.pad_token is not None:
        return tokenizer
    if IM_END in tokenizer.get_vocab():
        tokenizer = copy.deepcopy(tokenizer)
    else:
        tokenizer = _without_llama_cpp_padding(tokenizer)
    tokenizer.add_special_tokens({"eos_token": IM_END})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _without_llama_cpp_padding(tokenizer: Any) -> Any:
    """A copy of `tokenizer` without a trailing run of llama.cpp's `[PAD<id>]` vocabulary placeholders."""
    size = len(tokenizer)
    first = size
    while first > 0 and tokenizer.convert_ids_to_tokens(first - 1) == f"[PAD{first - 1}]":
        first -= 1
    if first == size or any(i >= first for i in tokenizer.added_tokens_decoder):
        return copy.deepcopy(tokenizer)
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="cft_tokenizer_") as tmp:
        tokenizer.save_pretrained(tmp)
        path = Path(tmp) / "tokenizer.json"
        state = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        vocab = state.get("model", {}).get("vocab")
        if not isinstance(vocab, dict):  # not a BPE tokenizer.json: leave the vocabulary as it is
            return copy.deepcopy(tokenizer)
        state["model"]["vocab"] = {token: i for token, i in vocab.items() if i < first}
        path.write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")
        stripped = AutoTokenizer.from_pretrained(tmp, local_files_only=True)
    if len(stripped) != first:
        raise RuntimeError(f"dropping the [PAD] placeholders left {len(stripped)} tokens, expected {first}")
    return stripped


def export_source(hf_path: str | None, tokenizer: str) -> Path | epath.Path | None:
    """Where the tokenizer files that go with exports come from: the HF checkpoint `hf_path`, else the
    data's `tokenizer` when it is a shipped one or a directory, local or `gs://` (None otherwise)."""
    if hf_path:
        return epath.Path(hf_path)
    if tokenizer in TOKENIZERS:
        return tokenizer_dir(tokenizer)
    if is_remote(tokenizer):
        return epath.Path(tokenizer) if epath.Path(tokenizer).is_dir() else None
    return Path(tokenizer) if Path(tokenizer).is_dir() else None


def copy_tokenizer(src: str | Path | epath.Path, dst: str | Path | epath.Path) -> list[str]:
    """Copies the tokenizer files (and `generation_config.json`) present in `src` to `dst` (either may
    be a `gs://` URI)."""
    src, dst = epath.Path(src), epath.Path(dst)
    copied = []
    for name in (*TOKENIZER_FILES, "generation_config.json"):
        if (src / name).is_file() and not _same_file(src / name, dst / name):
            (dst / name).write_bytes((src / name).read_bytes())
            copied.append(name)
    return copied


def _same_file(a: epath.Path, b: epath.Path) -> bool:
    if is_remote(a) or is_remote(b):
        return str(a) == str(b)
    return Path(a).resolve() == Path(b).resolve()


def write_im_end_tokenizer(tokenizer: str, src: str | Path | None, dst: str | Path) -> Path:
    """The tokenizer exports carry when the training data made `<|im_end|>` eos, written to local dir `dst`.

    `tokenizer` is the one the data was tokenized with (`load_tokenizer`'s name or directory); `src` the
    directory exports would copy the tokenizer from, e.g. the HF checkpoint's (local or gs://; None or a
    directory without tokenizer files: `tokenizer`). Writes that tokenizer with `<|im_end|>` added as eos
    exactly as for the training data (`with_im_end_eos`), saved with `save_pretrained`, plus `src`'s
    `generation_config.json` unchanged (LLaMA-Factory leaves it alone; evaluation stops at `<|im_end|>`
    through the tokenizer's eos and the stop strings). Returns `dst`.
    Raises when `<|im_end|>` gets another id in `src`'s tokenizer than in the training data.
    """
    trained = load_tokenizer(tokenizer, add_im_end=True)
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    source = epath.Path(src) if src is not None else None
    exported = trained
    if source is not None and has_tokenizer(source):
        exported = load_tokenizer(str(src), add_im_end=True)  # a gs:// src is staged by cft_jax.remote
        want, got = trained.convert_tokens_to_ids(IM_END), exported.convert_tokens_to_ids(IM_END)
        if got != want:
            raise InputError(
                f"{IM_END} is token {want} in the training data (tokenizer {tokenizer!r}) but would "
                f"be {got} in the exported tokenizer from {src}; set data.tokenizer to {str(src)!r} so "
                "both agree"
            )
    exported.save_pretrained(str(dst))
    if source is not None and (source / "generation_config.json").is_file():
        (dst / "generation_config.json").write_bytes((source / "generation_config.json").read_bytes())
    return dst
