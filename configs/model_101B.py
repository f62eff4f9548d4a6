"""model_101B: SE-ResNeXt-101 encoder, IBN/SE decoder (SPEC 3.6); the original schedule."""
from salt_jax import configlib


def get_config():
  config = configlib.base_config()
  config.model = "model_101B"
  return config
