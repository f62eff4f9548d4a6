"""PNG rendering of mosaics: tiles placed at (x, y), known (train) and predicted masks tinted differently.

Train ground truth is tinted green, predictions red; empty cells are black. Used to eyeball the solver and the
rules on the largest mosaics (`python -m salt_jax.jigsaw render`).
"""
from __future__ import annotations

import pathlib
from typing import Dict, Mapping, Optional

import numpy as np
import pandas as pd

from salt_jax import viz
from salt_jax.geometry import TILE

TRAIN_TINT = (0, 255, 0)  # RGB
PRED_TINT = (255, 0, 0)


def render_mosaic(table: pd.DataFrame, images: Mapping[str, np.ndarray],
                  train_masks: Optional[Mapping[str, np.ndarray]] = None,
                  pred_masks: Optional[Mapping[str, np.ndarray]] = None, alpha: float = 0.35,
                  grid: bool = False) -> np.ndarray:
  """One mosaic as an (H*101, W*101, 3) uint8 RGB image.

  Args:
    table: rows id, x, y of one mosaic (x right, y down; the first row per cell wins).
    images: {id: (101,101) uint8}.
    train_masks / pred_masks: {id: (101,101) {0,1}}; a train mask wins over a prediction for the same id.
    alpha: tint opacity; grid: darken the first row/column of every cell to show tile borders.
  """
  train_masks = train_masks or {}
  pred_masks = pred_masks or {}
  w, h = int(table["x"].max()) + 1, int(table["y"].max()) + 1
  canvas = np.zeros((h * TILE, w * TILE, 3), np.float32)
  seen = set()
  for tid, x, y in zip(table["id"].astype(str), table["x"], table["y"]):
    if (x, y) in seen:
      continue
    seen.add((x, y))
    tile = np.repeat(np.asarray(images[tid], np.float32)[..., None], 3, axis=2)
    for masks, tint in ((train_masks, TRAIN_TINT), (pred_masks, PRED_TINT)):
      if tid in masks:
        m = np.asarray(masks[tid], bool)[..., None]
        tile = np.where(m, (1 - alpha) * tile + alpha * np.asarray(tint, np.float32), tile)
        break
    if grid:
      tile[0, :] *= 0.5
      tile[:, 0] *= 0.5
    canvas[y * TILE:(y + 1) * TILE, x * TILE:(x + 1) * TILE] = tile
  return np.clip(canvas, 0, 255).astype(np.uint8)


def largest_mosaics(mosaics: pd.DataFrame, top: int) -> list:
  """Ids of the `top` mosaics with the most tiles (ties: smaller id)."""
  sizes = mosaics.groupby("mosaic_id").size()
  order = sorted(sizes.index, key=lambda m: (-sizes[m], m))
  return order[:top]


def write_png(rgb: np.ndarray, path) -> None:
  """Writes an RGB uint8 image (OpenCV wants BGR), complete or not at all (viz.save_png)."""
  viz.save_png(path, np.ascontiguousarray(rgb[..., ::-1]))


def render_top(mosaics: pd.DataFrame, images: Dict[str, np.ndarray], out_dir, top: int = 3,
               train_masks=None, pred_masks=None, grid: bool = False) -> list:
  """Writes `mosaic_<id>.png` for the `top` largest mosaics; returns the paths."""
  paths = []
  for mid in largest_mosaics(mosaics, top):
    table = mosaics[mosaics["mosaic_id"] == mid]
    path = pathlib.Path(out_dir) / f"mosaic_{mid:04d}.png"
    write_png(render_mosaic(table, images, train_masks, pred_masks, grid=grid), path)
    paths.append(path)
  return paths
