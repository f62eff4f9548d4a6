"""CSV helpers for the jigsaw tools: mosaic tables, and submissions as {id: (101,101) mask}."""
from __future__ import annotations

from typing import Dict, Iterable, Optional

import numpy as np
import pandas as pd

from salt_jax.data import submission

MOSAIC_COLUMNS = ["id", "mosaic_id", "x", "y"]


def read_mosaics(path) -> pd.DataFrame:
  """Mosaic table `id,mosaic_id,x,y` (one row per placed tile)."""
  frame = pd.read_csv(path, dtype={"id": str})
  if list(frame.columns) != MOSAIC_COLUMNS:
    raise ValueError(f"{path}: expected columns {','.join(MOSAIC_COLUMNS)}, got {list(frame.columns)}")
  return frame


def read_submission(path, ids: Optional[Iterable[str]] = None) -> Dict[str, np.ndarray]:
  """Submission CSV -> {id: (101,101) uint8 {0,1}} in file order (optionally only `ids`)."""
  found, masks = submission.read_submission(path, None if ids is None else list(ids))
  return dict(zip(found.tolist(), masks))


def write_submission(masks: Dict[str, np.ndarray], path) -> None:
  """Atomic `id,rle_mask` CSV of {id: mask} (dict order)."""
  ids = list(masks)
  submission.write_submission(path, ids, np.stack([masks[i] for i in ids]) if ids else np.zeros((0, 101, 101)))
