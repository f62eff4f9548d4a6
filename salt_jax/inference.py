"""Batched, jitted, data-parallel flip-TTA inference over arrays of 101x101 tiles (SPEC 6.3)."""
from typing import Dict, NamedTuple, Optional

import jax
import numpy as np
import tqdm
from jax.experimental import multihost_utils

from salt_jax import geometry, metrics, parallel, steps


class Outputs(NamedTuple):
  logits: np.ndarray    # (N,101,101) float32 flip-TTA final logits
  losses: np.ndarray    # (N,) per-image Lovasz loss
  p_empty: np.ndarray   # (N,) the classifier's flip-TTA probability that the tile is empty


class Predictor:
  """Flip-TTA logits and per-image Lovasz losses for whole arrays, sharded over every device."""

  def __init__(self, apply_fn, mesh, batch_size: int, canvas: int = geometry.CANVAS):
    parallel.check_batch_size(batch_size, mesh)
    self._batch_size = batch_size
    self._sharding = parallel.batch_sharded(mesh)
    self._fn = jax.jit(lambda v, b: steps.eval_step(apply_fn, v, b, canvas),
                       in_shardings=(parallel.replicated(mesh), self._sharding),
                       out_shardings=(self._sharding,) * 3)

  def outputs(self, variables, images: np.ndarray, masks: Optional[np.ndarray] = None,
              desc: Optional[str] = None) -> Outputs:
    """(N,101,101) uint8 tiles -> flip-TTA logits (N,101,101) float32, losses (N,) (zeros-mask losses if
    masks is None) and p(empty) (N,).

    The last batch is padded by repeating its last row; padded rows are dropped from the result.
    """
    n, bs = len(images), self._batch_size
    if masks is None:
      masks = np.zeros_like(images)
    parts = []
    for start in tqdm.tqdm(range(0, n, bs), desc=desc, disable=None if desc else True, leave=False,
                           unit="batch"):
      rows = np.arange(start, start + bs).clip(max=n - 1)[parallel.host_slice(bs)]
      batch = parallel.to_global({"image": images[rows], "mask": masks[rows]}, self._sharding)
      out = self._fn(variables, batch)
      if jax.process_count() > 1:
        out = multihost_utils.process_allgather(out, tiled=True)
      parts.append([np.asarray(x) for x in out])
    return Outputs(*(np.concatenate(column)[:n] for column in zip(*parts)))

  def validate(self, variables, images: np.ndarray, masks: np.ndarray) -> Dict[str, float]:
    """Validation loss (mean per-image Lovasz on the crop), best mAP and its logit threshold (SPEC 6.2)."""
    out = self.outputs(variables, images, masks)
    best_map, best_thr = metrics.best_threshold(out.logits, masks)
    return {"val_loss": float(np.mean(out.losses)), "val_map": float(best_map),
            "val_threshold": float(best_thr)}
