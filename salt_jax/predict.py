"""Predict a workdir's snapshots: `python -m salt_jax.predict --workdir=...` (salt_jax.inference.predict)."""
from salt_jax import cli
from salt_jax.inference import predict

if __name__ == "__main__":
  cli.run(predict.main, predict.define_flags, prog="salt_jax.predict")
