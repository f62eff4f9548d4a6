"""model_50A_slim: SE-ResNeXt-50 encoder, slim bottleneck hypercolumn decoder (SPEC 3.5); the original schedule."""
from salt_jax import configlib


def get_config():
  config = configlib.base_config()
  config.model = "model_50A_slim"
  return config
