"""model_34: ResNet-34 encoder, hypercolumn decoder (SPEC 3.4); the original schedule."""
from salt_jax import configlib


def get_config():
  config = configlib.base_config()
  config.model = "model_34"
  return config
