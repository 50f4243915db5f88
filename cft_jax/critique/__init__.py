"""Critique data construction: sample solutions, ask teacher models, filter, build CFT data.

A side tool: it never imports JAX. `python -m cft_jax.critique --help` lists the commands; the
records it reads and writes are those of `cft_jax.schema`.
"""
