"""The jigsaw's mosaic table CSV (`id,mosaic_id,x,y`); submissions are salt_jax.data.submission's."""
from __future__ import annotations

import numpy as np
import pandas as pd

from salt_jax.data import kaggle
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
