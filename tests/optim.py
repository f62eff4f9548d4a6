"""Optimisers for step-level tests."""
from salt_jax import configlib, schedules


def constant_sgd(lr: float = 0.01):
  """SPEC 5's SGD (momentum 0.9, coupled L2 2e-4) at a constant rate: the warm-up's, which lasts 10
  epochs of a million steps here."""
  config = configlib.base_config()
  config.lr = lr
  return schedules.make_optimizer(config, steps_per_epoch=10**6)
