"""Remote (`gs://`) paths: telling them apart, and staging a remote directory on local disk.

Everything that streams (data, metrics, checkpoints, exports) reads and writes `gs://` through
`etils.epath` directly. What needs a local file — safetensors are memory-mapped, tokenizers load from
a directory — is first copied into a local cache, once per host:

    CFT_JAX_CACHE (default ~/.cache/cft_jax) / remote / BUCKET / PATH

A file already there with the remote size and modification time (copied onto the local file) is not
fetched again, so a restarted or preempted run (or every process of one host) pays for the download
once, and a remote file replaced since is fetched anew. Each file is written to a temporary name and
renamed into place, so an interrupted copy never passes for a complete one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from etils import epath


def is_remote(path: str | os.PathLike) -> bool:
    return "://" in str(path)


def as_path(path: str | os.PathLike) -> epath.Path:
    """An `epath.Path`, made absolute when it is local (`gs://...` URIs are already absolute)."""
    path = epath.Path(path)
    return path if is_remote(path) else path.absolute()


def pathlib_if_local(path: epath.Path) -> Path | epath.Path:
    """A `pathlib.Path` for a local path, the `epath.Path` itself for a remote one: what the writers
    return (a local path, as before `gs://` support)."""
    return path if is_remote(path) else Path(path)


def cache_root() -> Path:
    return Path(os.environ.get("CFT_JAX_CACHE", "~/.cache/cft_jax")).expanduser()


def local_copy(path: str | os.PathLike) -> Path:
    """`path` itself when local; for a remote directory, its files (not subdirectories) copied into the
    local cache, and that local directory."""
    if not is_remote(path):
        return Path(path)
    remote = epath.Path(path)
    if not remote.is_dir():
        raise FileNotFoundError(f"{path}: no such remote directory")
    scheme, rest = str(path).split("://", 1)
    local = cache_root() / "remote" / scheme / rest.strip("/")
    local.mkdir(parents=True, exist_ok=True)
    for source in remote.iterdir():
        if source.is_dir():
            continue
        target = local / source.name
        remote_stat = source.stat()
        if target.is_file():
            here = target.stat()
            if (here.st_size, int(here.st_mtime)) == (remote_stat.length, int(remote_stat.mtime)):
                continue
        partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
        with source.open("rb") as src, partial.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 24)
        os.utime(partial, (remote_stat.mtime, remote_stat.mtime))
        partial.replace(target)
    return local
