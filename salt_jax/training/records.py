"""The records of a training run: one line per fold and epoch on the console, each fold's history.jsonl
and its TensorBoard scalars (`tensorboard --logdir runs`). Only process 0 writes files."""
from typing import Any, Dict, List, Sequence

import jax
import numpy as np
from absl import logging

from salt_jax import errors, fileio
from salt_jax.workdir import rundir


class Diverged(errors.Refusal, FloatingPointError):
  """A non-finite loss: the run stops at the first one (e.g. a learning rate too high to train)."""


def epoch_record(metrics: Dict[str, np.ndarray], fold: int, epoch: int, first_step: int) -> Dict[str, float]:
  """Epoch means (float64) of a fold's per-step metrics {name: (steps,)}; stops the run at the first
  non-finite loss."""
  bad = np.flatnonzero(~np.isfinite(metrics["loss"]))
  if bad.size:
    raise Diverged(
        f"non-finite training loss ({metrics['loss'][bad[0]]}) at step {first_step + int(bad[0])} "
        f"(fold {fold}, epoch {epoch}, batch {int(bad[0])}); the last saved checkpoint precedes it")
  return {k: float(np.mean(np.asarray(v, np.float64))) for k, v in metrics.items()}


def epoch_message(fold: int, record: Dict[str, Any], total: int) -> str:
  stage = "warm-up" if record["cycle"] is None else f"cycle {record['cycle']}"
  msg = (f"fold {fold} epoch {record['epoch'] + 1}/{total} {stage} loss {record['loss']:.4f} "
         f"lr {record['lr']:.6f} {record['images_per_s']:.1f} img/s")
  if "val_map" in record:
    msg += (f" | val loss {record['val_loss']:.4f} mAP {record['val_map']:.4f} "
            f"@ {record['val_threshold']:+.4f}")
  return msg


class MetricsWriter:
  """Console, history.jsonl and TensorBoard for the folds of one run."""

  def __init__(self, run: rundir.RunDir, folds: Sequence[int], total_epochs: int):
    self._run, self._total = run, total_epochs
    self._writers = {}
    if jax.process_index() == 0:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._writers = {k: SummaryWriter(str(run.tb_dir(k))) for k in folds}

  def write(self, fold: int, history: List[Dict[str, Any]]) -> None:
    """Logs the newest record of a fold, adds its scalars to TensorBoard and rewrites history.jsonl."""
    record = history[-1]
    logging.info(epoch_message(fold, record, self._total))
    writer = self._writers.get(fold)
    if writer is None:
      return
    for k, v in record.items():
      if isinstance(v, float):
        writer.add_scalar(k, v, record["epoch"])
    writer.flush()
    fileio.write_jsonl(self._run.history_jsonl(fold), history)

  def close(self) -> None:
    for writer in self._writers.values():
      writer.close()
