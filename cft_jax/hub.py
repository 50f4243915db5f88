"""Hugging Face Hub ids as paths, downloaded through `huggingface_hub` into its cache once per host.

    hf://OWNER/NAME[@REVISION]                         a model repository: model.hf_path
    hf://datasets/OWNER/NAME[@REVISION][/PATH]         a dataset repository's files under PATH (a file
                                                       or a folder; all of them without): data paths

The spelling is `huggingface_hub`'s own (`HfFileSystem`). A model download takes only what training
reads (config.json, the safetensors and their index, the tokenizer files); a dataset download only the
files the data readers read (cft_jax.data.records). Everything goes to the hub's cache (HF_HUB_CACHE,
default ~/.cache/huggingface/hub), which every process of a host shares (the hub client locks each
file) and a rerun finds complete: one download per host. `python -m cft_jax.convert download` does it
ahead of time, optionally copying the files into a `gs://` directory every host then reads.

HF_ENDPOINT picks the hub (a mirror, or a test server), HF_TOKEN authenticates (read by
`huggingface_hub` from the environment; never printed here), HF_HUB_OFFLINE=1 uses the cache alone.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import shutil
from pathlib import Path

from etils import epath

from cft_jax.assets.tokenizers import TOKENIZER_FILES
from cft_jax.errors import InputError
from cft_jax.remote import is_remote, local_copy

SCHEME = "hf://"
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    *TOKENIZER_FILES,
)
DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".json", ".parquet", ".arrow")


class HubError(InputError):
    """A hub id that does not parse, or a repository, revision or file the hub does not have."""


@dataclasses.dataclass(frozen=True)
class HubId:
    repo_type: str  # "model" or "dataset"
    repo_id: str  # OWNER/NAME
    revision: str | None  # a branch, tag or commit; None = the default branch
    path: str = ""  # inside the repository (datasets): a file or folder, "" = everything

    def __str__(self) -> str:
        prefix = "datasets/" if self.repo_type == "dataset" else ""
        revision = f"@{self.revision}" if self.revision else ""
        return f"{SCHEME}{prefix}{self.repo_id}{revision}{'/' + self.path if self.path else ''}"


def is_hub(path: str | os.PathLike) -> bool:
    return str(path).startswith(SCHEME)


def parse(path: str | os.PathLike) -> HubId:
    text = str(path)
    rest = text.removeprefix(SCHEME)
    repo_type = "model"
    if rest.startswith("datasets/"):
        repo_type, rest = "dataset", rest.removeprefix("datasets/")
    parts = rest.split("/")
    if len(parts) < 2 or not parts[0] or not parts[1].split("@")[0]:
        raise HubError(
            f"{text}: not a hub id; write hf://OWNER/NAME[@REVISION] (a model) or "
            "hf://datasets/OWNER/NAME[@REVISION][/PATH] (a dataset's files)"
        )
    name, _, revision = parts[1].partition("@")
    inner = "/".join(parts[2:]).strip("/")
    if repo_type == "model" and inner:
        raise HubError(f"{text}: a model id names the repository only: hf://{parts[0]}/{parts[1]}")
    return HubId(repo_type, f"{parts[0]}/{name}", revision or None, inner)


def _fail(hub_id: HubId, what: str, error: Exception) -> HubError:
    """The hub client's error as one line: which repository / file, what the hub said, the fix."""
    from huggingface_hub import errors

    where = f"{hub_id}: {what}"
    if isinstance(error, errors.GatedRepoError):
        fix = "the repository is gated: accept its terms on the hub and set HF_TOKEN in the environment"
    elif isinstance(error, errors.RepositoryNotFoundError):
        fix = "no such repository (or it is private: set HF_TOKEN); check the id's spelling"
    elif isinstance(error, errors.RevisionNotFoundError):
        fix = f"no revision {hub_id.revision!r} in the repository; give a branch, tag or commit it has"
    elif isinstance(error, errors.EntryNotFoundError):
        fix = "the repository has no such file; check the id's path"
    elif isinstance(error, (errors.OfflineModeIsEnabled, errors.LocalEntryNotFoundError)):
        fix = (
            "not in the local hub cache and HF_HUB_OFFLINE=1 (or the hub is unreachable); download it "
            f"where the hub is reachable (python -m cft_jax.convert download {hub_id}) or unset "
            "HF_HUB_OFFLINE"
        )
    else:
        fix = f"the hub answered: {str(error).splitlines()[0]}; retry, or check HF_ENDPOINT and HF_TOKEN"
    return HubError(f"{where}: {fix}")


def _endpoint() -> str | None:
    # Read per call, not at import as huggingface_hub does, so HF_ENDPOINT set later still counts.
    return os.environ.get("HF_ENDPOINT") or None


def _offline() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode()


def download(hub_id: HubId, patterns: tuple[str, ...]) -> Path:
    """The local snapshot directory of `hub_id` holding its files that match `patterns` (a model's: at
    the top of the repository; a dataset's: under its path), fetched into the hub cache unless there."""
    from huggingface_hub import HfApi, errors, hf_hub_download, snapshot_download

    if hub_id.repo_type == "model":
        allow = list(patterns)
    elif hub_id.path.endswith(DATA_SUFFIXES):
        allow = [hub_id.path]
    else:
        allow = [f"{hub_id.path}/{p}" if hub_id.path else p for p in patterns]
    kind = {"repo_type": hub_id.repo_type, "revision": hub_id.revision}
    try:
        if _offline():
            cached = snapshot_download(hub_id.repo_id, allow_patterns=allow, local_files_only=True, **kind)
            return Path(cached)
        info = HfApi(endpoint=_endpoint()).repo_info(hub_id.repo_id, **kind)
        files = [s.rfilename for s in info.siblings or () if _wanted(hub_id, s.rfilename, allow)]
        if not files:
            raise HubError(
                f"{hub_id}: the repository has none of the files needed ({', '.join(allow)}) at commit "
                f"{info.sha}; check the id (and its path)"
            )
        if hub_id.repo_type == "model" and "config.json" not in files:
            raise HubError(
                f"{hub_id}: no config.json at commit {info.sha}: not a transformers checkpoint; give the id "
                "of one (safetensors weights beside their config.json)"
            )
        for name in files:
            # Pinned to the commit the listing came from, so every file is of the same revision.
            local = hf_hub_download(
                hub_id.repo_id, name, repo_type=hub_id.repo_type, revision=info.sha, endpoint=_endpoint()
            )
        return Path(local).parents[len(Path(name).parts) - 1]
    except (errors.HfHubHTTPError, errors.OfflineModeIsEnabled, errors.LocalEntryNotFoundError) as e:
        raise _fail(hub_id, "download failed", e) from None


def _wanted(hub_id: HubId, name: str, allow: list[str]) -> bool:
    # fnmatch's * crosses "/": a model's files are the top-level ones (not e.g. onnx/ or original/).
    if hub_id.repo_type == "model" and "/" in name:
        return False
    return any(fnmatch.fnmatch(name, p) for p in allow)


def model_dir(path: str | os.PathLike) -> Path:
    """A local directory with the HF checkpoint at `path`: a hub id downloaded, a `gs://` directory
    staged (`cft_jax.remote`), a local one as it is."""
    if is_hub(path):
        return download(_model_id(path), MODEL_FILES)
    return local_copy(path)


def tokenizer_dir(path: str | os.PathLike) -> Path:
    """The tokenizer files of the model id `path` (and its config.json), without its weights."""
    return download(_model_id(path), ("config.json", "generation_config.json", *TOKENIZER_FILES))


def config_file(path: str | os.PathLike) -> Path | epath.Path:
    """The config.json of the checkpoint at `path`; of a hub id, that file alone is downloaded (a run is
    planned, `--dry_run`, before the weights are fetched)."""
    if not is_hub(path):
        return epath.Path(path) / "config.json" if is_remote(path) else Path(path) / "config.json"
    return download(_model_id(path), ("config.json",)) / "config.json"


def _model_id(path: str | os.PathLike) -> HubId:
    hub_id = parse(path)
    if hub_id.repo_type != "model":
        raise HubError(f"{path}: a dataset id where a model is expected; write hf://OWNER/NAME")
    return hub_id


def data_files(path: str) -> list[str]:
    """The local files of the data path `path`: a dataset id's data files downloaded (sorted), any
    other path as it is."""
    if not is_hub(path):
        return [path]
    hub_id = parse(path)
    if hub_id.repo_type != "dataset":
        raise HubError(
            f"{path}: a data path on the hub is a dataset's: write hf://datasets/OWNER/NAME[/PATH]"
        )
    root = download(hub_id, tuple(f"*{suffix}" for suffix in DATA_SUFFIXES))
    base = root / hub_id.path
    if base.is_file():
        return [str(base)]
    return sorted(str(p) for p in base.rglob("*") if p.is_file() and p.name.endswith(DATA_SUFFIXES))


def mirror(source: Path, target: str) -> epath.Path:
    """Copies the files of the local directory `source` into `target` (local or `gs://`), for every host
    to read from there; a file already there with the same size is kept."""
    out = epath.Path(target)
    out.mkdir(parents=True, exist_ok=True)
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        dst = out / str(file.relative_to(source))
        if dst.exists() and dst.stat().length == file.stat().st_size:
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        with file.open("rb") as src, dst.open("wb") as f:
            shutil.copyfileobj(src, f, 1 << 24)
    return out
