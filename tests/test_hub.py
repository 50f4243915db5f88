"""hf:// ids: models, tokenizers and data fetched by the real huggingface_hub client from a hub on
127.0.0.1 (tests/hub_server.py) that serves the project's own files: the shipped critiques and
Qwen2.5 tokenizer, a tiny checkpoint exported here. The paper recipe trained from hub ids:
tests/training/test_recipes_train.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cft_jax.assets.tokenizers import tokenizer_dir
from cft_jax.convert.__main__ import main as convert_main
from cft_jax.data import asset_path
from cft_jax.data.records import read_samples
from cft_jax.errors import run_cli
from cft_jax.hub import HubError, data_files, model_dir
from cft_jax.models.config import ModelConfig
from cft_jax.models.hf import export_hf
from cft_jax.train import main as train_main
from tests.training.conftest import tiny_model
from tests.training.test_config_recipes import ARCHITECTURES, CONFIGS

TINY = "cft-tests/tiny-qwen2"
CFT_DATA = "TIGER-Lab/WebInstruct-CFT"
CRITIQUES = "WebInstruct-CFT-50K/train.jsonl.gz"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resolves(hub, method: str = "GET") -> list[str]:
    """The repository files requested so far with `method`."""
    files = [
        path.split("/resolve/", 1)[1] for m, path, _ in hub.requests if m == method and "/resolve/" in path
    ]
    return [file.split("/", 1)[1] for file in files]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random Qwen2-shaped checkpoint of the CPU demo's size (39 MB of weights: the Qwen2.5 vocabulary)
    with the shipped Qwen2.5 tokenizer's files, as an export writes it."""
    from cft_jax.config import config_module

    init = config_module(CONFIGS / "cpu_demo.py").get_config()["model"]["init_config"]
    config = ModelConfig.from_hf(init)
    out = tmp_path_factory.mktemp("tiny-qwen2")
    return Path(export_hf(tiny_model(config), config, out, tokenizer_dir=tokenizer_dir("qwen2.5")))


def test_a_model_id_downloads_only_what_training_reads_resumes_a_dropped_file_and_caches(
    hub, tiny_checkpoint
):
    from huggingface_hub import constants

    files = hub.files_of(tiny_checkpoint)
    extra = {"README.md": b"# card", "onnx/model.safetensors": b"other", "original/params.json": b"{}"}
    hub.add_model(TINY, {**files, **extra})
    # The connection breaks 2.5 client read chunks into the weights (what was read by then is kept).
    chunk = constants.DOWNLOAD_CHUNK_SIZE
    hub.drop("model.safetensors", after=2 * chunk + chunk // 2)

    local = model_dir(f"hf://{TINY}")

    assert sorted(p.name for p in local.iterdir()) == sorted(files)
    assert all(sha256(local / name) == hashlib.sha256(data).hexdigest() for name, data in files.items())
    assert hub.downloads("model.safetensors") == [None, f"bytes={2 * chunk}-"]  # resumed, not restarted
    assert set(resolves(hub)) == set(files)
    gets = len(resolves(hub))
    assert model_dir(f"hf://{TINY}@main") == local  # a second run: from the cache
    assert len(resolves(hub)) == gets


def test_a_missing_repository_revision_or_file_is_named_with_the_fix(hub, capsys):
    hub.add_model("cft-tests/weights-only", {"model.safetensors": b"\0" * 8})
    with pytest.raises(HubError, match=r"hf://cft-tests/nowhere: download failed: no such repository"):
        model_dir("hf://cft-tests/nowhere")
    with pytest.raises(HubError, match=r"@v9: download failed: no revision 'v9' in the repository"):
        model_dir("hf://cft-tests/weights-only@v9")
    with pytest.raises(
        HubError, match=r"weights-only: no config.json at commit [0-9a-f]+: not a transformers"
    ):
        model_dir("hf://cft-tests/weights-only")
    with pytest.raises(SystemExit) as exit_:
        run_cli(convert_main, ["download", "hf://cft-tests/nowhere"])
    assert exit_.value.code == 2
    assert "error: hf://cft-tests/nowhere: download failed: no such repository" in capsys.readouterr().err


def test_dry_run_plans_a_hub_model_from_its_config_json_alone(hub, capsys):
    config = json.dumps(ARCHITECTURES["qwen7b_v5p"]).encode()
    weights = {f"model-0000{i}-of-00004.safetensors": b"\0" * 64 for i in range(1, 5)}
    hub.add_model("Qwen/Qwen2.5-Math-7B", {"config.json": config, **weights})
    hf_path = "--config.model.hf_path=hf://Qwen/Qwen2.5-Math-7B"
    train_main(["--config", str(CONFIGS / "qwen7b_v5p.py"), hf_path, "--dry_run", "--dry_run_devices", "16"])
    assert "model: qwen2, 7.616 B parameters" in capsys.readouterr().out
    assert set(resolves(hub)) == {"config.json"}


def test_a_dataset_id_reads_its_files_with_the_project_readers(hub, tmp_path):
    critiques = asset_path("realcritic_critiques").read_bytes()
    hub.add_dataset(CFT_DATA, {"README.md": b"---\n---\n", CRITIQUES: critiques, "other/x.jsonl": b"{}\n"})
    [local] = data_files(f"hf://datasets/{CFT_DATA}/WebInstruct-CFT-50K")
    assert Path(local).read_bytes() == critiques and set(resolves(hub)) == {CRITIQUES}
    assert len(read_samples([local])) == 532
    out = tmp_path / "mirror"
    run_cli_status = convert_main(["download", f"hf://datasets/{CFT_DATA}/{CRITIQUES}", str(out)])
    assert run_cli_status == 0 and (out / CRITIQUES).read_bytes() == critiques


def _preflight_problems(*overrides: str) -> str:
    from cft_jax.config import ConfigError, load_config
    from cft_jax.training.preflight import preflight

    with pytest.raises(ConfigError) as error:
        preflight(load_config(CONFIGS / "cpu_demo.py", list(overrides)))
    return str(error.value)


def test_a_model_id_the_hub_lacks_is_named_by_preflight(hub):
    message = _preflight_problems("--config.model.init_config={}", "--config.model.hf_path=hf://Qwen/Qwen9")
    assert "model.hf_path='hf://Qwen/Qwen9': hf://Qwen/Qwen9: download failed: no such repository" in message


def test_a_malformed_model_id_is_named_by_preflight(hub):
    message = _preflight_problems("--config.model.init_config={}", "--config.model.hf_path=hf://Qwen")
    assert "model.hf_path='hf://Qwen': hf://Qwen: not a hub id; write hf://OWNER/NAME[@REVISION]" in message


def test_a_tokenizer_id_the_hub_lacks_is_named_by_preflight(hub):
    message = _preflight_problems("--config.data.tokenizer=hf://Qwen/Qwen9")
    assert "data.tokenizer: hf://Qwen/Qwen9: download failed: no such repository" in message


def test_a_dataset_file_the_hub_lacks_is_named_by_preflight(hub):
    hub.add_dataset(CFT_DATA, {CRITIQUES: asset_path("realcritic_critiques").read_bytes()})
    missing = f"hf://datasets/{CFT_DATA}/WebInstruct-CFT-600K.json"
    message = _preflight_problems(f"--config.data.train_paths=('{missing}',)")
    assert f"data.train_paths[0]: {missing}: the repository has none of the files needed" in message


def test_a_model_downloaded_into_a_bucket_is_what_every_host_then_reads(hub, bucket, tiny_checkpoint, capsys):
    from etils import epath

    from cft_jax.remote import local_copy

    files = hub.files_of(tiny_checkpoint)
    hub.add_model(TINY, files)
    assert convert_main(["download", f"hf://{TINY}", "gs://cft/models/tiny"]) == 0
    assert capsys.readouterr().out.strip() == "gs://cft/models/tiny"
    assert sorted(p.name for p in epath.Path("gs://cft/models/tiny").iterdir()) == sorted(files)
    staged = local_copy("gs://cft/models/tiny")  # what load_hf reads on each host
    assert all((staged / name).read_bytes() == data for name, data in files.items())
