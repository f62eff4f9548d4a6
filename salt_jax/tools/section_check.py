"""Does context help? A fold's validation tiles scored from whole segmented mosaics vs one tile at a time.

The jigsaw mosaics that hold validation tiles of the fold are segmented whole (salt_jax.segment) with that
fold's snapshots only (only the windows overlapping a validation tile run, which gives those tiles exactly
the whole mosaic's result); every other tile of a mosaic (train tiles of the fold, test tiles) is context and
is never scored. Each validation tile's cell is cropped out of the section mask and scored with the
competition metric against its own mask, and all scored tiles' pixels together give the salt pixel IoU,
beside the masks `predict` gave the same tiles one by one (the
fold's cycle vote of its prediction files, as `ensemble` votes them). A tile placed in a cell that an
earlier row of the table already holds is not scored (the section shows the first, as `render` does).
"""
import time
from typing import Dict, Optional, Sequence

import numpy as np
import pandas as pd

from salt_jax import configlib, metrics
from salt_jax.data import sources
from salt_jax.geometry import TILE
from salt_jax.inference import ensemble
from salt_jax.jigsaw import tables
from salt_jax.seismic import files, infer
from salt_jax.workdir import rundir


def scored_cells(mosaics: pd.DataFrame, valid_ids: Sequence[str]) -> pd.DataFrame:
  """Rows id, mosaic_id, x, y of the validation tiles that own their mosaic cell, with `neighbours` (how
  many of the 4 side cells of the mosaic hold a tile)."""
  cells = mosaics.drop_duplicates(["mosaic_id", "x", "y"], keep="first")
  occupied = set(zip(cells["mosaic_id"], cells["x"], cells["y"]))
  rows = cells[cells["id"].isin(set(valid_ids))].copy()
  steps = ((1, 0), (-1, 0), (0, 1), (0, -1))
  rows["neighbours"] = [sum((m, x + dx, y + dy) in occupied for dx, dy in steps)
                        for m, x, y in zip(rows["mosaic_id"], rows["x"], rows["y"])]
  return rows.sort_values("id").reset_index(drop=True)


def cell_mask(shape, cells: pd.DataFrame) -> np.ndarray:
  """(H,W) bool: True on the cells (x, y in tile units) of `cells`."""
  mask = np.zeros(shape, bool)
  for x, y in zip(cells["x"], cells["y"]):
    mask[y * TILE:(y + 1) * TILE, x * TILE:(x + 1) * TILE] = True
  return mask


def crop_cells(mask: np.ndarray, cells: pd.DataFrame) -> Dict[str, np.ndarray]:
  """{id: (101,101) mask} of the tiles in `cells` (x, y in tile units) cut out of a section mask."""
  return {i: mask[y * TILE:(y + 1) * TILE, x * TILE:(x + 1) * TILE]
          for i, x, y in zip(cells["id"], cells["x"], cells["y"])}


def tile_votes(workdir, fold: int, kind: str = "max_map") -> Dict[str, np.ndarray]:
  """{validation id: (101,101) bool} the fold's cycle vote of predict's masks (ensemble.oof_votes)."""
  entry = ensemble.oof_votes(rundir.RunDir(workdir).prediction_files(kind))
  if fold not in entry:
    raise rundir.WorkdirError(f"no predictions of fold {fold} in {workdir}; run salt_jax.predict on it")
  return dict(zip(entry[fold]["ids"], entry[fold]["vote"] >= 0.5))


def tile_scores(masks: Dict[str, np.ndarray], cells: pd.DataFrame, truth: Dict[str, np.ndarray]
                ) -> np.ndarray:
  """(N,) competition score of each tile of `cells` (in its order)."""
  ids = cells["id"]
  return metrics.kaggle_scores(np.stack([masks[i] for i in ids]), np.stack([truth[i] for i in ids]))


def pixel_iou(masks: Dict[str, np.ndarray], cells: pd.DataFrame, truth: Dict[str, np.ndarray]) -> float:
  """Salt IoU over all the pixels of the tiles of `cells` together: |predicted and true| / |predicted or
  true| (what an interpreter reads off a section; NaN when neither has salt)."""
  pred = np.stack([masks[i] for i in cells["id"]]).astype(bool)
  true = np.stack([truth[i] for i in cells["id"]]).astype(bool)
  union = int(np.count_nonzero(pred | true))
  return float(np.count_nonzero(pred & true) / union) if union else np.nan


def score_row(method: str, scores: np.ndarray, changed: np.ndarray, reference: np.ndarray,
              cells: pd.DataFrame, iou: float = np.nan) -> Dict[str, object]:
  """One table row from per-tile scores (N,): the pixel IoU over all tiles (pixel_iou), the mAP over all
  tiles, by neighbour count and by whether the truth is empty, and the tiles whose mask differs from the
  reference (changed (N,) bool) with their mAP before (reference scores (N,)) and after."""
  mean = lambda values, sel: float(values[sel].mean()) if sel.any() else np.nan
  neighbours, empty = cells["neighbours"].to_numpy(), cells["truth_empty"].to_numpy()
  row = {"method": method, "tiles": len(scores), "pixel IoU": iou, "mAP": float(scores.mean())}
  for name, sel in (("0-2 neighbours", neighbours <= 2), ("3-4 neighbours", neighbours >= 3),
                    ("empty truth", empty), ("salt truth", ~empty)):
    row[f"mAP {name} ({int(sel.sum())})"] = mean(scores, sel)
  row["tiles changed"] = int(changed.sum())
  row["changed: per-tile mAP"] = mean(reference, changed)
  row["changed: this mAP"] = mean(scores, changed)
  return row


def segment_cells(workdir, fold: int, sections: Sequence[files.Section], cells: pd.DataFrame,
                  stride: int, kind: str, batch_size: Optional[int], phase: int = 0) -> Dict[str, object]:
  """{"masks": {id: mask}, "windows", "seconds"} of the fold's snapshots voted on every section.

  Only the windows that overlap a scored cell run: the cells get exactly the whole section's masks.
  """
  snaps = infer.find_snapshots([workdir], kind, [fold])
  loader = infer.SnapshotLoader(kind, batch_size)
  masks, windows, t0 = {}, 0, time.perf_counter()
  with rundir.RunDir(workdir).lock():
    for item in sections:
      section = item.load()
      here = cells[cells["mosaic_id"] == int(item.name.split("_")[1])]
      result = infer.segment_section(section, snaps, loader, stride, needed=cell_mask(section.shape, here),
                                       phase=phase)
      masks.update(crop_cells(result.mask, here))
      windows += result.windows * len(snaps[0])
  return {"masks": masks, "windows": windows, "seconds": time.perf_counter() - t0}


def fold_check(workdir, fold: int, source: sources.Source, mosaics_csv, strides: Sequence[int] = (101, 50),
               kind: str = "max_map", batch_size: Optional[int] = None,
               phases: Sequence[int] = (0,)) -> pd.DataFrame:
  """The table: predict's per-tile masks, then the mosaic sections at each stride and window phase (the
  phases below the stride; phase 50 at stride 101: windows across the tile borders, none overlapping), on
  the fold's validation tiles that lie in mosaics (attrs: "mosaics" count, each row's windows and seconds,
  and "tiles", the per-tile scores)."""
  run = rundir.RunDir(workdir)
  s = configlib.sections(run.fold_config(fold))
  train = source.train()
  _, valid_idx = run.fold_rows(s.data, fold, train.ids, train.masks, s.optim.seed)
  cells = scored_cells(tables.read_mosaics(mosaics_csv), train.ids[valid_idx])
  if not len(cells):
    raise rundir.WorkdirError(f"no validation tile of fold {fold} lies in a mosaic of {mosaics_csv}")
  truth = dict(zip(train.ids, train.masks))
  cells["truth_empty"] = [not truth[i].any() for i in cells["id"]]
  reference = tile_votes(workdir, fold, kind)
  cells["predict"] = tile_scores(reference, cells, truth)
  unchanged = np.zeros(len(cells), bool)
  rows = [score_row("predict, one tile at a time", cells["predict"].to_numpy(), unchanged,
                    cells["predict"].to_numpy(), cells, pixel_iou(reference, cells, truth))]
  sections = files.mosaic_sections(source, mosaics_csv, sorted(int(m) for m in cells["mosaic_id"].unique()))
  speed = {}
  for stride, phase in [(s, p) for s in strides for p in phases if p < s]:
    name = f"stride {stride}" + (f", phase {phase}" if phase else "")
    out = segment_cells(workdir, fold, sections, cells, stride, kind, batch_size, phase)
    cells[name] = tile_scores(out["masks"], cells, truth)
    changed = np.array([not np.array_equal(out["masks"][i], reference[i]) for i in cells["id"]])
    rows.append(score_row(f"segment, {name}", cells[name].to_numpy(), changed, cells["predict"].to_numpy(),
                          cells, pixel_iou(out["masks"], cells, truth)))
    speed[name] = {"windows": out["windows"], "seconds": round(out["seconds"], 1),
                   "windows_per_s": round(out["windows"] / out["seconds"], 2)}
  table = pd.DataFrame(rows)
  table.attrs.update(mosaics=len(sections), speed=speed, tiles=cells)
  return table
