"""Empty handling at inference (not in the original, SPEC 7): per-tile decisions on top of the pixel
threshold, tuned jointly with it on a fold's validation tiles and then applied to its test tiles.

A `Gate` turns flip-TTA logits (N,101,101) and the classifier's p(empty) (N,) into masks:
  1. mask = logits > threshold;
  2. keep a faint mask: where the mask is empty but p(empty) < salt_below, mask = logits > fallback;
  3. force empty: where the mask has fewer than min_area pixels or p(empty) > empty_above.
The defaults (min_area 0, empty_above 1, salt_below 0) are the plain threshold. `sweep` scores every
combination of the candidates exactly (metrics.sweep_hits) and keeps the best; ties go to the plainest.
"""
import dataclasses
from typing import Dict, Sequence, Tuple

import numpy as np

from salt_jax import metrics


@dataclasses.dataclass(frozen=True)
class Gate:
  threshold: float
  min_area: int = 0
  empty_above: float = 1.0
  salt_below: float = 0.0
  fallback: float = 0.0

  def apply(self, logits: np.ndarray, p_empty: np.ndarray) -> np.ndarray:
    """(N,101,101) float logits, (N,) p(empty) -> (N,101,101) bool masks."""
    masks = logits > self.threshold
    empty = ~masks.reshape(len(masks), -1).any(axis=1)
    faint = empty & (p_empty < self.salt_below)
    masks[faint] = logits[faint] > self.fallback
    area = masks.reshape(len(masks), -1).sum(axis=1)
    masks[(area < self.min_area) | (p_empty > self.empty_above)] = False
    return masks

  def as_dict(self) -> Dict[str, float]:
    return dataclasses.asdict(self)


def parse_candidates(spec: str, kind=float) -> Tuple:
  """'0,20,50' -> (0.0, 20.0, 50.0) (kind int: ints); '' -> () (the rule is off)."""
  return tuple(kind(part) for part in spec.split(",") if part.strip()) if spec.strip() else ()


def sweep(logits: np.ndarray, truth: np.ndarray, p_empty: np.ndarray, *, min_areas: Sequence[int] = (),
          empty_aboves: Sequence[float] = (), salt_belows: Sequence[float] = (),
          thresholds=metrics.SWEEP_THRESHOLDS, fallbacks=None) -> Tuple[float, Gate]:
  """(best validation mAP, its Gate) over thresholds x min areas x p(empty) cut-offs x fallbacks.

  Empty candidate lists leave a rule off. Every combination is scored from per-tile hits at each
  threshold, so the result equals scoring Gate.apply's masks with metrics.kaggle_map.
  """
  thresholds = np.asarray(thresholds, np.float64)
  fallbacks = thresholds[::8] if fallbacks is None else np.asarray(fallbacks, np.float64)
  grid = np.concatenate([thresholds, fallbacks])
  hits, areas, tsum = metrics.sweep_hits(logits, truth, grid)
  k = len(thresholds)
  empty_hits = np.where(tsum == 0, len(metrics.IOU_THRESHOLDS), 0)  # (N,) an empty prediction's hits
  best = (-1.0, None)
  for salt_below in (0.0,) + tuple(salt_belows):
    for j, fallback in enumerate(fallbacks if salt_below > 0 else fallbacks[:1]):
      faint = (areas[:, :k] == 0) & (p_empty < salt_below)[:, None]                 # (N,K)
      h = np.where(faint, hits[:, k + j, None], hits[:, :k])
      a = np.where(faint, areas[:, k + j, None], areas[:, :k])
      for min_area in (0,) + tuple(min_areas):
        for empty_above in (1.0,) + tuple(empty_aboves):
          forced = (a < min_area) | (p_empty > empty_above)[:, None]
          maps = np.where(forced, empty_hits[:, None], h).sum(axis=0) / (len(h) * len(metrics.IOU_THRESHOLDS))
          i = int(np.argmax(maps))
          if maps[i] > best[0] + 1e-12:
            best = (float(maps[i]), Gate(float(thresholds[i]), int(min_area), float(empty_above),
                                         float(salt_below), float(fallback) if salt_below > 0 else 0.0))
  return best
