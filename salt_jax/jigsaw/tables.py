"""CSV helpers for the jigsaw tools: mosaic tables, and submissions as {id: (101,101) mask}."""
from __future__ import annotations

from typing import Dict, Iterable, Optional

import numpy as np
import pandas as pd

from salt_jax import geometry
from salt_jax.data import kaggle, submission
from salt_jax.data.errors import DataError

MOSAIC_COLUMNS = ["id", "mosaic_id", "x", "y"]


def read_mosaics(path) -> pd.DataFrame:
  """Mosaic table `id,mosaic_id,x,y` (one row per placed tile); DataError naming `path` if it is unreadable,
  has other columns or non-integer mosaic_id/x/y."""
  frame = kaggle.read_frame(path, MOSAIC_COLUMNS, dtype={"id": str})
  if not len(frame):
    return frame.astype({c: np.int64 for c in MOSAIC_COLUMNS[1:]})
  bad = [c for c in MOSAIC_COLUMNS[1:] if not pd.api.types.is_integer_dtype(frame[c])]
  if bad:
    raise DataError(f"{path}: column(s) {','.join(bad)} must hold integers")
  return frame


def read_submission(path, ids: Optional[Iterable[str]] = None,
                    sample_ids: Optional[Iterable[str]] = None) -> Dict[str, np.ndarray]:
  """Submission CSV -> {id: (101,101) uint8 {0,1}} in file order (optionally only `ids`).

  Duplicate ids are an error; with `sample_ids` the file must hold exactly those ids (checked on the raw CSV,
  see `salt_jax.data.submission.check_ids`).
  """
  found, masks = submission.read_submission(path, None if ids is None else list(ids),
                                            None if sample_ids is None else list(sample_ids))
  return dict(zip(found.tolist(), masks))


def write_submission(masks: Dict[str, np.ndarray], path) -> None:
  """Atomic `id,rle_mask` CSV of {id: mask} (dict order)."""
  ids = list(masks)
  submission.write_submission(path, ids, np.stack([masks[i] for i in ids]) if ids
                              else np.zeros((0, *geometry.TILE_SHAPE), np.uint8))
