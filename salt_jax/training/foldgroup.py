"""The folds of one training run: each fold's data selection, checkpoints, per-cycle bests and history,
and the resume policy that brings them to a common epoch.

A fold is an int. Folds trained together resume from their own latest states; a fold that is ahead (a
kill -9 between the folds' saves, or a fold trained alone before) idles until the others catch up, so
no fold's progress is ever discarded to line them up.
"""
import dataclasses
import math
from typing import Any, Callable, Dict, List, Optional

import numpy as np
from absl import logging

from salt_jax import configlib, schedules
from salt_jax.training import records, steps
from salt_jax.workdir import checkpoints, rundir


@dataclasses.dataclass
class Fold:
  """One fold: its rows into the train set, validation tiles, checkpoints and records."""
  index: int
  train_rows: np.ndarray        # (n,) its training samples' rows into the train set
  valid_images: np.ndarray      # (V,101,101) uint8
  valid_masks: np.ndarray
  steps: int                    # steps per epoch
  latest: checkpoints.LatestCheckpoint
  done: int = -1                # last finished epoch (-1: none)
  bests: Dict[str, Dict[str, float]] = dataclasses.field(default_factory=dict)  # {cycle: {kind: value}}
  history: List[Dict[str, Any]] = dataclasses.field(default_factory=list)


def update_bests(bests: Dict[str, Dict[str, float]], cycle: int, result: Dict[str, float]) -> List[str]:
  """Which snapshot kinds this evaluation improves (strictly; the first of a cycle always does)."""
  best = bests.setdefault(str(cycle), {"max_map": -math.inf, "min_loss": math.inf})
  kinds = []
  if result["val_map"] > best["max_map"]:
    best["max_map"] = result["val_map"]
    kinds.append("max_map")
  if result["val_loss"] < best["min_loss"]:
    best["min_loss"] = result["val_loss"]
    kinds.append("min_loss")
  return kinds


class FoldGroup:
  """The folds of one run trained together in one run directory."""

  def __init__(self, s, folds: List[int], run: rundir.RunDir, samples):
    """s: the config's sections (configlib.sections; read: data, optim, model.model,
    eval.keep_min_loss, runtime.keep_checkpoints); folds: configlib.fold_list(config)."""
    self.s, self.run = s, run
    self.total = schedules.run_epochs(s.optim)
    self.folds = [self._make_fold(k, samples) for k in folds]
    self.todo: List[Fold] = []

  def _make_fold(self, fold: int, samples) -> Fold:
    train_idx, valid_idx = self.run.fold_rows(self.s.data, fold, samples.ids, samples.masks, self.s.optim.seed)
    batch = self.s.optim.batch_size
    steps = len(train_idx) // batch
    if steps == 0:
      raise configlib.ConfigError(f"fold {fold} has {len(train_idx)} training images, fewer than one batch "
                                  f"(config.batch_size={batch})")
    latest = checkpoints.LatestCheckpoint(self.run.checkpoints_dir(fold),
                                          self.run.corrupt_checkpoints_dir(fold),
                                          keep=self.s.runtime.keep_checkpoints)
    logging.info("fold %d: %d train images (%d steps of %d), %d validation images", fold, len(train_idx),
                 steps, batch, len(valid_idx))
    return Fold(fold, train_idx, samples.images[valid_idx], samples.masks[valid_idx], steps, latest)

  def restore(self, abstract) -> List[Optional[Any]]:
    """Loads each fold's latest readable state, bests and history; sets `todo` (the folds still to
    train) and returns their restored states (None: start from the initial state)."""
    states = {}
    for f in self.folds:
      restored = f.latest.restore_latest(abstract)
      if restored is not None:
        f.done, states[f.index], loop = restored
        f.bests = loop["bests"]
      if f.done >= 0:
        f.history = [r for r in self.run.history(f.index) if r["epoch"] <= f.done]
    self.todo = [f for f in self.folds if f.done < self.total - 1]
    for f in self.folds:
      if f not in self.todo:
        logging.info("fold %d already trained all %d epochs", f.index, self.total)
      elif f.done >= 0:
        logging.info("resuming fold %d after epoch %d", f.index, f.done)
    ahead = [f for f in self.todo if f.done > self.start_epoch - 1]
    for f in ahead:
      logging.info("fold %d is after epoch %d: it idles until the others catch up", f.index, f.done)
    return [states.get(f.index) for f in self.todo]

  @property
  def start_epoch(self) -> int:
    return min(f.done for f in self.todo) + 1 if self.todo else self.total

  def training(self, epoch: int) -> List[bool]:
    """Which folds of `todo` train this epoch (the others are ahead and idle)."""
    return [f.done == epoch - 1 for f in self.todo]

  def end_epoch(self, f: Fold, epoch: int, state, record: Dict[str, Any],
                validate: Optional[Callable[[Any], Dict[str, float]]]) -> Dict[str, Any]:
    """Validates (when asked) and keeps the snapshots it improves, saves the state (asynchronously: the
    next epoch does not wait for the disk) and appends the record to the fold's history."""
    cycle = record["cycle"]
    if validate is not None:
      variables = steps.eval_variables(state)
      result = validate(variables)
      if not np.isfinite(result["val_loss"]):
        raise records.Diverged(f"non-finite validation loss after epoch {epoch} (fold {f.index})")
      record.update(result)
      for kind in update_bests(f.bests, cycle, result):
        if kind == "min_loss" and not self.s.eval.keep_min_loss:
          continue
        meta = dict(result, epoch=epoch, cycle=cycle, fold=f.index, model=self.s.model.model, kind=kind)
        checkpoints.save_snapshot(self.run.snapshot_dir(f.index, cycle, kind), variables, meta)
    f.latest.save(epoch, state, {"bests": f.bests})
    f.done = epoch
    f.history.append(record)
    return record

  def close(self) -> None:
    for f in self.folds:
      f.latest.wait()
      f.latest.close()

  def summary(self) -> Dict[int, Dict[str, Any]]:
    return {f.index: {"history": f.history, "bests": f.bests} for f in self.folds}
