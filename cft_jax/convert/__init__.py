"""Checkpoint conversion: HF safetensors <-> Orbax, and GGUF -> HF (`python -m cft_jax.convert`)."""
