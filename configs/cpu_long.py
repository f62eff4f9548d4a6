"""cpu_long: the best single model one command trains on 2 CPU cores within 2 hours, fold 0 from random weights.

    python -m salt_jax.train --config=configs/cpu_long.py --workdir=runs/cpu_long --config.fold=0

configs/cpu_small.py (the quick start) at 4x its compute, with the warp that lets the longer runs use it
(docs/recipes.md "The compute curve", issue 41): both phases 4x longer (80 BCE+Dice epochs, then one
80-epoch Lovasz cycle; 160 epochs, 517,120 image-steps on fold 0), validated after the cycle's epochs 56,
64, 72 and 80, and half the training tiles zoomed by up to 10 %, rotated by up to 8 degrees and sheared by
up to 5 (configlib.WARP). Measured: see docs/recipes.md's compute-curve table (`curve_4x_geo_s0` is this
config's run).
"""
import pathlib

from salt_jax import configlib


def get_config():
  config = configlib.load_config_file(pathlib.Path(__file__).with_name("cpu_small.py"))
  config = configlib.stretched(config, 4)
  config.update(configlib.WARP)
  return config
