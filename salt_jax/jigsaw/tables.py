"""CSV helpers for the jigsaw tools: mosaic tables and submissions as {id: (101,101) mask}, atomic writes."""
from __future__ import annotations

import os
import pathlib
from typing import Dict, Iterable, Optional

import numpy as np
import pandas as pd

from salt_jax.data import rle as rle_lib

MOSAIC_COLUMNS = ["id", "mosaic_id", "x", "y"]


def write_csv_atomic(frame: pd.DataFrame, path) -> None:
  """Writes `frame` (no index) to a temporary file beside `path`, then os.replace()s it into place."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
  try:
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)
  finally:
    if tmp.exists():
      tmp.unlink()


def read_mosaics(path) -> pd.DataFrame:
  """Mosaic table `id,mosaic_id,x,y` (one row per placed tile)."""
  frame = pd.read_csv(path, dtype={"id": str})
  if list(frame.columns) != MOSAIC_COLUMNS:
    raise ValueError(f"{path}: expected columns {','.join(MOSAIC_COLUMNS)}, got {list(frame.columns)}")
  return frame


def read_submission(path, ids: Optional[Iterable[str]] = None) -> Dict[str, np.ndarray]:
  """Submission CSV `id,rle_mask` -> {id: (101,101) uint8 {0,1}} in file order (optionally only `ids`)."""
  frame = pd.read_csv(path, dtype={"id": str, "rle_mask": str}, keep_default_na=False)
  if list(frame.columns) != ["id", "rle_mask"]:
    raise ValueError(f"{path}: expected columns id,rle_mask, got {list(frame.columns)}")
  if ids is not None:
    want = set(ids)
    frame = frame[frame["id"].isin(want)]
    missing = want - set(frame["id"])
    if missing:
      raise ValueError(f"{path}: {len(missing)} requested ids missing, e.g. {sorted(missing)[:3]}")
  masks = rle_lib.rle_decode_many(frame["rle_mask"].tolist(), names=frame["id"].tolist())
  return dict(zip(frame["id"].tolist(), masks))


def submission_frame(masks: Dict[str, np.ndarray]) -> pd.DataFrame:
  """{id: mask} -> DataFrame `id,rle_mask` (dict order)."""
  ids = list(masks)
  rles = rle_lib.rle_encode_many(np.stack([masks[i] for i in ids])) if ids else []
  return pd.DataFrame({"id": ids, "rle_mask": rles})


def write_submission(masks: Dict[str, np.ndarray], path) -> None:
  """Atomic `id,rle_mask` CSV of {id: mask}."""
  write_csv_atomic(submission_frame(masks), path)
