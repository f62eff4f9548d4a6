"""Check a GPU or TPU host in one go: `python -m salt_jax.accelerator_check --out=DIR`
(salt_jax.tools.accelerator_check)."""
from salt_jax import cli
from salt_jax.tools import accelerator_check

if __name__ == "__main__":
  cli.run(accelerator_check.main, accelerator_check.define_flags, prog="salt_jax.accelerator_check")
