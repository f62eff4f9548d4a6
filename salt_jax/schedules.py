"""Epoch bookkeeping, learning-rate schedules and the optimiser (SPEC 5).

Epochs are 0-based global indices: epochs 0..warmup_epochs-1 are the BCE+Dice warm-up, then cycle c covers
epochs warmup_epochs + c*cycle_len ... + cycle_len - 1. The learning rate is an optax schedule inside the
optimiser, evaluated in the train step from the optimiser's step count and the fold's steps per epoch
(which lives in the optimiser state, so folds trained together each follow their own epochs); the host
never writes it.

`lr_schedule` (the config's optim section):
  restarts       SPEC 5: lr during the warm-up, then per epoch eta_min + (lr-eta_min)/2 (1 + cos(pi t/T)).
  warmup_cosine  linear warm-up over lr_warmup_epochs, then cosine decay to eta_min at the end of the run.
  warmup_linear  the same with a linear decay.
The last two change every step (epochs counted fractionally), so a run of a few epochs still anneals.
"""
import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

LR_SCHEDULES = ("restarts", "warmup_cosine", "warmup_linear")
OPTIMIZERS = ("sgd", "adamw")
# (count, steps_per_epoch) -> learning rate; both int32 scalars inside the step.
EpochSchedule = Callable[[jax.Array, jax.Array], jax.Array]


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
  """SPEC 5's learning rate for a global epoch: lr during warm-up, then eta_min + (lr-eta_min)/2 (1 +
  cos(pi t/T)), t = e + 1 for the epoch e within the cycle (each cycle runs t = 1..T, so it starts just
  below lr and its last epoch is exactly eta_min), T = cycle_len."""
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


def run_epochs(optim) -> int:
  """Epochs of a run: the warm-up and every cycle (`optim`: the config's optim section)."""
  return total_epochs(optim.warmup_epochs, optim.cycle_num, optim.cycle_len)


def restarts_schedule(optim) -> EpochSchedule:
  """SPEC 5's per-epoch rates (float32 of lr_at_epoch), looked up by the step's epoch count // spe."""
  table = np.asarray([lr_at_epoch(e, lr=optim.lr, eta_min=optim.eta_min, warmup_epochs=optim.warmup_epochs,
                                  cycle_len=optim.cycle_len) for e in range(run_epochs(optim))], np.float32)
  return lambda count, steps_per_epoch: jnp.asarray(table)[jnp.minimum(count // steps_per_epoch,
                                                                       len(table) - 1)]


def warmup_decay_schedule(optim, decay: str) -> EpochSchedule:
  """optax's warm-up + cosine (or linear) decay to eta_min over the whole run, in fractional epochs
  count / steps_per_epoch: the rate changes every step."""
  total, warmup = run_epochs(optim), min(optim.lr_warmup_epochs, run_epochs(optim))
  if decay == "cosine":
    fn = optax.warmup_cosine_decay_schedule(0.0, optim.lr, warmup, total, end_value=optim.eta_min)
  else:
    fn = optax.join_schedules([optax.linear_schedule(0.0, optim.lr, warmup),
                               optax.linear_schedule(optim.lr, optim.eta_min, total - warmup)], [warmup])
  return lambda count, steps_per_epoch: fn(count / steps_per_epoch)


def epoch_schedule(optim) -> EpochSchedule:
  """The (count, steps_per_epoch) -> learning rate function that optim.lr_schedule names."""
  if optim.lr_schedule == "restarts":
    return restarts_schedule(optim)
  if optim.lr_schedule in ("warmup_cosine", "warmup_linear"):
    return warmup_decay_schedule(optim, optim.lr_schedule.split("_")[1])
  raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {optim.lr_schedule!r}")


class _ScheduleState(NamedTuple):
  count: jax.Array            # () int32: optimiser updates so far
  steps_per_epoch: jax.Array  # () int32: the fold's


class FoldSchedule(optax.schedules.StatefulSchedule):
  """An EpochSchedule as an optax stateful schedule whose state carries the fold's steps per epoch."""

  def __init__(self, fn: EpochSchedule, steps_per_epoch: int):
    self._fn, self._steps_per_epoch = fn, steps_per_epoch

  def init(self) -> _ScheduleState:
    return _ScheduleState(jnp.zeros([], jnp.int32), jnp.asarray(self._steps_per_epoch, jnp.int32))

  def update(self, state: _ScheduleState, **extra_args) -> _ScheduleState:
    del extra_args
    return state._replace(count=optax.safe_increment(state.count))

  def __call__(self, state: _ScheduleState, **extra_args) -> jax.Array:
    del extra_args
    return self._fn(state.count, state.steps_per_epoch)


def _sgd(learning_rate, momentum: float, weight_decay: float) -> optax.GradientTransformation:
  """PyTorch SGD: momentum, dampening 0, coupled L2 on all parameters (buf = m*buf + (g + wd*w), buf = g +
  wd*w on the first step, w -= lr*buf)."""
  return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate, momentum=momentum))


def _adamw(learning_rate, weight_decay: float) -> optax.GradientTransformation:
  return optax.adamw(learning_rate, weight_decay=weight_decay)


def make_optimizer(optim, steps_per_epoch: int) -> optax.GradientTransformation:
  """The config's optim section -> optim.optimizer (sgd: SPEC 5's; adamw: decoupled weight decay) driven
  by optim.lr_schedule.

  The rate used by the last update is opt_state.hyperparams["learning_rate"] (float32 scalar).
  """
  schedule = FoldSchedule(epoch_schedule(optim), steps_per_epoch)
  if optim.optimizer == "sgd":
    sgd = optax.inject_hyperparams(_sgd, static_args=("momentum", "weight_decay"), hyperparam_dtype=jnp.float32)
    return sgd(learning_rate=schedule, momentum=optim.momentum, weight_decay=optim.weight_decay)
  if optim.optimizer == "adamw":
    adamw = optax.inject_hyperparams(_adamw, static_args=("weight_decay",), hyperparam_dtype=jnp.float32)
    return adamw(learning_rate=schedule, weight_decay=optim.weight_decay)
  raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optim.optimizer!r}")


def learning_rate(opt_state) -> jax.Array:
  """The learning rate of the optimiser's last update (before any: of its first), float32 scalar."""
  return opt_state.hyperparams["learning_rate"]
