"""model_50A: SE-ResNeXt-50 encoder, hypercolumn decoder (SPEC 3.4); the original schedule."""
from salt_jax import configlib


def get_config():
  config = configlib.base_config()
  config.model = "model_50A"
  return config
