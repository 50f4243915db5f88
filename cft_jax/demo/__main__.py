"""`python -m cft_jax.demo`: see `cft_jax.demo.run`."""

from cft_jax.demo.run import main

main()
