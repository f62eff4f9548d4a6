"""Honest measurement of the post-processing rules on a validation fold (no ground truth leaks in).

The fold's validation tiles play the part of test tiles: their masks come from a model's predictions, and only
the remaining train tiles keep their ground truth. The rules run exactly as on the test set, and the Kaggle
metric (salt_jax.metrics.kaggle_map) is computed on the validation tiles against their ground truth before and
after each step. Two views: "cumulative" (the real chain vertical -> empty -> smooth) and "alone" (one rule on
the raw predictions). Tiles that are neither known nor predicted (real test tiles, unless their predictions
are passed as extra unknown tiles) occupy their mosaic cells but carry no mask, so they neither trigger nor
receive rules; with test predictions included, the measurement is closer to the real use.
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional

import numpy as np
import pandas as pd

from salt_jax import metrics
from salt_jax.data.errors import preview
from salt_jax.jigsaw import rules

Masks = Dict[str, np.ndarray]


def _score(masks: Masks, truth: Masks, ids) -> float:
  if not ids:
    return float("nan")
  return metrics.kaggle_map(np.stack([masks[i] for i in ids]), np.stack([truth[i] for i in ids]))


def rule_effect(mosaics: pd.DataFrame, known: Masks, predicted: Masks, truth: Masks,
                extra_unknown: Optional[Masks] = None, steps: Iterable[str] = rules.STEPS,
                max_mosaic_id: Optional[int] = rules.MAX_MOSAIC_ID) -> pd.DataFrame:
  """Kaggle mAP of the `predicted` tiles (scored against `truth`) before and after each rule step.

  Args:
    mosaics: table id,mosaic_id,x,y.
    known: ground-truth masks of the train tiles outside the evaluated fold.
    predicted: predicted masks of the evaluated tiles (e.g. a fold's validation ids).
    truth: ground truth of at least the `predicted` ids (used only for scoring).
    extra_unknown: optional further unknown tiles with predictions (e.g. real test tiles); not scored.
  Returns:
    DataFrame with columns mode ("input", "cumulative", "alone"), step, map (over all evaluated tiles),
    n_changed, map_changed_before, map_changed_after (over the tiles the step changed), n_tiles.
  """
  ids = list(predicted)
  both = [i for i in ids if i in known]
  if both:
    raise ValueError(f"evaluated ids must not be known tiles: {preview(both)}")
  unknown = dict(predicted)
  unknown.update(extra_unknown or {})
  mos = rules.MosaicIndex(mosaics)
  steps = tuple(steps)
  rows = [dict(mode="input", step="-", map=_score(unknown, truth, ids), n_changed=0,
               map_changed_before=float("nan"), map_changed_after=float("nan"))]

  def row(mode, step, before, after, changed):
    ch = [i for i in ids if i in changed]
    return dict(mode=mode, step=step, map=_score(after, truth, ids), n_changed=len(ch),
                map_changed_before=_score(before, truth, ch), map_changed_after=_score(after, truth, ch))

  chain = rules.apply_rules(mos, known, unknown, steps, max_mosaic_id)
  prev = "input"
  for step in steps:
    rows.append(row("cumulative", step, chain.stages[prev], chain.stages[step], chain.changed[step]))
    prev = step
  for step in steps:
    alone = rules.apply_rules(mos, known, unknown, (step,), max_mosaic_id)
    rows.append(row("alone", step, unknown, alone.stages[step], alone.changed[step]))
  out = pd.DataFrame(rows)
  out["n_tiles"] = len(ids)
  return out
