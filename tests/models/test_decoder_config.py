"""`ModelConfig` reads HF configs of both transformers generations and refuses what it cannot reproduce."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from cft_jax.models import ConfigError, ModelConfig  # noqa: E402

LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 112,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 128,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    },
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": [2, 3],
}


def test_v4_and_v5_rope_keys_read_the_same():
    v5 = {k: v for k, v in LLAMA.items() if k not in ("rope_theta", "rope_scaling")}
    v5["rope_parameters"] = {**LLAMA["rope_scaling"], "rope_theta": LLAMA["rope_theta"]}
    assert ModelConfig.from_hf(v5) == ModelConfig.from_hf(LLAMA)
    legacy = {**LLAMA, "rope_scaling": {"type": "linear", "factor": 2.0}}
    assert ModelConfig.from_hf(legacy).rope_scaling == {"rope_type": "linear", "factor": 2.0}


def test_reads_a_checkpoint_directory_and_round_trips_through_to_hf(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA))
    config = ModelConfig.from_hf(tmp_path)
    assert (config.head_dim, config.num_kv_heads, config.eos_token_id) == (16, 2, (2, 3))
    assert ModelConfig.from_hf(config.to_hf()) == config


@pytest.mark.parametrize("config_class", ["LlamaConfig", "Qwen2Config", "Qwen3Config"])
def test_transformers_reads_to_hf_into_the_same_model(config_class):
    import transformers

    hf = getattr(transformers, config_class)(
        vocab_size=256, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
    )  # fmt: skip
    ours = ModelConfig.from_hf(hf.to_dict())
    reread = getattr(transformers, config_class)(**ours.to_hf())
    assert ModelConfig.from_hf(reread.to_dict()) == ours
    model = transformers.AutoModelForCausalLM.from_config(hf)
    assert ours.num_params() == sum(p.numel() for p in model.parameters())


def test_flops_per_token_counts_matmuls_and_causal_attention():
    config = ModelConfig.from_hf(LLAMA)
    d, f, layers = 64, 112, 2
    matmuls = layers * (d * 64 * 2 + d * 32 * 2 + 3 * d * f) + d * 256
    assert config.flops_per_token(100) == 6 * matmuls + 3 * 4 * 100 * 64 * layers / 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"model_type": "mistral"}, "model_type"),
        ({"architectures": ["LlamaForSequenceClassification"]}, "architectures"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling.rope_type='yarn'"),
        ({"rope_scaling": {"rope_type": "mystery"}}, "rope_scaling.rope_type='mystery'"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "low_freq_factor"),
        ({"rope_scaling": None, "partial_rotary_factor": 0.5}, "partial_rotary_factor"),
        ({"use_sliding_window": True, "sliding_window": 32}, "use_sliding_window"),
        ({"mlp_bias": True}, "mlp_bias"),
        ({"attention_bias": True}, "attention_bias"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"attention_dropout": 0.1}, "attention_dropout"),
        ({"num_key_value_heads": 3}, "num_key_value_heads"),
    ],
)
def test_unsupported_config_is_refused_naming_the_field(change, field, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**LLAMA, **change}))
    with pytest.raises(ConfigError, match=field.replace("[", r"\[")) as error:
        ModelConfig.from_hf(path)
    assert str(path) in str(error.value)


def test_a_sliding_window_as_wide_as_the_context_is_accepted():
    qwen2 = {**LLAMA, "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "rope_scaling": None}
    config = ModelConfig.from_hf({**qwen2, "use_sliding_window": True, "sliding_window": 128})
    assert config.attention_bias


def test_config_with_rope_scaling_is_hashable_so_jit_can_cache_the_model():
    config = ModelConfig.from_hf(LLAMA)
    assert hash(config) == hash(ModelConfig.from_hf(config.to_hf()))
