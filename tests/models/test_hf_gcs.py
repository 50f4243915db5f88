"""HF checkpoints and tokenizers in a bucket: `load_hf("gs://...")` stages the files once into the
local cache and loads what a local load loads; `export_hf` to `gs://` writes the bytes a local export
writes; a `gs://` tokenizer directory tokenizes as the local one.

The bucket is `tests/gcs_server.py` on 127.0.0.1 (GCS itself is unreachable here); gcsfs reaches it
through STORAGE_EMULATOR_HOST, as it would reach any GCS endpoint.
"""

from __future__ import annotations

import time

import fsspec
import numpy as np
import pytest
from flax import nnx

from cft_jax.models.config import ModelConfig
from cft_jax.models.hf import export_hf, load_hf, param_leaves
from tests.gcs_server import GCSServer


def downloads(gcs: GCSServer) -> int:
    return gcs.requests["GET /download"]


def test_load_from_a_bucket_equals_a_local_load_and_downloads_once(bucket, tmp_path, tiny_hf):
    local = tiny_hf("qwen2", tmp_path / "hf", max_shard_size="20KB")  # several shards + index
    for path in local.iterdir():
        bucket.put("cft", f"base/{path.name}", path.read_bytes())

    assert ModelConfig.from_hf("gs://cft/base") == ModelConfig.from_hf(local)
    before = downloads(bucket)
    remote_model, _ = load_hf("gs://cft/base")
    staged = downloads(bucket)
    assert staged - before == len(list(local.iterdir()))  # each file once
    local_model, config = load_hf(local)
    want = param_leaves(nnx.state(local_model, nnx.Param))
    got = param_leaves(nnx.state(remote_model, nnx.Param))
    assert sorted(want) == sorted(got)
    for path in want:
        np.testing.assert_array_equal(np.asarray(got[path]), np.asarray(want[path]), err_msg=str(path))

    load_hf("gs://cft/base")  # a restarted run: nothing fetched again
    assert downloads(bucket) == staged
    time.sleep(1.1)  # GCS reports modification times in seconds
    bucket.put("cft", "base/config.json", (local / "config.json").read_bytes())  # replaced, same size
    # The next run is a new process, which starts without gcsfs's listing cache (the one etils uses).
    fsspec.filesystem("gcs", finalize_on_close=True).invalidate_cache()
    load_hf("gs://cft/base")
    assert downloads(bucket) == staged + 1  # that file only

    export_hf(local_model, config, tmp_path / "out", max_shard_size="20KB")
    export_hf(local_model, config, "gs://cft/out", max_shard_size="20KB")
    for path in (tmp_path / "out").iterdir():
        assert bucket.objects[("cft", f"out/{path.name}")].data == path.read_bytes(), path.name
    assert bucket.unhandled == []


def test_a_missing_remote_directory_is_named(bucket):
    with pytest.raises(Exception, match="gs://cft/nothing"):
        load_hf("gs://cft/nothing")


def test_a_tokenizer_in_a_bucket_tokenizes_as_the_local_one(bucket):
    from cft_jax.assets.tokenizers import load_tokenizer, tokenizer_dir

    for path in tokenizer_dir("qwen2.5").iterdir():
        if path.is_file():
            bucket.put("cft", f"tokenizer/{path.name}", path.read_bytes())
    text = "<|im_start|>user\nIs 1/2 + 1/3 = 5/6?<|im_end|>"
    remote, local = load_tokenizer("gs://cft/tokenizer"), load_tokenizer("qwen2.5")
    assert remote(text)["input_ids"] == local(text)["input_ids"]
