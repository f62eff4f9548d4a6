"""Submissions: the `Submission` type every step hands on, and its Kaggle CSV (`id,rle_mask`).

The ensemble votes one, the jigsaw rules change one, pseudo-labelling and the pipeline read one. A Kaggle
submission holds exactly the ids of `sample_submission.csv`, each once. The ids are checked on the raw CSV
frame, before any mask is decoded or any file is written; errors are `DataError`s naming the file and a few
of the offending ids.
"""
import collections.abc
import dataclasses
import functools
from typing import Dict, Iterator, List, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from salt_jax import fileio, geometry
from salt_jax.data import kaggle, rle
from salt_jax.data.errors import DataError, plain, preview

COLUMNS = ["id", "rle_mask"]
SAMPLE = kaggle.SAMPLE_SUBMISSION


@dataclasses.dataclass(frozen=True, eq=False)
class Submission(collections.abc.Mapping):
  """Masks of tiles by id, in order: ids (N,) str, each once; masks (N,101,101) uint8 {0,1}.

  Also a read-only mapping id -> (101,101) mask, so that the jigsaw rules look tiles up by id as they are.
  """
  ids: np.ndarray
  masks: np.ndarray

  def __post_init__(self):
    ids = np.asarray([plain(i) for i in self.ids], dtype=str).reshape(-1)
    masks = np.asarray(self.masks)
    masks = np.zeros((0, *geometry.TILE_SHAPE), np.uint8) if masks.size == 0 else masks.astype(np.uint8)
    if masks.shape != (len(ids), *geometry.TILE_SHAPE):
      raise ValueError(f"masks must be ({len(ids)},{geometry.TILE},{geometry.TILE}), got {masks.shape}")
    dup = _duplicates(ids.tolist())
    if dup:
      raise ValueError(f"a submission holds each id once; {len(dup)} duplicated: {preview(dup)}")
    object.__setattr__(self, "ids", ids)
    object.__setattr__(self, "masks", masks)

  @functools.cached_property
  def _rows(self) -> Dict[str, int]:
    return {i: k for k, i in enumerate(self.ids.tolist())}

  def __getitem__(self, tile_id: str) -> np.ndarray:
    return self.masks[self._rows[tile_id]]

  def __contains__(self, tile_id) -> bool:
    return tile_id in self._rows

  def __iter__(self) -> Iterator[str]:
    return iter(self.ids.tolist())

  def __len__(self) -> int:
    return len(self.ids)

  def __eq__(self, other) -> bool:
    return (isinstance(other, Submission) and np.array_equal(self.ids, other.ids)
            and np.array_equal(self.masks, other.masks))

  __hash__ = None

  def select(self, ids: Sequence[str]) -> "Submission":
    """The tiles `ids`, in that order; KeyError naming the ids it lacks."""
    ids = [plain(i) for i in ids]
    missing = [i for i in ids if i not in self._rows]
    if missing:
      raise KeyError(f"no mask for {len(missing)} of the requested ids: {preview(missing)}")
    return Submission(np.asarray(ids, dtype=str), self.masks[[self._rows[i] for i in ids]])

  def replace(self, masks: Mapping[str, np.ndarray]) -> "Submission":
    """A copy with the masks of some of its tiles replaced ({id: (101,101) mask}; ids it holds only)."""
    out = self.masks.copy()
    for tile_id, mask in masks.items():
      out[self._rows[tile_id]] = mask
    return Submission(self.ids, out)

  @staticmethod
  def concat(parts: Sequence["Submission"]) -> "Submission":
    """The tiles of every part, in order (an id may occur in one part only)."""
    return Submission(np.concatenate([p.ids for p in parts]), np.concatenate([p.masks for p in parts]))


def write_csv_atomic(frame: pd.DataFrame, path) -> None:
  """Writes `frame` (no index) through `fileio.atomic_path`, so a crash never leaves a half-written CSV."""
  with fileio.atomic_path(path) as tmp:
    frame.to_csv(tmp, index=False)


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


def write_submission(path, sub: Submission, sample_ids: Optional[Sequence[str]] = None) -> None:
  """Writes the submission as `id,rle_mask`, atomically; with `sample_ids`, checks its ids equal them and
  writes in their order (nothing is written when the check fails)."""
  if sample_ids is not None:
    check_ids(sub.ids, sample_ids, str(path))
    sub = sub.select(sample_ids)
  rles = rle.rle_encode_many(sub.masks) if len(sub) else []
  write_csv_atomic(pd.DataFrame({"id": sub.ids, "rle_mask": rles}), path)


def read_submission(path, ids: Optional[Sequence[str]] = None, sample_ids: Optional[Sequence[str]] = None
                    ) -> Submission:
  """The submission CSV at `path`, in file order, or only its tiles `ids` in their order.

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
  return Submission(frame["id"].to_numpy(str), masks)


def check_file(path, sample_ids: Sequence[str]) -> None:
  """Raises DataError unless the CSV at `path` is a complete submission: exactly `sample_ids`, each once,
  every RLE well formed."""
  read_submission(path, sample_ids=sample_ids)

