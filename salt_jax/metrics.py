"""The competition metric (SPEC 6.1) and the validation threshold sweep over logits (SPEC 6.2).

Per image: P = pred > threshold (strict), T = truth > 0.5, IoU = |T&P| / (|T|P| + 1e-5); a hit at each
t in 0.50..0.95 if both are non-empty and IoU > t, or both are empty. The score is the mean of the 10 hits
and the mAP is the mean score over images. `threshold_sweep` evaluates all 80 logit thresholds at once
from per-image histograms of the logits.
"""
from typing import Tuple

import numpy as np

IOU_THRESHOLDS = np.array([0.50, 0.55, 0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90, 0.95])
SWEEP_THRESHOLDS = np.arange(-0.5, 0.5, 0.0125)
IOU_EPS = 1e-5
_CHUNK_PIXELS = 1 << 18


def _hit_counts(inter: np.ndarray, tsum: np.ndarray, psum: np.ndarray) -> np.ndarray:
  """Hits (...) int in 0..10 from pixel counts |T&P|, |T|, |P| of matching shapes (...).

  #{t : IoU > t} is searchsorted(..., side="left") on the sorted IoU thresholds (strict '>').
  """
  inter, tsum, psum = (np.asarray(a, np.float64) for a in (inter, tsum, psum))
  iou = inter / (tsum + psum - inter + IOU_EPS)
  above = np.searchsorted(IOU_THRESHOLDS, iou, side="left")
  both = (tsum > 0) & (psum > 0)
  neither = (tsum == 0) & (psum == 0)
  return np.where(both, above, 0) + np.where(neither, len(IOU_THRESHOLDS), 0)


def _truth_mask(truth: np.ndarray) -> np.ndarray:
  """T = truth > 0.5 as bool; for integer dtypes that is truth > 0 (a cheaper pass)."""
  if truth.dtype == np.bool_:
    return truth
  if np.issubdtype(truth.dtype, np.integer):
    return truth > 0
  return truth > 0.5


def _row_count(a: np.ndarray) -> np.ndarray:
  """Number of True per row of a bool (M,P) array, as int64 (M,)."""
  return np.add.reduce(a.view(np.uint8), axis=1, dtype=np.int32).astype(np.int64)


def _flat(a, name: str) -> np.ndarray:
  a = np.asarray(a)
  if a.ndim < 2:
    raise ValueError(f"{name} must be (N,H,W), got shape {a.shape}")
  return a.reshape(a.shape[0], -1)


def _image_hits(pred_masks, truth, threshold: float) -> np.ndarray:
  """Hits (N,) int in 0..10 of P = pred_masks > threshold against T = truth > 0.5."""
  p, t = _flat(pred_masks, "pred_masks") > threshold, _truth_mask(_flat(truth, "truth"))
  if p.shape != t.shape:
    raise ValueError(f"pred_masks {np.shape(pred_masks)} and truth {np.shape(truth)} differ")
  return _hit_counts(_row_count(p & t), _row_count(t), _row_count(p))


def kaggle_scores(pred_masks, truth, threshold: float = 0.5) -> np.ndarray:
  """Per-image scores (N,) float64 in {0, 0.1, ..., 1} of pred_masks (N,H,W) (bool, {0,1} or
  probabilities; P = pred > threshold) against truth (N,H,W) (T = truth > 0.5)."""
  return _image_hits(pred_masks, truth, threshold) / len(IOU_THRESHOLDS)


def kaggle_map(pred_masks, truth, threshold: float = 0.5) -> float:
  """Mean of `kaggle_scores` over the N images (the leaderboard mAP), as hits / (10 N)."""
  hits = _image_hits(pred_masks, truth, threshold)
  if hits.shape[0] == 0:
    raise ValueError("kaggle_map of zero images")
  return float(hits.sum() / (hits.size * len(IOU_THRESHOLDS)))


def _strictly_above(thresholds: np.ndarray, dtype) -> np.ndarray:
  """u (K,) of `dtype`: the smallest representable value > each float64 threshold, so x > t <=> x >= u."""
  c = thresholds.astype(dtype)
  return np.where(c.astype(np.float64) > thresholds, c, np.nextafter(c, np.array(np.inf, dtype)))


def _bucketer(u: np.ndarray, t: np.ndarray):
  """Returns f(x (M,)) -> k (M,) int = #{j : x >= u[j]} = #{j : x > t[j]} in 0..K.

  Uniform thresholds (the sweep): k = floor((x - t0) / step) + 1, exact except within rounding error
  of a threshold; values that close to one (and all values for other thresholds) use searchsorted.
  """
  k_max = len(u)
  step = (t[-1] - t[0]) / max(k_max - 1, 1)
  uniform = k_max > 1 and step > 1e-3 * max(1.0, np.abs(t).max()) and np.all(
      np.abs(t - (t[0] + step * np.arange(k_max))) < 1e-5 * step)
  if not uniform:
    return lambda x: np.searchsorted(u, x, side="right")
  inv_step, t0 = u.dtype.type(1.0 / step), u.dtype.type(t[0])
  margin = u.dtype.type(1e-3)  # in buckets; the arithmetic is off by < 1e-4

  def bucket(x):
    v = x - t0
    v *= inv_step
    np.fmax(v, -0.5, out=v)  # also maps NaN (above no threshold) to bucket 0
    np.fmin(v, k_max + 0.5, out=v)
    f = np.floor(v)
    k = f.astype(np.intp)
    f -= v  # in (-1, 0]; near 0 or -1 means near a threshold
    near = f > -margin
    near |= f < margin - 1
    k += 1
    np.clip(k, 0, k_max, out=k)
    idx = np.flatnonzero(near)
    if idx.size:
      k[idx] = np.searchsorted(u, x[idx], side="right")
    return k
  return bucket


def _sweep_counts(logits: np.ndarray, truth: np.ndarray, thresholds: np.ndarray):
  """Pixel counts for sorted thresholds (K,): |T&P| (N,K), |T| (N,), |P| (N,K).

  Each pixel falls in bucket k = #{j : logit > t[j]} in 0..K. Per-image bucket histograms, split by T
  and summed from the top, give |P| and |T&P| at every threshold. Where few pixels lie inside the
  threshold range (trained models), only those are bucketed; the rest are counted per image.
  """
  x_all, t_all = _flat(logits, "logits"), _flat(truth, "truth")
  if x_all.shape != t_all.shape:
    raise ValueError(f"logits {np.shape(logits)} and truth {np.shape(truth)} differ")
  dtype = np.float64 if x_all.dtype == np.float64 else np.float32
  u = _strictly_above(thresholds, dtype)
  n, hw = x_all.shape
  k_num = len(thresholds)
  nb = k_num + 1
  bucket = _bucketer(u, thresholds)
  inter = np.zeros((n, nb), np.int64)
  total = np.zeros((n, nb), np.int64)
  tsum = np.zeros(n, np.int64)
  chunk = max(1, _CHUNK_PIXELS // max(hw, 1))
  for s in range(0, n, chunk):
    x = np.asarray(x_all[s:s + chunk], dtype)
    t = _truth_mask(t_all[s:s + chunk])
    m = x.shape[0]
    tsum[s:s + m] = _row_count(t)
    hi = x >= u[-1]
    inside = x >= u[0]
    inside ^= hi
    if np.count_nonzero(inside) > inside.size // 4:
      bins = bucket(x.reshape(-1)).reshape(m, hw)
      bins += np.where(t, nb, 0)
      bins += (np.arange(m) * (2 * nb))[:, None]
      counts = np.bincount(bins.reshape(-1), minlength=m * 2 * nb).reshape(m, 2, nb)
      total[s:s + m] = counts[:, 0] + counts[:, 1]
      inter[s:s + m] = counts[:, 1]
      continue
    total[s:s + m, k_num] = _row_count(hi)
    inter[s:s + m, k_num] = _row_count(hi & t)
    flat = np.flatnonzero(inside)
    bins = (flat // hw) * (2 * nb) + bucket(x.reshape(-1)[flat])
    bins += t.reshape(-1)[flat] * nb
    counts = np.bincount(bins, minlength=m * 2 * nb).reshape(m, 2, nb)
    total[s:s + m, 1:k_num] = counts[:, 0, 1:k_num] + counts[:, 1, 1:k_num]
    inter[s:s + m, 1:k_num] = counts[:, 1, 1:k_num]
  # |P| at threshold j counts the pixels above it: buckets j+1..K, a cumulative sum from the top.
  psum = np.cumsum(total[:, ::-1], axis=1)[:, ::-1][:, 1:]
  inter = np.cumsum(inter[:, ::-1], axis=1)[:, ::-1][:, 1:]
  return inter, tsum, psum


def threshold_sweep(logits, truth, thresholds=SWEEP_THRESHOLDS) -> np.ndarray:
  """mAP (K,) float64 of P = logits > thresholds[j] for each j; logits (N,H,W) float, truth (N,H,W).

  Equals [kaggle_map(logits > thr, truth) for thr in thresholds] (comparisons exact against the
  float64 thresholds) but costs a few passes over the data instead of K.
  """
  thresholds = np.asarray(thresholds, np.float64).reshape(-1)
  if thresholds.size == 0 or np.asarray(logits).shape[0] == 0:
    raise ValueError("threshold_sweep needs at least one threshold and one image")
  hits, _, _ = sweep_hits(logits, truth, thresholds)
  return hits.sum(axis=0) / (hits.shape[0] * len(IOU_THRESHOLDS))


def sweep_hits(logits, truth, thresholds=SWEEP_THRESHOLDS) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per-image hits (N,K) int in 0..10 of P = logits > thresholds[j], with |P| (N,K) and |T| (N,): what
  any per-tile decision on top of the threshold (e.g. inference.gating) needs to be scored exactly."""
  thresholds = np.asarray(thresholds, np.float64).reshape(-1)
  order = np.argsort(thresholds, kind="stable")
  inter, tsum, psum = _sweep_counts(logits, truth, thresholds[order])
  hits, areas = np.empty_like(inter), np.empty_like(psum)
  hits[:, order] = _hit_counts(inter, tsum[:, None], psum)
  areas[:, order] = psum
  return hits, areas, tsum


def best_threshold(logits, truth, thresholds=SWEEP_THRESHOLDS) -> Tuple[float, float]:
  """(best mAP, its logit threshold) over the sweep; ties go to the first threshold (SPEC 6.2)."""
  thresholds = np.asarray(thresholds, np.float64).reshape(-1)
  maps = threshold_sweep(logits, truth, thresholds)
  j = int(np.argmax(maps))
  return float(maps[j]), float(thresholds[j])
