"""model_101A: ResNeXt-101 IBN-a encoder, IBN/SE decoder (SPEC 3.6); the original schedule."""
from salt_jax import configlib


def get_config():
  config = configlib.base_config()
  config.model = "model_101A"
  return config
