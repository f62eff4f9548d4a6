"""tiny: `model_tiny` on the faithful recipe, shortened; the small, stable config of the tests and smoke runs.

The faithful pipeline (SGD, a BCE+Dice warm-up at constant lr, cosine restarts, snapshots, TTA
validation) with a quarter-width ResNet-18-style encoder and a narrow hypercolumn decoder (`model_tiny`,
about 1/20 of model_34's FLOPs): one warm-up epoch and two 4-epoch cycles validated after epochs 2, 3
and 4 of each cycle. This was cpu_small before that became the budget recipe (docs/recipes.md).
"""
from salt_jax import configlib


def get_config():
  config = configlib.base_config()
  config.model = "model_tiny"
  config.batch_size = 16
  config.warmup_epochs = 1
  config.cycle_num = 2
  config.cycle_len = 4
  config.eval_start = 2
  config.eval_every = 1
  config.eval_batch_size = 64
  return config
