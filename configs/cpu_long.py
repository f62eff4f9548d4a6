"""cpu_long: the best single model one command trains on 2 CPU cores within 2 hours, fold 0 from random weights.

    python -m salt_jax.train --config=configs/cpu_long.py --workdir=runs/cpu_long --config.fold=0

configs/cpu_small.py (the quick start) at 2x its compute, with the warp that lets the longer run use it
(docs/recipes.md "The compute curve", issue 41): both phases 2x longer (40 BCE+Dice epochs, then one
40-epoch Lovasz cycle; 80 epochs, 258,560 image-steps on fold 0), validated after the cycle's epochs 28,
32, 36 and 40, and half the training tiles zoomed by up to 10 %, rotated by up to 8 degrees and sheared by
up to 5 (configlib.WARP). Measured (`curve_2x_geo_s0`, seed 0): fold-0 validation mAP 0.8191, against
0.8008 for the quick start and 0.8006 for plain 2x on the same host. 4x with the same warp
(`curve_4x_geo_s0` and `curve_4x_geo_s1`, seeds 0 and 1) scored 0.8211 and 0.8186, inside the seeds'
spread, in twice the time: over 2 hours on a Zen 4 EPYC, so 2x is the long recipe. Time: ~42 min on 2
idle Zen 5 EPYC cores at r10's rate, ~65 min on a Zen 4 (estimated from the 4x run's idle epochs, 48.7 s
each).
"""
import pathlib

from salt_jax import configlib


def get_config():
  config = configlib.load_config_file(pathlib.Path(__file__).with_name("cpu_small.py"))
  config = configlib.stretched(config, 2)
  config.update(configlib.WARP)
  return config
