"""Kaggle submission CSVs (`id,rle_mask`), shared by ensemble, jigsaw, pseudo and the pipeline.

A submission holds exactly the ids of `sample_submission.csv`, each once. The ids are checked on the raw CSV
frame, before any dict is built or any file is written; errors are `DataError`s naming the file and a few of
the offending ids.
"""
import pathlib
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from salt_jax import fileio, geometry
from salt_jax.data import kaggle, rle
from salt_jax.data.errors import DataError, plain, preview

COLUMNS = ["id", "rle_mask"]
SAMPLE = "sample_submission.csv"


def write_csv_atomic(frame: pd.DataFrame, path) -> None:
  """Writes `frame` (no index) through `fileio.atomic_path`, so a crash never leaves a half-written CSV."""
  with fileio.atomic_path(path) as tmp:
    frame.to_csv(tmp, index=False)


def read_sample_ids(data_dir) -> List[str]:
  """The ids of `<data_dir>/sample_submission.csv`, in file order.

  Raises DataError naming the file when it is missing, empty, not UTF-8, has columns other than id,rle_mask,
  or an empty or duplicate id.
  """
  path = pathlib.Path(data_dir) / SAMPLE
  ids = kaggle.read_csv(path, COLUMNS)["id"].tolist()
  if not ids:
    raise DataError(f"{path} lists no ids")
  return ids


def _duplicates(ids: Sequence[str]) -> List[str]:
  """Ids that occur more than once, each listed once, in the order of their first repeat."""
  seen, dup = set(), {}
  for i in ids:
    if i in seen:
      dup[i] = None
    seen.add(i)
  return list(dup)


def id_problems(ids: Sequence[str], sample_ids: Optional[Sequence[str]] = None) -> List[str]:
  """What is wrong with a submission's ids: "N missing: 'a', ..." (in sample order), "N unknown: ..." (not
  in the sample, file order), "N duplicated: ..."; only duplicates without `sample_ids`. [] if nothing."""
  ids = [plain(i) for i in ids]
  problems = []
  if sample_ids is not None:
    sample_ids = [plain(i) for i in sample_ids]
    found, expected = set(ids), set(sample_ids)
    missing = [i for i in sample_ids if i not in found]
    unknown = [i for i in dict.fromkeys(ids) if i not in expected]
    if missing:
      problems.append(f"{len(missing)} missing: {preview(missing)}")
    if unknown:
      problems.append(f"{len(unknown)} unknown: {preview(unknown)}")
  dup = _duplicates(ids)
  if dup:
    problems.append(f"{len(dup)} duplicated: {preview(dup)}")
  return problems


def check_ids(ids: Sequence[str], sample_ids: Sequence[str], source: str = "submission") -> None:
  """Raises DataError unless `ids` are exactly `sample_ids`, each once; the message names `source` and a
  few missing, unknown and duplicated ids."""
  dup = _duplicates([plain(i) for i in sample_ids])
  if dup:
    raise DataError(f"{SAMPLE} lists {len(dup)} id(s) more than once: {preview(dup)}")
  problems = id_problems(ids, sample_ids)
  if problems:
    raise DataError(f"{source}: ids differ from {SAMPLE}: {'; '.join(problems)}")


def write_submission(path, ids: Sequence[str], masks: np.ndarray,
                     sample_ids: Optional[Sequence[str]] = None) -> None:
  """Writes (N,101,101) {0,1} masks as `id,rle_mask`, atomically; with `sample_ids`, checks the ids
  equal them and writes in their order (nothing is written when the check fails)."""
  ids = list(ids)
  if sample_ids is not None:
    check_ids(ids, sample_ids, str(path))
    order = pd.Series(np.arange(len(ids)), index=ids)[list(sample_ids)].to_numpy()
    ids, masks = list(sample_ids), masks[order]
  rles = rle.rle_encode_many(masks) if len(ids) else []
  write_csv_atomic(pd.DataFrame({"id": ids, "rle_mask": rles}), path)


def read_submission(path, ids: Optional[Sequence[str]] = None, sample_ids: Optional[Sequence[str]] = None
                    ) -> Tuple[np.ndarray, np.ndarray]:
  """(ids (N,), masks (N,101,101) uint8) of a submission CSV, in file order, or only `ids` in their order.

  Duplicate ids are an error, and so is a requested id the file lacks; with `sample_ids` the file must hold
  exactly those ids (see `check_ids`). RLE errors name the file and the id.
  """
  frame = kaggle.read_frame(path, COLUMNS)
  if sample_ids is not None:
    check_ids(frame["id"], sample_ids, str(path))
  else:
    dup = _duplicates(frame["id"].tolist())
    if dup:
      raise DataError(f"{path}: {len(dup)} duplicated id(s): {preview(dup)}")
  if ids is not None:
    ids = [plain(i) for i in ids]
    lookup = frame.set_index("id")["rle_mask"]
    missing = [i for i in ids if i not in lookup.index]
    if missing:
      raise DataError(f"{path} has no mask for {len(missing)} of the requested ids: {preview(missing)}")
    frame = pd.DataFrame({"id": ids, "rle_mask": lookup.loc[ids].to_numpy()})
  names = [f"{path} id {i!r}" for i in frame["id"].tolist()]
  masks = rle.rle_decode_many(frame["rle_mask"].tolist(), geometry.TILE_SHAPE, names=names)
  return frame["id"].to_numpy(), masks


def check_file(path, sample_ids: Sequence[str]) -> None:
  """Raises DataError unless the CSV at `path` is a complete submission: exactly `sample_ids`, each once,
  every RLE well formed."""
  read_submission(path, sample_ids=sample_ids)

