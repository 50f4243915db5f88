"""Entry point of the evaluation side tool: `python -m cft_jax.eval generate|grade|report|select`."""

from cft_jax.errors import run_cli
from cft_jax.evaluation.cli import main

if __name__ == "__main__":
    run_cli(main)
