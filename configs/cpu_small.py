"""cpu_small: a reduced model and schedule that trains usefully on a 2-core laptop (fold 0 in ~30 min).

Same pipeline as the faithful configs (warm-up, cosine restarts, snapshots, TTA validation) with a
quarter-width ResNet-18-style encoder and a narrow hypercolumn decoder (`model_tiny`, about 1/20 of
model_34's FLOPs: ~15 training images/s on 2 cores), one warm-up epoch and two 4-epoch cycles
validated after epochs 2, 3 and 4 of each cycle.
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
