"""model_50: the user's name for model_50A (SE-ResNeXt-50 hypercolumn U-Net)."""
from salt_jax import configlib


def get_config():
  config = configlib.base_config()
  config.model = "model_50A"
  return config
