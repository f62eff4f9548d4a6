"""Seeded k-fold split of the train ids, stratified by mask-coverage class, saved once and reused (SPEC 1.3).

The original fold CSVs are not available; like sklearn's StratifiedKFold we deal each coverage class
round-robin over the folds, so fold sizes differ by at most 1 within every class and overall.
"""
import pathlib
from typing import Sequence, Tuple

import numpy as np
import pandas as pd

from salt_jax import errors, fileio
from salt_jax.data.errors import DataError, plain, preview

NUM_CLASSES = 11


def coverage_class(masks: np.ndarray) -> np.ndarray:
  """(N,H,W) masks (nonzero = salt) -> (N,) int: 0 if empty, else ceil(10 * coverage) in 1..10.

  Coverage is the salt fraction of the tile; computed in integers, so e.g. exactly 30% is class 3.
  """
  masks = np.asarray(masks)
  if masks.ndim != 3:
    raise ValueError(f"coverage_class expects (N,H,W) masks, got shape {masks.shape}")
  pixels = masks.shape[1] * masks.shape[2]
  count = np.count_nonzero(masks.reshape(len(masks), -1), axis=1).astype(np.int64)
  return np.clip(-(-10 * count // pixels), 0, 10).astype(np.int64)


def make_folds(ids: Sequence[str], masks: np.ndarray, num_folds: int = 10, seed: int = 0) -> np.ndarray:
  """(N,) int fold of each id, stratified by `coverage_class`.

  Within each class, ids are sorted (so the result does not depend on the input order), shuffled with
  `np.random.default_rng(seed)` and dealt round-robin; each class continues where the previous one
  stopped, so overall fold sizes also differ by at most 1.
  """
  ids = np.asarray(ids, dtype=str)
  if len(ids) != len(masks):
    raise ValueError(f"{len(ids)} ids but {len(masks)} masks")
  if len(set(ids.tolist())) != len(ids):
    raise ValueError("ids must be unique")
  if num_folds < 2 or num_folds > len(ids):
    raise ValueError(f"num_folds must be in 2..{len(ids)}, got {num_folds}")
  classes = coverage_class(masks)
  rng = np.random.default_rng(seed)
  folds = np.empty(len(ids), np.int64)
  dealt = 0
  for c in range(NUM_CLASSES):
    members = np.flatnonzero(classes == c)
    members = members[np.argsort(ids[members], kind="stable")]
    members = members[rng.permutation(len(members))]
    folds[members] = (dealt + np.arange(len(members))) % num_folds
    dealt += len(members)
  return folds


def write_folds(path, ids: Sequence[str], folds: np.ndarray) -> None:
  """Writes CSV `id,fold` atomically."""
  with fileio.atomic_path(path) as tmp:
    pd.DataFrame({"id": np.asarray(ids, dtype=str), "fold": np.asarray(folds)}).to_csv(tmp, index=False)


def _listed(values) -> str:
  return f" ({preview(values)})" if len(values) else ""


def read_folds(path, ids: Sequence[str], num_folds: int) -> np.ndarray:
  """(N,) int folds from CSV `id,fold`, aligned to `ids`; DataError unless it holds exactly these ids."""
  path = pathlib.Path(path)
  try:
    frame = pd.read_csv(path, dtype={"id": str}, keep_default_na=False)
  except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
    raise DataError(f"cannot parse fold file {path}: {e}") from e
  except OSError as e:
    raise errors.io_failure(e, path, "read") from e
  if list(frame.columns) != ["id", "fold"] or not pd.api.types.is_integer_dtype(frame["fold"]):
    raise DataError(f"{path}: expected columns id,fold with integer folds")
  if frame["id"].duplicated().any():
    raise DataError(f"{path}: duplicate id {plain(frame['id'][frame['id'].duplicated()].iloc[0])!r}")
  ids = np.asarray(ids, dtype=str)
  have, want = set(frame["id"]), set(ids.tolist())
  if have != want:
    missing, extra = sorted(want - have), sorted(have - want)
    raise DataError(f"{path} does not match the data: {len(missing)} ids missing{_listed(missing)}, "
                    f"{len(extra)} unknown{_listed(extra)}; delete it to re-split")
  found = int(frame["fold"].max()) + 1
  if frame["fold"].min() < 0 or found != num_folds or frame["fold"].nunique() != num_folds:
    raise DataError(f"{path} holds folds {preview(sorted(frame['fold'].unique()), 12)}, "
                    f"expected 0..{num_folds - 1}")
  return frame.set_index("id")["fold"].reindex(ids).to_numpy(np.int64)


def load_or_make_folds(path, ids: Sequence[str], masks: np.ndarray, num_folds: int = 10,
                       seed: int = 0) -> np.ndarray:
  """(N,) int folds aligned to `ids`: read from `path` (CSV id,fold) if it exists, else made and written.

  The file wins over `seed` once written (the seed is not stored); its ids and fold count must match.
  """
  path = pathlib.Path(path)
  if path.exists():
    return read_folds(path, ids, num_folds)
  folds = make_folds(ids, masks, num_folds, seed)
  write_folds(path, ids, folds)
  return folds


def fold_split(folds: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
  """(train indices, valid indices) of fold k: valid = rows with folds == k, train = the rest."""
  folds = np.asarray(folds)
  if not 0 <= k <= int(folds.max()):
    raise ValueError(f"fold {k} out of range 0..{int(folds.max())}")
  return np.flatnonzero(folds != k), np.flatnonzero(folds == k)
