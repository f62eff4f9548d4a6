"""Compact encodings of binary masks: Kaggle's run-length encoding (SPEC 7.4), vectorised with NumPy, and
the bit-packing of the decoded-data cache and of the prediction files.

RLE: pixels are numbered column-major (transpose, then row-major flatten: index = col * H + row), runs are
"start length" pairs with 1-indexed starts, space separated; an empty mask is "". Nonzero pixels are salt.
"""
import itertools
import re
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from salt_jax import geometry
from salt_jax.data.errors import DataError, plain

_TOKEN = re.compile(r"-?\d+", re.ASCII)
_WELL_FORMED = re.compile(r"\s*(\d+\s+\d+(\s+\d+\s+\d+)*)?\s*", re.ASCII)
RleLike = Union[str, float, None]


def pack_masks(masks: np.ndarray) -> np.ndarray:
  """(N,101,101) masks (nonzero: salt) -> (N,1276) uint8, each mask's pixels row-major, 8 to a byte."""
  return np.packbits(masks.reshape(len(masks), -1).astype(bool), axis=1)


def unpack_masks(packed: np.ndarray) -> np.ndarray:
  """Inverse of pack_masks: (N,1276) uint8 -> (N,101,101) uint8 {0,1}."""
  return np.unpackbits(packed, axis=1, count=geometry.TILE_PIXELS).reshape(-1, *geometry.TILE_SHAPE)


def _runs(masks: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(mask index, 0-indexed start, length) of every salt run of (N,H,W) masks in Kaggle pixel order."""
  n, h, w = masks.shape
  padded = np.zeros((n, h * w + 2), np.int8)  # zero borders: changes alternate start, end within each row
  padded[:, 1:-1].reshape(n, w, h)[...] = masks.transpose(0, 2, 1) != 0   # column-major flatten
  change = np.flatnonzero(np.diff(padded.ravel()))
  begin, end = change[0::2], change[1::2]
  return begin // (h * w + 2), begin % (h * w + 2), end - begin


def rle_encode_many(masks: np.ndarray) -> list:
  """(N,H,W) masks (nonzero = salt) -> N Kaggle RLE strings."""
  masks = np.asarray(masks)
  if masks.ndim != 3:
    raise ValueError(f"rle_encode_many expects (N,H,W) masks, got shape {masks.shape}")
  rows, begin, length = _runs(masks)
  pairs = np.stack([begin + 1, length], axis=1).astype(str)
  bounds = np.searchsorted(rows, np.arange(len(masks) + 1))
  return [" ".join(pairs[a:b].ravel()) for a, b in zip(bounds[:-1], bounds[1:])]


def rle_encode(mask: np.ndarray) -> str:
  """(H,W) mask (nonzero = salt) -> Kaggle RLE string ("" if empty)."""
  mask = np.asarray(mask)
  if mask.ndim != 2:
    raise ValueError(f"rle_encode expects an (H,W) mask, got shape {mask.shape}")
  return rle_encode_many(mask[None])[0]


def _is_empty(rle: RleLike) -> bool:
  return rle is None or (isinstance(rle, (float, np.floating)) and bool(np.isnan(rle)))


def _parse(rle: RleLike, size: int, name: str) -> np.ndarray:
  """One RLE -> (R,2) int64 [start (1-indexed), length], validated against a mask of `size` pixels."""
  if _is_empty(rle):
    return np.zeros((0, 2), np.int64)
  if not isinstance(rle, str):
    raise DataError(f"{name}: RLE must be a string, NaN or None, got {type(rle).__name__} {plain(rle)!r}")
  tokens = rle.split()
  bad = [t for t in tokens if not _TOKEN.fullmatch(t)]
  if bad:
    raise DataError(f"{name}: malformed RLE, non-integer token {bad[0]!r}")
  if len(tokens) % 2:
    raise DataError(f"{name}: malformed RLE, odd number of values ({len(tokens)})")
  capped = [max(min(int(t), 2**61), -2**61) for t in tokens]  # no int64 overflow in start + length
  runs = np.array(capped, np.int64).reshape(-1, 2)
  start, length = runs[:, 0], runs[:, 1]
  if np.any(start < 1):
    raise DataError(f"{name}: malformed RLE, start {int(start[start < 1][0])} < 1")
  if np.any(length < 1):
    raise DataError(f"{name}: malformed RLE, run length {int(length[length < 1][0])} < 1")
  end = start + length - 1
  if np.any(end > size):
    i = int(np.argmax(end > size))
    raise DataError(f"{name}: RLE out of bounds, run '{start[i]} {length[i]}' ends at pixel {end[i]} "
                    f"> {size}")
  if np.any(start[1:] <= end[:-1]):
    i = int(np.argmax(start[1:] <= end[:-1]))
    raise DataError(f"{name}: malformed RLE, run starting at {start[i + 1]} overlaps or precedes the run "
                    f"'{start[i]} {length[i]}' (runs must be sorted and disjoint)")
  return runs


def _parse_all(rles: Sequence[RleLike], size: int, names: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
  """All runs at once: ((R,2) [start, length], (N,) run counts); falls back to `_parse` to name an error."""
  strings = ["" if _is_empty(r) else plain(r) for r in rles]
  if not all(isinstance(r, str) and _WELL_FORMED.fullmatch(r) for r in strings):
    for r, text, n in zip(rles, strings, names):
      _parse(r, size, n)
      if not _WELL_FORMED.fullmatch(text):
        raise DataError(f"{n}: malformed RLE {text!r}")
  split = [r.split() for r in strings]
  counts = np.array([len(t) // 2 for t in split], np.int64)
  try:
    runs = np.array(list(itertools.chain.from_iterable(split)), np.int64).reshape(-1, 2)
  except OverflowError:
    for r, n in zip(rles, names):
      _parse(r, size, n)
    raise
  start, length = runs[:, 0], runs[:, 1]
  end = start + length - 1
  first = np.zeros(len(runs), bool)
  first[(np.cumsum(counts) - counts)[counts > 0]] = True
  bad = (start < 1) | (length < 1) | (end > size)
  bad[1:] |= ~first[1:] & (start[1:] <= end[:-1])
  if bad.any():
    for r, n in zip(rles, names):
      _parse(r, size, n)
  return runs, counts


def rle_decode_many(rles: Sequence[RleLike], shape: Tuple[int, int] = geometry.TILE_SHAPE,
                    names: Optional[Sequence[str]] = None) -> np.ndarray:
  """N RLEs (str, or NaN/None for empty) -> (N,H,W) uint8 {0,1}; `names` label errors (e.g. image ids)."""
  h, w = shape
  size = h * w
  rles = list(rles)
  names = list(names) if names is not None else [f"RLE #{i}" for i in range(len(rles))]
  if len(names) != len(rles):
    raise ValueError(f"{len(names)} names for {len(rles)} RLEs")
  runs, counts = _parse_all(rles, size, names)
  offset = np.repeat(np.arange(len(rles), dtype=np.int64) * size, counts)
  delta = np.zeros(len(rles) * size + 1, np.int8)
  delta[offset + runs[:, 0] - 1] += 1                # starts are unique (runs are disjoint) ...
  delta[offset + runs[:, 0] - 1 + runs[:, 1]] -= 1   # ... and so are the ends
  flat = np.cumsum(delta[:-1], dtype=np.int8).view(np.uint8)
  return np.ascontiguousarray(flat.reshape(len(rles), w, h).transpose(0, 2, 1))


def rle_decode(rle: RleLike, shape: Tuple[int, int] = geometry.TILE_SHAPE) -> np.ndarray:
  """Kaggle RLE (str, or NaN/None = empty) -> (H,W) uint8 {0,1} mask."""
  return rle_decode_many([rle], shape)[0]
