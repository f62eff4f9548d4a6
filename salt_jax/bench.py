"""Speed of the hot paths: `python -m salt_jax.bench` (salt_jax.tools.bench)."""
from salt_jax import cli
from salt_jax.tools import bench

if __name__ == "__main__":
  cli.run(bench.main, bench.define_flags, prog="salt_jax.bench")
