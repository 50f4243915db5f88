"""Evaluation side tool: the math test sets, prompts, generation backends, the grader, reports.

It never imports JAX: it reads HF checkpoint directories and writes JSONL (`cft_jax.schema`).
Heavy dependencies (torch, vLLM, openai, sympy) are imported only where they are used.
"""
