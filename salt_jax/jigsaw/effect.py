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

from typing import Iterable, Optional, Tuple

import numpy as np
import pandas as pd

from salt_jax import metrics
from salt_jax.data import folds as folds_lib
from salt_jax.data import sources, submission
from salt_jax.data.errors import preview
from salt_jax.data.submission import Submission
from salt_jax.jigsaw import rules, tables

Masks = rules.Masks


def _score(masks: Masks, truth: Masks, ids) -> float:
  if not ids:
    return float("nan")
  return metrics.kaggle_map(np.stack([masks[i] for i in ids]), np.stack([truth[i] for i in ids]))


def rule_effect(mosaics: pd.DataFrame, known: Masks, predicted: Submission, truth: Masks,
                extra_unknown: Optional[Submission] = None, steps: Iterable[str] = rules.STEPS,
                max_mosaic_id: Optional[int] = rules.MAX_MOSAIC_ID) -> pd.DataFrame:
  """Kaggle mAP of the `predicted` tiles (scored against `truth`) before and after each rule step (the
  table of chain_effect)."""
  return chain_effect(mosaics, known, predicted, truth, extra_unknown, steps, max_mosaic_id)[0]


def chain_effect(mosaics: pd.DataFrame, known: Masks, predicted: Submission, truth: Masks,
                 extra_unknown: Optional[Submission] = None, steps: Iterable[str] = rules.STEPS,
                 max_mosaic_id: Optional[int] = rules.MAX_MOSAIC_ID) -> Tuple[pd.DataFrame, rules.RuleResult]:
  """(table, chain): Kaggle mAP of the `predicted` tiles (scored against `truth`) before and after each
  rule step, and the rules' chain over every unknown tile (rules.apply_rules: its stages and changes).

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
  unknown = predicted if extra_unknown is None else Submission.concat([predicted, extra_unknown])
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
  return out, chain


def fold_rule_effect(source: sources.Source, mosaics, folds_csv, fold: int, predictions, *,
                     test_predictions=None, max_mosaic_id: Optional[int] = rules.MAX_MOSAIC_ID
                     ) -> Tuple[pd.DataFrame, int]:
  """`rule_effect` on validation fold `fold` of the split `folds_csv` (id,fold): its tiles unknown, with the
  masks of the submission CSV `predictions`; the other train tiles known; optionally the test tiles of
  `test_predictions` as further unknown tiles. -> (the table, how many of the fold's tiles are in mosaics)."""
  train = source.train()
  ids = train.ids.tolist()
  num_folds = int(pd.read_csv(folds_csv)["fold"].max()) + 1
  _, valid = folds_lib.fold_split(folds_lib.read_folds(folds_csv, ids, num_folds), fold)
  valid_ids = [ids[i] for i in valid]
  valid_set = set(valid_ids)
  known = {i: m for i, m in zip(ids, train.masks) if i not in valid_set}
  truth = {i: m for i, m in zip(ids, train.masks) if i in valid_set}
  extra = None
  if test_predictions:
    extra = submission.read_submission(test_predictions)
    extra = extra.select([i for i in extra if i not in valid_set and i not in known])
  table = tables.read_mosaics(mosaics)
  result = rule_effect(table, known, submission.read_submission(predictions, ids=valid_ids), truth,
                       extra_unknown=extra, max_mosaic_id=max_mosaic_id)
  return result, int(np.isin(valid_ids, table["id"]).sum())
