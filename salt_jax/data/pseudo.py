"""Pseudo-labelling (SPEC 9): test tiles labelled by an earlier ensemble join the training samples.

The test set is split once into two seeded halves (saved as CSV `id,half` and reused). During training
each sample of an epoch is, with probability `pseudo_prob`, replaced by a tile drawn uniformly with
replacement from the chosen half, labelled with its pseudo mask; validation stays on real labels.
"""
import pathlib
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from salt_jax.data import kaggle, submission
from salt_jax.data.errors import DataError


def split_halves(ids: Sequence[str], seed: int) -> np.ndarray:
  """(N,) int {0,1}: a seeded random 50/50 split of the test ids (sizes differ by at most one)."""
  n = len(ids)
  half = np.zeros(n, np.int64)
  half[np.random.default_rng(seed).permutation(n)[n // 2:]] = 1
  return half


def load_or_make_split(path, ids: Sequence[str], seed: int, save: bool = True) -> np.ndarray:
  """The saved split of `ids` at `path`, else a new seeded one (written there if `save`); a split of other
  ids is an error."""
  path = pathlib.Path(path)
  ids = np.asarray(ids)
  if path.exists():
    frame = kaggle.read_frame(path, ["id", "half"], dtype={"id": str})
    if set(frame["id"]) != set(ids) or len(frame) != len(ids) or not frame["half"].isin([0, 1]).all():
      raise DataError(f"{path} is not a split of these {len(ids)} test ids; delete it to make a new one")
    return frame.set_index("id").loc[ids, "half"].to_numpy()
  half = split_halves(ids, seed)
  if save:
    save_split(path, ids, half)
  return half


def save_split(path, ids: Sequence[str], half: np.ndarray) -> None:
  """Writes the split (CSV id,half) that load_or_make_split reads back."""
  submission.write_csv_atomic(pd.DataFrame({"id": np.asarray(ids), "half": half}), path)


def read_pseudo_masks(csv_path, ids: Sequence[str]) -> np.ndarray:
  """(N,101,101) uint8 pseudo masks for `ids` from a submission CSV; an id it lacks is an error."""
  return submission.read_submission(csv_path, ids).masks


def read_confidence(csv_path, ids: Sequence[str]) -> np.ndarray:
  """(N,) float confidence of `ids` from a CSV id,confidence; an id it lacks is an error."""
  frame = kaggle.read_frame(csv_path, ["id", "confidence"])
  frame["confidence"] = pd.to_numeric(frame["confidence"], errors="coerce")
  if frame["confidence"].isna().any():
    bad = frame["id"][frame["confidence"].isna()].iloc[0]
    raise DataError(f"{csv_path}: the confidence of id {bad!r} is not a number")
  table = frame.set_index("id")["confidence"]
  missing = [i for i in ids if i not in table.index]
  if missing:
    raise DataError(f"{csv_path} lacks {len(missing)} of the pseudo-labelled ids, e.g. {missing[:3]}")
  return table.loc[list(ids)].to_numpy(np.float64)


def keep(n: int, limit: int, confidence: Optional[np.ndarray], seed: int) -> np.ndarray:
  """Sorted indices of the `limit` tiles kept out of n (all when limit is 0 or >= n): the most confident
  (ties by index), or without a confidence a seeded random choice."""
  if limit <= 0 or limit >= n:
    return np.arange(n)
  if confidence is None:
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
  return np.sort(np.argsort(-np.asarray(confidence), kind="stable")[:limit])


def mix_epoch(rng: np.random.Generator, real_order: np.ndarray, n_real: int, n_pseudo: int,
              prob: float) -> np.ndarray:
  """Indices into concat(real, pseudo): each slot of the real order becomes, with probability `prob`,
  a uniformly drawn pseudo sample (index >= n_real). Epoch length is unchanged (SPEC 9)."""
  if not 0.0 <= prob <= 1.0:
    raise ValueError(f"pseudo_prob must be in [0, 1], got {prob}")
  coin = rng.random(len(real_order)) < prob
  draws = n_real + rng.integers(0, n_pseudo, size=len(real_order))
  return np.where(coin, draws, real_order)
