"""Epoch schedule and optimiser (SPEC 5): warm-up at constant lr, then cosine cycles (SGDR), SGD momentum.

Epochs are 0-based global indices: epochs 0..warmup_epochs-1 are the BCE+Dice warm-up, then cycle c covers
epochs warmup_epochs + c*cycle_len ... + cycle_len - 1. The learning rate is set once per epoch, from the
host, through the injected hyperparameter (no recompilation).
"""
import math
from typing import Optional

import jax.numpy as jnp
import optax


def cycle_of_epoch(epoch: int, warmup_epochs: int, cycle_len: int) -> Optional[int]:
  """0-based cycle of a global epoch; None during the warm-up."""
  if epoch < warmup_epochs:
    return None
  return (epoch - warmup_epochs) // cycle_len


def epoch_in_cycle(epoch: int, warmup_epochs: int, cycle_len: int) -> Optional[int]:
  """0-based epoch within its cycle (e = 0..cycle_len-1); None during the warm-up."""
  if epoch < warmup_epochs:
    return None
  return (epoch - warmup_epochs) % cycle_len


def total_epochs(warmup_epochs: int, cycle_num: int, cycle_len: int) -> int:
  """Warm-up plus all cycles (10 + 7*50 = 360 for the faithful settings)."""
  return warmup_epochs + cycle_num * cycle_len


def lr_at_epoch(epoch: int, *, lr: float, eta_min: float, warmup_epochs: int, cycle_len: int) -> float:
  """Learning rate for a global epoch: lr during warm-up, then eta_min + (lr-eta_min)/2 (1 + cos(pi t/T)).

  t = e + 1 for the epoch e within the cycle (SPEC 5: each cycle runs t = 1..T, so it starts just below lr
  and its last epoch is exactly eta_min), T = cycle_len.
  """
  e = epoch_in_cycle(epoch, warmup_epochs, cycle_len)
  if e is None:
    return float(lr)
  t = e + 1
  return float(eta_min + 0.5 * (lr - eta_min) * (1.0 + math.cos(math.pi * t / cycle_len)))


def is_eval_epoch(epoch: int, *, warmup_epochs: int, cycle_len: int, eval_start: int = 20,
                  eval_every: int = 5) -> bool:
  """Validate after this epoch? (e+1) >= eval_start and (e+1) % eval_every == 0, never during warm-up.

  The faithful settings give epochs 20, 25, ..., 50 of every cycle (7 per cycle).
  """
  e = epoch_in_cycle(epoch, warmup_epochs, cycle_len)
  if e is None:
    return False
  return (e + 1) >= eval_start and (e + 1) % eval_every == 0


def _sgd_coupled_decay(learning_rate, momentum: float, weight_decay: float) -> optax.GradientTransformation:
  return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate, momentum=momentum))


def make_optimizer(*, lr: float, momentum: float = 0.9, weight_decay: float = 2e-4
                   ) -> optax.GradientTransformation:
  """PyTorch SGD (momentum, dampening 0, coupled L2 on all parameters) with an injectable learning rate.

  Matches torch: buf = m*buf + (g + wd*w) (buf = g + wd*w on the first step), w -= lr*buf. The learning
  rate lives in opt_state.hyperparams["learning_rate"] (float32 scalar); momentum and weight decay are
  static.
  """
  return optax.inject_hyperparams(_sgd_coupled_decay, static_args=("momentum", "weight_decay"),
                                  hyperparam_dtype=jnp.float32)(
      learning_rate=lr, momentum=momentum, weight_decay=weight_decay)


def set_learning_rate(opt_state, lr: float):
  """A copy of an inject_hyperparams state with a new learning rate (same dtype and shape: no re-jit; a
  fold-parallel state's (F,) rate gets lr for every fold)."""
  old = opt_state.hyperparams["learning_rate"]
  hyperparams = dict(opt_state.hyperparams)
  hyperparams["learning_rate"] = jnp.full(old.shape, lr, dtype=old.dtype)
  return opt_state._replace(hyperparams=hyperparams)
