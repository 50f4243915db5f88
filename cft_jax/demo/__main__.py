"""`python -m cft_jax.demo`: see `cft_jax.demo.run`."""

from cft_jax.demo.run import main
from cft_jax.errors import run_cli

run_cli(main)
