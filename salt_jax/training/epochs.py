"""One epoch of every fold of a run as compiled calls: the epoch's sample rows, the idle-step masks, the
chunks of steps per call and a cache of the compiled fold-parallel train steps.

The training tiles live on the devices (`data`, the whole train set then the pseudo-labelled tiles); an
epoch sends only each fold's rows into them, (F, steps, batch) int32.
"""
import time
from typing import Callable, Dict, List, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from salt_jax import configlib, parallel, schedules
from salt_jax.data import augment, pseudo
from salt_jax.training import steps


def epoch_rows(optim, pseudo_prob: float, fold: int, epoch: int, n_real: int, n_pseudo: int,
               steps_per_epoch: int) -> np.ndarray:
  """(steps_per_epoch, optim.batch_size) int32 sample indices of a fold's epoch: a permutation of the real
  samples seeded by optim.seed, each slot replaced by a pseudo-labelled one with probability pseudo_prob
  (SPEC 9)."""
  epoch_rng = np.random.default_rng([optim.seed, fold, epoch])
  order = epoch_rng.permutation(n_real)
  if n_pseudo:
    order = pseudo.mix_epoch(epoch_rng, order, n_real, n_pseudo, pseudo_prob)
  batch = optim.batch_size
  return order[:steps_per_epoch * batch].reshape(steps_per_epoch, batch).astype(np.int32)


def device_rows(optim, pseudo_prob: float, fold: int, epoch: int, train_rows: np.ndarray, n_all: int,
                n_pseudo: int, steps_per_epoch: int) -> np.ndarray:
  """(steps_per_epoch, batch_size) int32 rows of one fold's epoch into the device-resident data: epoch_rows's
  sample indices mapped through the fold's training rows (pseudo-labelled tiles follow the n_all)."""
  local = epoch_rows(optim, pseudo_prob, fold, epoch, len(train_rows), n_pseudo, steps_per_epoch)
  return np.concatenate([train_rows, n_all + np.arange(n_pseudo)]).astype(np.int32)[local]


def chunks(steps_per_epoch: int, steps_per_call: int) -> List[Tuple[int, int]]:
  """[(first step, number of steps)] of one epoch's compiled calls (steps_per_call 0 = whole epoch)."""
  size = steps_per_call or steps_per_epoch
  return [(a, min(size, steps_per_epoch - a)) for a in range(0, steps_per_epoch, size)]


def seg_loss_of_epoch(optim, cycle_loss: str, epoch: int) -> str:
  """The segmentation loss of an epoch (SPEC 4.5): BCE+Dice in the warm-up (optim.warmup_epochs),
  cycle_loss (the Lovasz hinge in the original) in the cycles."""
  in_warmup = schedules.cycle_of_epoch(epoch, optim.warmup_epochs, optim.cycle_len) is None
  return "bce_dice" if in_warmup else cycle_loss


class EpochRunner:
  """Runs the epochs of folds trained together on the stacked (leading fold axis) train state."""

  def __init__(self, s, folds: Sequence, data: Dict[str, jax.Array], n_pseudo: int, step_key, mesh,
               fold_map: str, on_compile: Callable[[], None]):
    """s: the config's sections (configlib.sections; read: optim, loss, augment, pseudo.pseudo_prob,
    data.input_size, runtime.steps_per_call and .cpu_ynn_fusion); folds: the folds' `train_rows` (n,) and `steps` (per
    epoch); data: the device-resident tiles."""
    self._optim, self._loss, self._pseudo_prob = s.optim, s.loss, s.pseudo.pseudo_prob
    self._jitter = augment.Jitter.of(s.augment)
    self._canvas, self._ynn_fusion = s.data.input_size, s.runtime.cpu_ynn_fusion
    self._folds, self._data, self._key = list(folds), data, step_key
    self._n_all, self._n_pseudo = len(data["image"]) - n_pseudo, n_pseudo
    self._mesh, self._fold_map, self._on_compile = mesh, fold_map, on_compile
    self._max_steps = max(f.steps for f in self._folds)
    self._chunks = chunks(self._max_steps, s.runtime.steps_per_call)
    self._compiled = {}

  def run(self, state, epoch: int, training: Sequence[bool]):
    """Trains the folds whose `training` is True for one epoch (the others idle: masked steps leave their
    state unchanged). Returns the new state and each fold's per-step metrics {name: (steps,)} (None for
    an idling fold)."""
    rows, active = self._rows(epoch, training)
    seg_loss, per_call = seg_loss_of_epoch(self._optim, self._loss.cycle_loss, epoch), []
    for start, n in self._chunks:
      fn = self._fn(state, seg_loss, n, active is not None)
      chunk = (rows[:, start:start + n],) + (() if active is None else (active[:, start:start + n],))
      rows_chunk, *active_chunk = parallel.put_global(chunk, parallel.fold_sharded(self._mesh))
      state, metrics = fn(state, self._data, rows_chunk, self._key, *active_chunk)
      per_call.append(metrics)
    per_call = jax.device_get(per_call)
    out = []
    for i, (f, on) in enumerate(zip(self._folds, training)):
      out.append({k: np.concatenate([np.asarray(m[k][i]) for m in per_call])[:f.steps] for k in per_call[0]}
                 if on else None)
    return state, out

  def _rows(self, epoch: int, training: Sequence[bool]):
    """(F, max_steps, batch) rows (idle steps read row 0) and the (F, max_steps) bool mask of the steps
    that train (None when every step of every fold does)."""
    rows = np.zeros((len(self._folds), self._max_steps, self._optim.batch_size), np.int32)
    active = np.zeros((len(self._folds), self._max_steps), bool)
    for i, (f, on) in enumerate(zip(self._folds, training)):
      if on:
        rows[i, :f.steps] = device_rows(self._optim, self._pseudo_prob, f.index, epoch, f.train_rows,
                                        self._n_all, self._n_pseudo, f.steps)
        active[i, :f.steps] = True
    return rows, None if active.all() else active

  def _fn(self, state, seg_loss: str, n_steps: int, masked: bool):
    """The compiled fold-parallel train steps for one loss, number of steps per call and masking."""
    key = (seg_loss, n_steps, masked)
    if key not in self._compiled:
      t0, by_fold, n_folds = time.perf_counter(), parallel.fold_sharded(self._mesh), len(self._folds)
      spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=by_fold)
      rows_spec = spec((n_folds, n_steps, self._optim.batch_size), jnp.int32)
      active_spec = spec((n_folds, n_steps), jnp.bool_) if masked else None
      self._compiled[key] = steps.compile_fold_train_steps(
          state, self._data, rows_spec, self._key, active_spec, mesh=self._mesh, fold_map=self._fold_map,
          seg_loss=seg_loss, loss_weights=configlib.loss_weights(self._loss), canvas=self._canvas,
          loss_on_tile=self._loss.loss_on_tile, jitter=self._jitter, compiler_options=steps.train_compiler_options(self._ynn_fusion))
      logging.info("compiled %d %s train steps of %d fold(s) per call%s in %.1f s", n_steps, seg_loss,
                   n_folds, " (masked)" if masked else "", time.perf_counter() - t0)
      self._on_compile()
    return self._compiled[key]
