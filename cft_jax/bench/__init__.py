"""Benchmarks: `python -m cft_jax.bench train --config FILE` times our step vs transformers + torch."""
