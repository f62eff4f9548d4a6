"""cpu_small: the quick start on a 2-core laptop (fold 0 in ~30-40 min).

Until the budget recipe of docs/recipes.md replaces it, this is `configs/tiny.py`: model_tiny on the
faithful recipe, shortened (one warm-up epoch and two 4-epoch cycles, ~21 training images/s on 2 idle
cores).
"""
import pathlib

from salt_jax import configlib


def get_config():
  return configlib.load_config_file(pathlib.Path(__file__).with_name("tiny.py"))
