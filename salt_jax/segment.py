"""Segment whole seismic sections: `python -m salt_jax.segment` (salt_jax.seismic.segment)."""
from salt_jax import cli
from salt_jax.seismic import segment

if __name__ == "__main__":
  cli.run(segment.main, segment.define_flags, prog="salt_jax.segment")
