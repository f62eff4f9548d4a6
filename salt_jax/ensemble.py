"""Ensemble workdirs' predictions: `python -m salt_jax.ensemble` (salt_jax.inference.ensemble)."""
from salt_jax import cli
from salt_jax.inference import ensemble

if __name__ == "__main__":
  cli.run(ensemble.main, ensemble.define_flags, prog="salt_jax.ensemble")
