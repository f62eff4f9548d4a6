"""`python -m salt_jax.models`: one JSON line per variant with its parameter count and output shapes.

Shapes come from `jax.eval_shape` on a (2,size,size,3) input (--input_size, default the original's 128), so
nothing is allocated or compiled.
"""
import json

import jax
import jax.numpy as jnp
from absl import flags

from salt_jax import cli, geometry
from salt_jax.models import MODELS, get_model, init_variables


def describe(name: str, *, size: int, batch: int = 2) -> dict:
  """{'name', 'params', 'encoder_params', 'class_logits', 'no_empty_logits', 'final_logits'}."""
  model = get_model(name)
  x = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
  variables = jax.eval_shape(lambda: init_variables(model, jax.random.key(0), size=size, batch=batch))
  outs = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  count = lambda tree: int(sum(leaf.size for leaf in jax.tree.leaves(tree)))
  return dict(name=name, params=count(variables["params"]),
              encoder_params=count(variables["params"]["encoder"]),
              **{k: list(o.shape) for k, o in zip(("class_logits", "no_empty_logits", "final_logits"), outs)})


FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_integer("input_size", geometry.CANVAS, "Side of the input the shapes are traced on.",
                       lower_bound=geometry.TILE)


def main(argv) -> list:
  del argv
  rows = [describe(name, size=FLAGS.input_size) for name in MODELS]
  for row in rows:
    print(json.dumps(row), flush=True)
  return rows


if __name__ == "__main__":
  cli.run(main, define_flags, prog="salt_jax.models")
