"""Batched, jitted, data-parallel flip-TTA inference over arrays of 101x101 tiles (SPEC 6.3)."""
from typing import Dict, Optional, Tuple

import jax
import numpy as np
import tqdm
from jax.experimental import multihost_utils

from salt_jax import metrics, parallel, steps


class Predictor:
  """Flip-TTA logits and per-image Lovasz losses for whole arrays, sharded over every device."""

  def __init__(self, apply_fn, mesh, batch_size: int):
    parallel.check_batch_size(batch_size, mesh)
    self._batch_size = batch_size
    self._sharding = parallel.batch_sharded(mesh)
    self._fn = jax.jit(lambda v, b: steps.eval_step(apply_fn, v, b),
                       in_shardings=(parallel.replicated(mesh), self._sharding),
                       out_shardings=(self._sharding, self._sharding))

  def logits_and_losses(self, variables, images: np.ndarray, masks: Optional[np.ndarray] = None,
                        desc: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(N,101,101) uint8 tiles -> (N,101,101) float32 logits, (N,) losses (zeros-mask losses if None).

    The last batch is padded by repeating its last row; padded rows are dropped from the result.
    """
    n, bs = len(images), self._batch_size
    if masks is None:
      masks = np.zeros_like(images)
    out_logits, out_losses = [], []
    starts = range(0, n, bs)
    for start in tqdm.tqdm(starts, desc=desc, disable=None if desc else True, leave=False, unit="batch"):
      rows = np.arange(start, start + bs).clip(max=n - 1)[parallel.host_slice(bs)]
      batch = parallel.to_global({"image": images[rows], "mask": masks[rows]}, self._sharding)
      logits, losses = self._fn(variables, batch)
      if jax.process_count() > 1:
        logits, losses = multihost_utils.process_allgather((logits, losses), tiled=True)
      out_logits.append(np.asarray(logits))
      out_losses.append(np.asarray(losses))
    return np.concatenate(out_logits)[:n], np.concatenate(out_losses)[:n]

  def validate(self, variables, images: np.ndarray, masks: np.ndarray) -> Dict[str, float]:
    """Validation loss (mean per-image Lovasz on the crop), best mAP and its logit threshold (SPEC 6.2)."""
    logits, losses = self.logits_and_losses(variables, images, masks)
    best_map, best_thr = metrics.best_threshold(logits, masks)
    return {"val_loss": float(np.mean(losses)), "val_map": float(best_map), "val_threshold": float(best_thr)}
