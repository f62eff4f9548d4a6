"""cpu_small: a reduced model and schedule that trains usefully on a 2-core laptop (fold 0 in ~30 min).

Same pipeline as the faithful configs (warm-up, cosine restarts, snapshots, TTA validation) with a
quarter-width ResNet-18-style encoder and a narrow hypercolumn decoder (`model_tiny`), two short
cycles and validation every other epoch.
"""
from salt_jax import configlib


def get_config():
  config = configlib.base_config()
  config.model = "model_tiny"
  config.batch_size = 16
  config.warmup_epochs = 2
  config.cycle_num = 2
  config.cycle_len = 6
  config.eval_start = 2
  config.eval_every = 2
  config.eval_batch_size = 64
  return config
