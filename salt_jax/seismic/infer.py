"""Section inference: the snapshots that vote, each snapshot's window function and threshold, and the
vote of the workdirs on a stack of same-shaped sections, their windows batched across the stack.

Each section is cut into 101x101 windows (salt_jax.seismic.sections); each window is predicted exactly as
`predict` predicts a tile (the same compiled flip TTA, padded to the model's canvas), in batches of the
loader's batch size taken across all the sections of the stack, so a stack of small sections fills its
batches. Per snapshot the windows' probabilities are blended and binarised at the snapshot's threshold
(the one `predict` recorded for it when its prediction file is newer than the snapshot, else the one
training recorded); the snapshots vote as in `ensemble` (inference.ensemble.Vote, is_salt).
"""
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from absl import logging
from scipy import special

from salt_jax import configlib, errors, parallel
from salt_jax.inference import ensemble, predict
from salt_jax.seismic import sections
from salt_jax.workdir import rundir

DEFAULT_STRIDE = 101  # overlapping windows lowered the pixel IoU and mAP of every model measured (README)
Snapshots = Sequence[Sequence[ensemble.Voter]]  # per workdir, its voting snapshots


def find_snapshots(workdirs: Sequence[str], kind: str = "max_map", folds: Optional[Sequence[int]] = None
                   ) -> List[List[ensemble.Voter]]:
  """Per workdir its `kind` snapshots (ensemble.voters), each fold's config readable before anything is
  computed."""
  found = ensemble.voters(workdirs, kind, folds)
  for snaps in found:
    for fold in sorted({s.fold for s in snaps}):
      rundir.RunDir(snaps[0].workdir).fold_config(fold)
  return found


def snapshot_threshold(snap: ensemble.Voter, kind: str, meta: Dict[str, Any]) -> Tuple[float, str]:
  """(logit threshold, where it was recorded): predict's, when its prediction file of the snapshot is not
  older than the snapshot (as ensemble votes it), else the one training recorded in the snapshot."""
  pred = rundir.RunDir(snap.workdir).current_prediction(kind, snap.fold, snap.cycle)
  if pred is not None:
    recorded = predict.prediction_meta(pred)
    gate = recorded.get("gate") or {}
    if gate.get("min_area", 0) or gate.get("empty_above", 1.0) < 1 or gate.get("salt_below", 0.0) > 0:
      logging.warning("%s: its per-tile gate %s is not applied to sections, only its threshold", pred, gate)
    return float(recorded["threshold"]), str(pred)
  if meta.get("val_threshold") is None:
    raise rundir.WorkdirError(f"snapshot {snap.path} records no val_threshold; run predict on {snap.workdir}")
  return float(meta["val_threshold"]), str(snap.path)


class SnapshotLoader:
  """Per snapshot, a window function (B,101,101) uint8 -> (B,101,101) float32 probabilities and its
  threshold; each model configuration's predictor is made once (predict.Predictors)."""

  def __init__(self, kind: str = "max_map", batch_size: Optional[int] = None, keep: bool = False):
    if batch_size is not None and batch_size < 1:
      raise errors.BadInput("batch_size must be a positive number of windows (unset: the config's "
                       f"eval_batch_size), got {batch_size}")
    self.kind, self.batch_size = kind, batch_size
    self.predictors = predict.Predictors(parallel.make_mesh(), batch_size)
    self.mesh = self.predictors.mesh
    self._kept: Optional[Dict[ensemble.Voter, Tuple]] = {} if keep else None

  def load(self, snap: ensemble.Voter) -> Tuple[Callable[[np.ndarray], np.ndarray], float, int]:
    """(window function, logit threshold, windows per call) of one snapshot; with `keep` every snapshot is
    loaded once and its weights stay in memory (a volume's many sections), else it is read at each call."""
    if self._kept is None:
      return self._load(snap)
    if snap not in self._kept:
      self._kept[snap] = self._load(snap)
    return self._kept[snap]

  def _load(self, snap: ensemble.Voter) -> Tuple[Callable[[np.ndarray], np.ndarray], float, int]:
    s = configlib.sections(rundir.RunDir(snap.workdir).fold_config(snap.fold))
    variables, meta = predict.load_fold_snapshot(s, snap.path, self.mesh)
    threshold, recorded_in = snapshot_threshold(snap, self.kind, meta)
    logging.info("fold %d cycle %d of %s: threshold %+.4f (from %s)", snap.fold, snap.cycle, snap.workdir,
                 threshold, recorded_in)
    predictor = self.predictors(s)
    batch = s.eval.eval_batch_size if self.batch_size is None else self.batch_size
    return lambda w: special.expit(predictor.outputs(variables, w).logits), threshold, batch


class Result(NamedTuple):
  mask: np.ndarray             # (...,H,W) bool: the vote of the workdirs
  votes: np.ndarray            # (...,H,W) float32: equal-weight mean over workdirs of their snapshot vote
  probs: Optional[np.ndarray]  # (...,H,W) float32 mean blended probability, when asked for
  windows: int                 # windows run per snapshot


def segment_stack(stack: np.ndarray, snapshots: Snapshots, loader: SnapshotLoader,
                  stride: int = DEFAULT_STRIDE, save_probs: bool = False,
                  progress: Optional[Callable[[int], None]] = None,
                  needed: Optional[np.ndarray] = None, phase: int = 0) -> Result:
  """Votes the snapshots of each workdir (snapshots[m]: workdir m's) on a (K,H,W) uint8 stack of sections.

  The padded stack and the weight sum are computed once; per snapshot one float64 sum of the stack's
  padded size is held, and the windows of all K sections go through the model `loader`'s batch at a time.
  With `needed` ((H,W) bool) only the windows overlapping those pixels run (sections.blend): they get
  exactly the whole section's result, the other pixels no salt (and NaN votes and probabilities). `phase`
  shifts the windows (sections.axis_windows).
  """
  lay = sections.layout(stack.shape[1:], stride, phase=phase)
  padded = np.stack([sections.pad(s, lay) for s in stack])
  weights = sections.weight_sum(lay)
  n_windows = lay.n_windows if needed is None else int(sections.covering(lay, needed).sum())
  votes, probs = ensemble.Vote(), ensemble.Vote()
  for workdir_snaps in snapshots:
    for snap in workdir_snaps:
      window_fn, threshold, batch = loader.load(snap)
      p = sections.blend_stack(padded, lay, window_fn, batch, weights, progress, needed)
      votes.add_snapshot(np.where(np.isnan(p), np.nan, p > special.expit(np.float32(threshold))))
      if save_probs:
        probs.add_snapshot(p)
    votes.end_model()
    if save_probs:
      probs.end_model()
  fraction = votes.fraction()
  return Result(ensemble.is_salt(fraction), fraction, probs.fraction() if save_probs else None, n_windows)


def segment_section(section: np.ndarray, snapshots: Snapshots, loader: SnapshotLoader,
                    stride: int = DEFAULT_STRIDE, save_probs: bool = False,
                    progress: Optional[Callable[[int], None]] = None,
                    needed: Optional[np.ndarray] = None, phase: int = 0) -> Result:
  """segment_stack of one (H,W) uint8 section: a Result of (H,W) arrays."""
  r = segment_stack(section[None], snapshots, loader, stride, save_probs, progress, needed, phase)
  return Result(r.mask[0], r.votes[0], None if r.probs is None else r.probs[0], r.windows)
