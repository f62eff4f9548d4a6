"""Kaggle submission CSVs (`id,rle_mask`) and atomic CSV writes, shared by ensemble, jigsaw and pseudo."""
import os
import pathlib
from typing import Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from salt_jax.data import rle

COLUMNS = ["id", "rle_mask"]
TILE = (101, 101)


def write_csv_atomic(frame: pd.DataFrame, path) -> None:
  """Writes `frame` (no index) to a temporary file beside `path`, then os.replace()s it into place, so a
  crash never leaves a half-written CSV."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
  try:
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)
  finally:
    if tmp.exists():
      tmp.unlink()


def check_ids(ids: Sequence[str], sample_ids: Sequence[str]) -> None:
  """A submission must hold exactly the ids of sample_submission.csv."""
  ids, sample_ids = list(ids), list(sample_ids)
  missing, extra = sorted(set(sample_ids) - set(ids)), sorted(set(ids) - set(sample_ids))
  if missing or extra:
    raise ValueError(f"submission ids differ from sample_submission.csv: {len(missing)} missing "
                     f"(e.g. {missing[:3]}), {len(extra)} extra (e.g. {extra[:3]})")
  if len(ids) != len(set(ids)) or len(sample_ids) != len(set(sample_ids)):
    raise ValueError("duplicate ids in the submission or in sample_submission.csv")


def write_submission(path, ids: Sequence[str], masks: np.ndarray,
                     sample_ids: Optional[Sequence[str]] = None) -> None:
  """Writes (N,101,101) {0,1} masks as `id,rle_mask`, atomically; with `sample_ids`, checks the ids
  equal them and writes in their order."""
  ids = list(ids)
  if sample_ids is not None:
    check_ids(ids, sample_ids)
    order = pd.Series(np.arange(len(ids)), index=ids)[list(sample_ids)].to_numpy()
    ids, masks = list(sample_ids), masks[order]
  rles = rle.rle_encode_many(masks) if len(ids) else []
  write_csv_atomic(pd.DataFrame({"id": ids, "rle_mask": rles}), path)


def read_submission(path, ids: Optional[Sequence[str]] = None) -> Tuple[np.ndarray, np.ndarray]:
  """(ids (N,), masks (N,101,101) uint8) of a submission CSV, in file order, or only `ids` in their
  order (an id the file lacks is an error)."""
  frame = pd.read_csv(path, dtype={"id": str, "rle_mask": str}, keep_default_na=False)
  if list(frame.columns) != COLUMNS:
    raise ValueError(f"{path}: expected columns id,rle_mask, got {list(frame.columns)}")
  if ids is not None:
    ids = list(ids)
    lookup = frame.set_index("id")["rle_mask"]
    missing = [i for i in ids if i not in lookup.index]
    if missing:
      raise ValueError(f"{path} has no mask for {len(missing)} of the requested ids (e.g. {missing[:3]})")
    frame = pd.DataFrame({"id": ids, "rle_mask": lookup.loc[ids].to_numpy()})
  masks = rle.rle_decode_many(frame["rle_mask"].tolist(), TILE, names=frame["id"].tolist())
  return frame["id"].to_numpy(), masks
