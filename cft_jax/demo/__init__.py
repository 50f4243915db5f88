"""The main job on an embedded default: real CFT of SmolLM2-135M-Instruct end to end on a CPU.

`python -m cft_jax.demo` (or `bash scripts/demo.sh`) converts the model, splits the shipped
RealCritic critiques by question, measures the base model, trains with `python -m cft_jax.train
--config configs/demo_smollm2.py`, measures the HF export and writes a report. See docs/demo.md.
"""
