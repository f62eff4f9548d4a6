"""Train one model: `python -m salt_jax.train --config=... --workdir=...` (salt_jax.training.train)."""
from salt_jax import cli
from salt_jax.training import train

if __name__ == "__main__":
  cli.run(train.main, train.define_flags, prog="salt_jax.train")
