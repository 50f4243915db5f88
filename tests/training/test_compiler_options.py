"""`training.compiler_options`: "auto" is the chip's tuned table, anything else explicit flags."""

from __future__ import annotations

import pytest

from cft_jax.config import format_flags, parse_flags
from cft_jax.training.compiler_options import TUNED, step_compiler_options


def test_auto_is_the_chips_table_and_nothing_where_none_was_tuned():
    assert step_compiler_options("auto", "TPU v5") == TUNED["TPU v5"]
    assert step_compiler_options("auto", "TPU v5 lite") == {}  # v5e: nothing compiled there to tune with
    assert step_compiler_options("auto", "cpu") == {}
    assert step_compiler_options("", "TPU v5") == {}  # the compiler's own defaults


def test_explicit_flags_are_typed_as_xla_takes_them():
    flags = "--xla_tpu_scoped_vmem_limit_kib=65536 --xla_tpu_enable_async_collective_fusion=true --x=a,b"
    assert parse_flags(flags) == {
        "xla_tpu_scoped_vmem_limit_kib": 65536,
        "xla_tpu_enable_async_collective_fusion": True,
        "x": "a,b",
    }
    assert step_compiler_options(flags, "cpu") == parse_flags(flags)  # explicit: no table involved
    assert format_flags(parse_flags(flags)) == flags  # what --aot prints and MaxText is given


@pytest.mark.parametrize("flag", ["xla_tpu_scoped_vmem_limit_kib=1", "--no_value", "--=3"])
def test_a_malformed_flag_is_named_with_the_form_it_needs(flag):
    with pytest.raises(ValueError, match=rf"training.compiler_options: '{flag}' is not --name=value"):
        parse_flags(flag)


def test_the_config_refuses_a_malformed_flag_before_anything_runs():
    from cft_jax.config import ConfigError, build_config

    model = {"model": {"init_config": {"num_hidden_layers": 1}}}
    assert build_config(model).training.compiler_options == "auto"
    with pytest.raises(ConfigError, match=r"training.compiler_options: 'vmem=1' is not --name=value"):
        build_config(model, ["--config.training.compiler_options=vmem=1"])
