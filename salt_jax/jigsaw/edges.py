"""Tile set, one-pixel edge extrapolation and edge descriptors for the jigsaw solver (SPEC 8.1).

Each 101x101 tile gets four 101-vectors: the linear extrapolation one pixel beyond its left, right, top and
bottom edge. Two tiles fit side by side (A left of B) when A's right extrapolation looks like B's left
extrapolation. Each of the four (N,101) matrices is normalised in two steps (per-position z-score over all
tiles, then per-tile z-score, both with ddof=1), after which the squared Euclidean distance between two
descriptors is 200 * (1 - r), r = Pearson correlation, so "distance < 10" means r > 0.5.

Differences from the original (documented in docs/jigsaw.md):
* Test tiles follow `sample_submission.csv` order (what `salt_jax.data.kaggle.load_test` returns); the
  original used the directory listing order, which is filesystem dependent. Only tie-breaks between equal
  distances (e.g. identical blank tiles, which never pass the ratio test anyway) depend on it.
* A tile whose normalised descriptor has zero spread (a constant vector after step 1) becomes the zero vector
  instead of NaN; its distance to every proper descriptor is exactly 10, so it never passes "d1 < 10".
"""
from __future__ import annotations

import dataclasses
from typing import Dict

import numpy as np

SIDES = ("left", "right", "top", "bottom")


@dataclasses.dataclass(frozen=True)
class TileSet:
  """All tiles the solver sees: train tiles first (train.csv order), then test tiles.

  Attributes:
    ids: (N,) str ids.
    images: (N,101,101) uint8 grayscale images.
    n_train: the first n_train tiles are train tiles.
  """
  ids: np.ndarray
  images: np.ndarray
  n_train: int


def tile_set_from_arrays(train_ids, train_images, test_ids, test_images) -> TileSet:
  """Concatenates train then test tiles (SPEC 8.1 order)."""
  ids = np.asarray(list(train_ids) + list(test_ids), dtype=object)
  images = np.concatenate([np.asarray(train_images, np.uint8), np.asarray(test_images, np.uint8)])
  return TileSet(ids=ids, images=images, n_train=len(train_ids))


def load_tile_set(source) -> TileSet:
  """Reads train and test images of a `salt_jax.data.sources.Source` (train.csv order, then test)."""
  train, test = source.train(), source.test()
  return tile_set_from_arrays(train.ids, train.images, test.ids, test.images)


def extrapolate_edges(images: np.ndarray) -> Dict[str, np.ndarray]:
  """Linear extrapolation one pixel beyond each edge, SPEC 8.1.

  Args:
    images: (N,101,101) images, any numeric dtype; scaled to [0, 1] floats if integer.
  Returns:
    {"left", "right", "top", "bottom"} -> (N,101) float64; "left"[n] = 2*A[n][:,0] - A[n][:,1] etc.
  """
  images = np.asarray(images)
  scale = 1.0 / 255.0 if np.issubdtype(images.dtype, np.integer) else 1.0

  def line(sl):  # only the two border lines are converted: the full stack in float64 is 1.8 GB
    return images[sl].astype(np.float64) * scale

  return {
      "left": 2 * line(np.s_[:, :, 0]) - line(np.s_[:, :, 1]),
      "right": 2 * line(np.s_[:, :, -1]) - line(np.s_[:, :, -2]),
      "top": 2 * line(np.s_[:, 0, :]) - line(np.s_[:, 1, :]),
      "bottom": 2 * line(np.s_[:, -1, :]) - line(np.s_[:, -2, :]),
  }


def normalise(edges: np.ndarray) -> np.ndarray:
  """Two-step z-score of an (N,101) edge matrix: each column over tiles, then each row (ddof=1).

  Zero-spread columns/rows are left at zero instead of dividing by zero (see module docstring).
  """
  e = np.asarray(edges, np.float64)
  e = e - e.mean(axis=0, keepdims=True)
  sd = e.std(axis=0, ddof=1, keepdims=True)
  e = np.divide(e, sd, out=np.zeros_like(e), where=sd > 0)
  e = e - e.mean(axis=1, keepdims=True)
  sd = e.std(axis=1, ddof=1, keepdims=True)
  return np.divide(e, sd, out=np.zeros_like(e), where=sd > 0)


def descriptors(images: np.ndarray) -> Dict[str, np.ndarray]:
  """The four normalised (N,101) edge descriptors of a tile stack (SPEC 8.1)."""
  return {side: normalise(e) for side, e in extrapolate_edges(images).items()}
