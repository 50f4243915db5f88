"""cft_jax: Critique Fine-Tuning in JAX/Flax.

This top-level package imports nothing heavy: the side tools (`cft_jax.critique`,
`cft_jax.evaluation`) must stay importable without JAX, and the JAX core without torch.
"""

__version__ = "0.1.0"
