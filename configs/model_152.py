"""model_152: SE-ResNet-152 encoder, slim bottleneck hypercolumn decoder (SPEC 3.5); the original schedule."""
from salt_jax import configlib


def get_config():
  config = configlib.base_config()
  config.model = "model_152"
  return config
