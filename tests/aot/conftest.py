"""What the compile-ahead tests share: a tiny decoder fit for every kernel, and readings of compiled HLO."""

from __future__ import annotations

from cft_jax.aot.hlo import collectives
from cft_jax.models.config import ModelConfig

# head_dim 128: splash (TPU) and pallas_gpu both take it; 4 heads split over tensor=2; vocab 1000 is
# not a multiple of the loss's 384-column chunks, so the remainder chunk is compiled too.
TINY = {
    "model_type": "qwen2",
    "vocab_size": 1000,
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 128,
    "tie_word_embeddings": False,
}


SEQ = 640  # a length no weight has as a dimension: an array with it is an activation


def largest_all_reduce_elements(hlo_text: str) -> int:
    """The most elements any all-reduce of the program sums across devices (0 if none)."""
    return max((c.elements for c in collectives(hlo_text) if c.kind == "all-reduce"), default=0)


def activation_all_reduces(hlo_text: str, seq_len: int = SEQ) -> list[str]:
    """The all-reduces of arrays with a sequence dimension: activations summed across devices."""
    return [c.name for c in collectives(hlo_text) if c.kind == "all-reduce" and seq_len in c.shape]


def weight_all_gathers(hlo_text: str, model: ModelConfig, tensor: int) -> bool:
    """Whether the program all-gathers a layer's MLP and q weights whole over the FSDP axis (their
    tensor-parallel share): the mark of FSDP, which gathers weights instead of reducing activations."""
    gathered = {c.elements for c in collectives(hlo_text) if c.kind == "all-gather"}
    mlp = model.hidden_size * model.intermediate_size // tensor
    q = model.hidden_size * model.num_heads * model.head_dim // tensor
    return mlp in gathered and q in gathered
