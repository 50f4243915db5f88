"""`--aot`: the trainer's step compiled by libtpu's real compiler for TPU chips that are not here.

A tiny decoder (head_dim 128, so splash takes it) on the 4 chips of a v5p-8 (`v5p:2x2x1`), with the
fused splash kernel and with the XLA reference, sharded over fsdp and over (fsdp, tensor): each
compiles (splash through Mosaic, inside the sharded step), reports the compiler's per-chip memory,
and the optimized HLO shows FSDP's collectives. A batch that cannot fit fails with advice.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cft_jax.aot.compile import allow_shared_libtpu, compile_for, format_report
from cft_jax.aot.hlo import instruction_cycles
from cft_jax.aot.targets import resolve_target
from cft_jax.config import build_config
from cft_jax.errors import InputError
from cft_jax.models.config import ModelConfig
from cft_jax.training.compiler_options import TUNED
from tests.aot.conftest import (
    SEQ,
    TINY,
    activation_all_reduces,
    largest_all_reduce_elements,
    weight_all_gathers,
)
from tests.trainer_runs import REPO


def tiny_config(impl: str, mesh: tuple[int, int, int], **training):
    values = {
        "model": {"init_config": TINY, "compute_dtype": "bfloat16", "remat": "full", "attention_impl": impl},
        "data": {"seq_len": SEQ},
        "training": {"global_batch": 8, "accumulation_steps": 2, "vocab_chunk": 384, **training},
        "mesh": dict(zip(("data", "fsdp", "tensor"), mesh, strict=True)),
    }
    return build_config(values, num_devices=4)


@pytest.fixture(scope="module")
def v5p_8():
    allow_shared_libtpu()
    return resolve_target("v5p-8")


@pytest.mark.slow
@pytest.mark.parametrize("mesh", [(1, 4, 1), (1, 2, 2)], ids=["fsdp4", "fsdp2-tensor2"])
@pytest.mark.parametrize("impl", ["splash", "xla"])
def test_the_sharded_step_compiles_for_a_tpu_slice_and_reports_its_memory(impl, mesh, v5p_8):
    config = tiny_config(impl, mesh)
    report = compile_for(config, ModelConfig.from_hf(TINY), v5p_8)

    assert report.attention == impl
    assert report.mesh == mesh and report.target.num_devices == 4
    memory = report.memory
    assert memory["argument"] > 0 and memory["temp"] > 0
    parts = memory["argument"] + memory["output"] - memory["alias"] + memory["temp"] + memory["code"]
    assert memory["total"] == parts
    text = format_report(report)
    assert f"attention {impl}" in text and "per-device memory from the compiler" in text
    if impl == "splash":  # Mosaic compiled the kernel: its custom call is in the optimized program
        assert "tpu_custom_call" in report.hlo_text
    # FSDP: every layer weight is all-gathered where it is used, no device sums a micro-batch's
    # activations, and without tensor parallelism no activation is all-reduced at all (with it, a
    # device's own rows' partial sums over "tensor" are, as in Megatron).
    model = ModelConfig.from_hf(TINY)
    rows = config.training.global_batch // config.training.accumulation_steps
    assert largest_all_reduce_elements(report.hlo_text) < rows * SEQ * model.hidden_size
    assert weight_all_gathers(report.hlo_text, model, tensor=mesh[2])
    if mesh[2] == 1:
        assert activation_all_reduces(report.hlo_text) == []
    # libtpu's per-instruction cycle estimates: the layer loops' fusions run once per layer per step.
    cycles = instruction_cycles(report.hlo_text)
    assert cycles and all(c.cycles > 0 for c in cycles)
    assert {c.per_step for c in cycles if c.opcode == "fusion"} >= {1, TINY["num_hidden_layers"]}


@pytest.mark.slow
def test_the_step_compiles_with_the_chips_tuned_options_and_explicit_ones_reach_libtpu(v5p_8):
    model = ModelConfig.from_hf(TINY)
    report = compile_for(tiny_config("xla", (1, 4, 1)), model, v5p_8)  # compiler_options="auto"
    assert report.compiler_options == TUNED["TPU v5"] == {"xla_tpu_scoped_vmem_limit_kib": 98304}
    assert "compiler options: --xla_tpu_scoped_vmem_limit_kib=98304" in format_report(report)
    bare = compile_for(tiny_config("xla", (1, 4, 1), compiler_options=""), model, v5p_8)
    assert bare.compiler_options == {} and "the compiler's defaults" in format_report(bare)
    # An option libtpu does not know is refused by libtpu itself: the options reach its compiler.
    with pytest.raises(InputError, match="No such compile option: 'xla_tpu_no_such_option'"):
        compile_for(
            tiny_config("xla", (1, 4, 1), compiler_options="--xla_tpu_no_such_option=1"), model, v5p_8
        )


def test_an_oversized_batch_fails_with_the_knob_to_turn_not_a_traceback(tmp_path):
    config = tmp_path / "huge.py"
    config.write_text(
        f"TINY = {TINY!r}\n"
        "def get_config():\n"
        "    return {'model': {'init_config': TINY, 'remat': 'full', 'attention_impl': 'xla'},\n"
        "            'data': {'seq_len': 4096}, 'training': {'global_batch': 4096, 'vocab_chunk': 384}}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "cft_jax.train", "--config", str(config), "--aot", "v5p-8"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "GiB HBM" in result.stderr and "training.accumulation_steps from 1 to" in result.stderr


def test_an_unknown_slice_lists_the_known_forms():
    with pytest.raises(InputError, match=r"'v7x-8'.*v5p-32, v6e-8"):
        resolve_target("v7x-8")
    with pytest.raises(InputError, match=r"no standard topology for 3 chips.*v5p-8"):
        resolve_target("v5p-6")


def test_a_mesh_that_cannot_use_the_chips_names_its_axes(v5p_8):
    config = build_config(
        {
            "model": {"init_config": TINY},
            "training": {"global_batch": 8},
            "mesh": {"data": 1, "fsdp": 2, "tensor": 1},
        }
    )
    with pytest.raises(InputError, match="must equal the 4 devices"):
        compile_for(config, ModelConfig.from_hf(TINY), v5p_8)


def test_without_libtpu_the_error_names_the_extra(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "libtpu" else find_spec(name, *a)
    )
    with pytest.raises(InputError, match=r"needs libtpu, the TPU compiler: pip install -e '\.\[aot\]'"):
        resolve_target("v5p-8")
