"""Segment whole seismic sections with trained snapshots, not only 101x101 competition tiles.

    python -m salt_jax.segment --workdirs=runs/model_34[,runs/model_50A] --input=section.png --out=seg/
    python -m salt_jax.segment --workdirs=runs/model_34 --input=sections/ --out=seg/ --save_probs
    python -m salt_jax.segment --workdirs=runs/model_34 --mosaic=0,3 --mosaics=mosaics.csv \
        --data_dir=../shared/tgs --out=seg/

An input is a PNG (grayscale, or RGB read as grayscale), a 2-D `.npy` array or a folder of them. A
uint8 array is used as it is; any other array is clipped to its `--clip_percentiles` (default the 1st and
99th percentile of the section) and mapped linearly onto 0..255. `--mosaic` builds the grey section of a
jigsaw mosaic from its tiles (empty cells black, as `jigsaw render` draws them, without its tints).

Each section is cut into 101x101 windows every `--stride` pixels (default 101) of its reflect-padded copy
(salt_jax.seismic.sections); each window is predicted exactly as `predict` predicts a tile (the same compiled
flip TTA, padded to the model's canvas), in batches of `--batch_size` windows (a positive integer; unset,
the config's eval_batch_size). Per snapshot the windows' probabilities are blended with a smooth weight
and binarised at the snapshot's threshold (the one `predict` recorded for it when its prediction file is
newer than the snapshot, else the one training recorded); the snapshots vote as in `ensemble`: per
workdir the mean of its snapshots' masks, then the equal-weight mean over workdirs, salt where >= 0.5.
Per-tile empty handling (gates) is not applied.

Writes `<name>_mask.png` (0/255, the input's size), `<name>_overlay.png` (the section with the salt
outlined in red) and, with `--save_probs`, `<name>_probs.npy` (float16, the mean over workdirs of the
mean over snapshots of the blended probabilities). Every input, workdir and output path is checked
before anything is written; a bad one stops the command with one line naming it, and so does an output
that already exists (a second run into the same --out), unless `--overwrite` lets the run replace it.

    python -m salt_jax.segment --workdirs=runs/model_34 --input=volume.sgy --out=seg/ --sections=both \
        --inlines=1200:1400 --write=mask --png_inlines=1300

A `.sgy`/`.segy` input is a SEG-Y 3-D volume or 2-D line (salt_jax.seismic.segy): its amplitudes are scaled
with the percentiles of the whole file, its inline sections, crossline sections or both (averaged) are
segmented as (samples, traces) images, depth down, and `<stem>_probs.sgy` (or `_mask.sgy`) is a copy of
the file with the float32 result in its traces (segment_segy; README "Whole sections").
"""
import contextlib
import dataclasses
import json
import pathlib
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import cv2
import jax
import numpy as np
import tqdm
from absl import app, flags, logging
from scipy import special

from salt_jax import configlib, errors, fileio, parallel, viz
from salt_jax.data import kaggle, sources
from salt_jax.geometry import TILE
from salt_jax.inference import predict
from salt_jax.jigsaw import render, tables
from salt_jax.seismic import sections, segy
from salt_jax.workdir import rundir

SUFFIXES = (".png", ".npy")
DEFAULT_STRIDE = 101  # overlapping windows lowered the pixel IoU and mAP of every model measured (README)
DEFAULT_PERCENTILES = (1.0, 99.0)


class InputError(errors.BadInput):
  """A section that cannot be segmented (unreadable, not 2-D, not finite, too small); names the file."""


@dataclasses.dataclass(frozen=True)
class Section:
  """One input: its output name, where it comes from, and a loader returning (H,W) uint8."""
  name: str
  origin: str
  load: Callable[[], np.ndarray]


class Snapshot(NamedTuple):
  workdir: str
  fold: int
  cycle: int
  path: pathlib.Path


# Inputs.
def to_uint8(array: np.ndarray, percentiles: Tuple[float, float] = DEFAULT_PERCENTILES) -> np.ndarray:
  """(H,W) real array -> (H,W) uint8: uint8 as it is; otherwise clipped to the section's percentiles
  (lo, hi) and mapped linearly onto 0..255 (a constant section becomes mid-grey 128)."""
  if array.dtype == np.uint8:
    return array
  values = array.astype(np.float64)
  return scale_uint8(values, *np.percentile(values, percentiles))


def scale_uint8(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
  """Real array -> uint8 of its shape: clipped to [lo, hi], mapped linearly onto 0..255 (128 if hi <= lo)."""
  if hi <= lo:
    return np.full(values.shape, 128, np.uint8)
  values = values.astype(np.float64)
  return np.rint((np.clip(values, lo, hi) - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _read_png(path: pathlib.Path) -> np.ndarray:
  """A PNG as (H,W) uint8 grey (OpenCV: RGB converted, 16-bit reduced to 8-bit)."""
  image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
  if image is None:
    raise InputError(f"{path}: unreadable image")
  return image


def _read_npy(path: pathlib.Path, percentiles: Tuple[float, float]) -> np.ndarray:
  """A 2-D finite real `.npy` array as (H,W) uint8 (to_uint8)."""
  try:
    array = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError) as e:
    raise InputError(f"{path}: unreadable array ({str(e).splitlines()[0][:120]})") from e
  if array.ndim != 2:
    raise InputError(f"{path}: a {array.ndim}-D array of shape {array.shape}; a section is a 2-D array")
  if array.dtype.kind not in "biuf":
    raise InputError(f"{path}: array of dtype {array.dtype}; a section holds real numbers")
  bad = int(np.count_nonzero(~np.isfinite(array))) if array.dtype.kind == "f" else 0
  if bad:
    raise InputError(f"{path}: {bad} NaN or infinite value(s); a section must be finite")
  return to_uint8(array, percentiles)


def read_section(path, percentiles: Tuple[float, float] = DEFAULT_PERCENTILES) -> np.ndarray:
  """A PNG or `.npy` section file -> (H,W) uint8; InputError naming the file when it cannot be used."""
  path = pathlib.Path(path)
  section = _read_png(path) if path.suffix.lower() == ".png" else _read_npy(path, percentiles)
  return check_size(section, str(path))


def check_size(section: np.ndarray, origin: str) -> np.ndarray:
  """The section, unless it is smaller than a tile in either direction (InputError naming `origin`)."""
  if min(section.shape) < TILE:
    height, width = section.shape
    raise InputError(f"{origin}: the section is {height} x {width} px (height x width), smaller than a "
                     f"{TILE} x {TILE} tile")
  return section


def file_sections(path, percentiles: Tuple[float, float] = DEFAULT_PERCENTILES) -> List[Section]:
  """The sections of a PNG or `.npy` file, or of every such file in a folder (sorted by name)."""
  path = pathlib.Path(path)
  if path.is_dir():
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
    if not files:
      raise InputError(f"{path}: no .png or .npy section in this folder")
  elif path.is_file():
    if path.suffix.lower() not in SUFFIXES:
      raise InputError(f"{path}: not a .png or .npy section")
    files = [path]
  else:
    raise InputError(f"{path}: no such file or folder")
  return [Section(p.stem, str(p), lambda p=p: read_section(p, percentiles)) for p in files]


def mosaic_sections(source: sources.Source, mosaics_csv, mosaic_ids: Sequence[int]) -> List[Section]:
  """The grey sections (rows*101, cols*101) uint8 of jigsaw mosaics, named mosaic_<id>, from the tiles of
  the data folder placed as the mosaic table says (empty cells 0)."""
  table = tables.read_mosaics(mosaics_csv)
  unknown = sorted(set(mosaic_ids) - set(table["mosaic_id"]))
  if unknown:
    raise InputError(f"{mosaics_csv}: no mosaic {unknown[0]} in this table")
  train, test = source.train(), source.test()
  images = dict(zip(train.ids.tolist(), train.images))
  images.update(zip(test.ids.tolist(), test.images))
  out = []
  for mid in mosaic_ids:
    section = render.render_mosaic(table[table["mosaic_id"] == mid], images)[..., 0]
    origin = f"{mosaics_csv} mosaic {mid}"
    out.append(Section(f"mosaic_{mid:04d}", origin, lambda s=section, o=origin: check_size(s, o)))
  return out


# Snapshots.
def find_snapshots(workdir, kind: str = "max_map", folds: Optional[Sequence[int]] = None) -> List[Snapshot]:
  """Every `kind` snapshot of the workdir (of the listed folds); WorkdirError naming it when there is none."""
  run = rundir.RunDir(workdir)
  found = [Snapshot(str(workdir), f, c, p) for f, c, p in run.snapshots(kind) if folds is None or f in folds]
  if not found:
    which = f" of folds {list(folds)}" if folds is not None else ""
    raise rundir.WorkdirError(f"no {kind} snapshots{which} in {workdir}; train a fold first")
  for fold in sorted({s.fold for s in found}):
    run.fold_config(fold)  # readable before anything is computed
  return found


def snapshot_threshold(snap: Snapshot, kind: str, meta: Dict[str, Any]) -> Tuple[float, str]:
  """(logit threshold, where it was recorded): predict's, when its prediction file of the snapshot is not
  older than the snapshot (as ensemble votes it), else the one training recorded in the snapshot."""
  pred = rundir.RunDir(snap.workdir).prediction_file(kind, snap.fold, snap.cycle)
  if pred.is_file() and pred.stat().st_mtime >= snap.path.stat().st_mtime:
    recorded = predict.prediction_meta(pred)
    gate = recorded.get("gate") or {}
    if gate.get("min_area", 0) or gate.get("empty_above", 1.0) < 1 or gate.get("salt_below", 0.0) > 0:
      logging.warning("%s: its per-tile gate %s is not applied to sections, only its threshold", pred, gate)
    return float(recorded["threshold"]), str(pred)
  if meta.get("val_threshold") is None:
    raise rundir.WorkdirError(f"snapshot {snap.path} records no val_threshold; run predict on {snap.workdir}")
  return float(meta["val_threshold"]), str(snap.path)


class SnapshotLoader:
  """Per snapshot, a window function (B,101,101) uint8 -> (B,101,101) float32 probabilities and its
  threshold; each model configuration's predictor is made once (predict.Predictors)."""

  def __init__(self, kind: str = "max_map", batch_size: Optional[int] = None, keep: bool = False):
    if batch_size is not None and batch_size < 1:
      raise errors.BadInput("batch_size must be a positive number of windows (unset: the config's "
                       f"eval_batch_size), got {batch_size}")
    self.kind, self.batch_size = kind, batch_size
    self.predictors = predict.Predictors(parallel.make_mesh(), batch_size)
    self.mesh = self.predictors.mesh
    self._kept: Optional[Dict[Snapshot, Tuple]] = {} if keep else None

  def load(self, snap: Snapshot) -> Tuple[Callable[[np.ndarray], np.ndarray], float, int]:
    """(window function, logit threshold, windows per call) of one snapshot; with `keep` every snapshot is
    loaded once and its weights stay in memory (a volume's many sections), else it is read at each call."""
    if self._kept is None:
      return self._load(snap)
    if snap not in self._kept:
      self._kept[snap] = self._load(snap)
    return self._kept[snap]

  def _load(self, snap: Snapshot) -> Tuple[Callable[[np.ndarray], np.ndarray], float, int]:
    s = configlib.sections(rundir.RunDir(snap.workdir).fold_config(snap.fold))
    variables, meta = predict.load_snapshot(s, snap.path, self.mesh)
    threshold, recorded_in = snapshot_threshold(snap, self.kind, meta)
    logging.info("fold %d cycle %d of %s: threshold %+.4f (from %s)", snap.fold, snap.cycle, snap.workdir,
                 threshold, recorded_in)
    predictor = self.predictors(s)
    batch = s.eval.eval_batch_size if self.batch_size is None else self.batch_size
    return lambda w: special.expit(predictor.outputs(variables, w).logits), threshold, batch


# One section.
class Result(NamedTuple):
  mask: np.ndarray             # (H,W) bool: the vote of the workdirs
  votes: np.ndarray            # (H,W) float32: equal-weight mean over workdirs of their snapshot vote
  probs: Optional[np.ndarray]  # (H,W) float32 mean blended probability, when asked for
  windows: int                 # windows run per snapshot


def segment_section(section: np.ndarray, snapshots: Sequence[Sequence[Snapshot]], loader: SnapshotLoader,
                    stride: int = DEFAULT_STRIDE, save_probs: bool = False,
                    progress: Optional[Callable[[int], None]] = None,
                    needed: Optional[np.ndarray] = None, phase: int = 0) -> Result:
  """Votes the snapshots of each workdir (snapshots[m]: workdir m's) on a (H,W) uint8 section.

  The padded section and the weight sum are computed once; per snapshot one float64 sum of the section's
  padded size is held, and the windows go through the model `loader`'s batch at a time. With `needed`
  ((H,W) bool) only the windows overlapping those pixels run (sections.blend): they get exactly the
  whole section's result, the other pixels no salt (and NaN votes and probabilities). `phase` shifts the
  windows (sections.axis_windows).
  """
  lay = sections.layout(section.shape, stride, phase=phase)
  padded, weights = sections.pad(section, lay), sections.weight_sum(lay)
  n_windows = lay.n_windows if needed is None else int(sections.covering(lay, needed).sum())
  votes = np.zeros(section.shape, np.float32)
  probs = np.zeros(section.shape, np.float32) if save_probs else None
  for workdir_snaps in snapshots:
    model_votes = np.zeros(section.shape, np.float32)
    model_probs = np.zeros(section.shape, np.float32) if save_probs else None
    for snap in workdir_snaps:
      window_fn, threshold, batch = loader.load(snap)
      p = sections.blend(padded, lay, window_fn, batch, weights, progress, needed)
      model_votes += np.where(np.isnan(p), np.nan, p > special.expit(np.float32(threshold)))
      if save_probs:
        model_probs += p
    votes += model_votes / len(workdir_snaps)
    if save_probs:
      probs += model_probs / len(workdir_snaps)
  votes /= len(snapshots)
  if save_probs:
    probs /= len(snapshots)
  return Result(votes >= 0.5, votes, probs, n_windows)


# Outputs.
def output_paths(out_dir, name: str, save_probs: bool = False) -> Dict[str, pathlib.Path]:
  """{"mask", "overlay"[, "probs"]}: the files written for section `name` under out_dir."""
  out_dir = pathlib.Path(out_dir)
  paths = {"mask": out_dir / f"{name}_mask.png", "overlay": out_dir / f"{name}_overlay.png"}
  if save_probs:
    paths["probs"] = out_dir / f"{name}_probs.npy"
  return paths


def overlay(section: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """(H,W) uint8 section and (H,W) bool mask -> (H,W,3) BGR picture with the salt outlined in red."""
  return viz.outline(cv2.cvtColor(section, cv2.COLOR_GRAY2BGR), mask, viz.PRED_COLOR, 1)


def write_outputs(paths: Dict[str, pathlib.Path], section: np.ndarray, result: Result) -> None:
  """Writes the mask PNG (0/255), the overlay PNG and the float16 probabilities, each atomically."""
  pictures = {"mask": result.mask.astype(np.uint8) * 255, "overlay": overlay(section, result.mask)}
  for what, image in pictures.items():
    with fileio.atomic_path(paths[what]) as tmp:
      viz.save_png(tmp, image)
  if "probs" in paths:
    with fileio.atomic_path(paths["probs"]) as tmp:
      np.save(tmp, result.probs.astype(np.float16))


def check_outputs(out_dir, inputs: Sequence[Section], save_probs: bool, overwrite: bool = False) -> None:
  """Refuses an --out that is a file, unwritable output paths, two inputs with the same name and, unless
  `overwrite`, an output that already exists."""
  out_dir = pathlib.Path(out_dir)
  if out_dir.exists() and not out_dir.is_dir():
    raise fileio.UnwritableError(f"--out {out_dir} is a file, not a folder")
  seen: Dict[str, str] = {}
  for item in inputs:
    if item.name in seen:
      raise InputError(f"{item.origin}: same output name {item.name!r} as {seen[item.name]}")
    seen[item.name] = item.origin
    for path in output_paths(out_dir, item.name, save_probs).values():
      check_output(path, overwrite)


def check_output(path: pathlib.Path, overwrite: bool = False) -> None:
  """Refuses an output path that cannot be written or, unless `overwrite`, already exists."""
  fileio.check_writable(path, "--out")
  if path.exists() and not overwrite:
    raise fileio.UnwritableError(f"--out {path} already exists; pass --overwrite to replace it, or "
                                 "choose another --out")


def workdir_snapshots(workdirs: Sequence[str], kind: str, folds: Optional[Sequence[int]]
                      ) -> List[List[Snapshot]]:
  """Per workdir its snapshots (find_snapshots); BadInput for a workdir listed twice."""
  resolved = [pathlib.Path(wd).resolve() for wd in workdirs]
  twice = [wd for k, wd in enumerate(workdirs) if resolved[k] in resolved[:k]]
  if twice:
    raise errors.BadInput(f"--workdirs lists {twice[0]} twice (each workdir is one model's vote)")
  return [find_snapshots(wd, kind, folds) for wd in workdirs]


@contextlib.contextmanager
def locked(workdirs: Sequence[str]):
  """Holds the workdirs' locks (their snapshots are read inside)."""
  with contextlib.ExitStack() as stack:
    for wd in workdirs:
      stack.enter_context(rundir.RunDir(wd).lock(jax.process_index()))
    yield


def segment(workdirs: Sequence[str], inputs: Sequence[Section], out_dir, *, kind: str = "max_map",
            folds: Optional[Sequence[int]] = None, stride: int = DEFAULT_STRIDE,
            batch_size: Optional[int] = None, save_probs: bool = False, overwrite: bool = False
            ) -> List[Dict[str, Any]]:
  """Segments every input section and writes its outputs under out_dir; returns one record per section.

  Checks the stride, the batch size, the workdirs' snapshots, every input (each is read once here) and
  the output paths (existing outputs only with `overwrite`) before anything is written, and holds the
  workdirs' locks while it reads their snapshots.
  """
  sections.axis_windows(TILE, stride)  # BadInput for a stride outside 1..101
  loader = SnapshotLoader(kind, batch_size)    # BadInput for a batch size below 1
  snapshots = workdir_snapshots(workdirs, kind, folds)
  for item in inputs:
    item.load()
  check_outputs(out_dir, inputs, save_probs, overwrite)
  records = []
  with locked(workdirs):
    for item in inputs:
      records.append(_segment_one(item, snapshots, loader, out_dir, stride, save_probs))
  return records


def _segment_one(item: Section, snapshots, loader: SnapshotLoader, out_dir, stride: int, save_probs: bool
                 ) -> Dict[str, Any]:
  """Segments one input, writes its outputs and returns its record (shape, windows, speed, paths)."""
  section = item.load()
  n_snaps = sum(len(s) for s in snapshots)
  total = sections.layout(section.shape, stride).n_windows * n_snaps
  t0 = time.perf_counter()
  with tqdm.tqdm(total=total, desc=item.name, unit="window", disable=None, leave=False) as bar:
    result = segment_section(section, snapshots, loader, stride, save_probs, bar.update)
  seconds = time.perf_counter() - t0
  paths = output_paths(out_dir, item.name, save_probs)
  write_outputs(paths, section, result)
  record = {"name": item.name, "input": item.origin, "height": section.shape[0], "width": section.shape[1],
            "windows": result.windows, "snapshots": n_snaps, "seconds": round(seconds, 2),
            "windows_per_s": round(total / seconds, 2), "salt_fraction": round(float(result.mask.mean()), 4),
            **{k: str(v) for k, v in paths.items()}}
  logging.info("%s: %d x %d px (height x width), %d windows x %d snapshots in %.1f s (%.1f windows/s)",
               item.name, *section.shape, result.windows, n_snaps, seconds, record["windows_per_s"])
  return record


# SEG-Y volumes.
DIRECTIONS = {"inline": ("inline",), "crossline": ("crossline",), "both": ("inline", "crossline")}
WRITES = ("probs", "mask")


def volume_range(volume: segy.Volume, percentiles: Tuple[float, float] = DEFAULT_PERCENTILES
                 ) -> Tuple[float, float]:
  """(lo, hi): the percentiles of every sample of the file, not per section, so that all sections are
  scaled alike; InputError naming the file for NaN or infinite samples. Holds the samples once."""
  traces = segy.all_traces(volume)
  if traces.dtype.kind == "f" and not np.isfinite(np.sum(traces, dtype=np.float64)):
    bad = int(np.count_nonzero(~np.isfinite(traces)))
    raise InputError(f"{volume.path}: {bad} NaN or infinite sample(s); a volume must be finite")
  lo, hi = np.percentile(traces, percentiles, overwrite_input=True)  # partitions the copy in place
  return float(lo), float(hi)


def volume_cube(volume: segy.Volume, il_index: np.ndarray, xl_index: np.ndarray, lo: float, hi: float
                ) -> np.ndarray:
  """(len(il_index), len(xl_index), n_samples) uint8: the selected traces mapped onto 0..255 (scale_uint8)."""
  cube = np.empty((len(il_index), len(xl_index), volume.n_samples), np.uint8)
  for k, row in enumerate(segy.inline_rows(volume, il_index, xl_index)):
    cube[k] = scale_uint8(row, lo, hi)
  return cube


def cube_section(cube: np.ndarray, direction: str, k: int) -> np.ndarray:
  """Section k of a (n_il, n_xl, n_samples) cube as an image (n_samples, traces), depth or time down:
  an inline section's crosslines (a crossline section's inlines) left to right in increasing order."""
  return (cube[k] if direction == "inline" else cube[:, k]).T


def segment_cube(cube: np.ndarray, directions: Sequence[str], snapshots: Sequence[Sequence[Snapshot]],
                 loader: SnapshotLoader, stride: int = DEFAULT_STRIDE, value: str = "probs",
                 progress: Optional[Callable[[int], None]] = None, keep: Sequence[int] = ()
                 ) -> Tuple[np.ndarray, Dict[int, np.ndarray]]:
  """Segments every section of a (n_il, n_xl, n_samples) uint8 cube in each direction ("inline",
  "crossline"; segment_section) and returns (volume, kept votes).

  volume (n_il, n_xl, n_samples) float32 is the mean over the directions of the sections' `value`:
  "probs" (the mean blended probability) or "votes" (the workdirs' vote, salt where >= 0.5). Kept votes
  ({inline index: (n_xl, n_samples) float32}) are the votes of the inlines in `keep`, likewise averaged.
  Holds the cube, the volume and one section's work; progress(1) after each section.
  """
  volume = np.zeros(cube.shape, np.float32)
  kept = {int(i): np.zeros(cube.shape[1:], np.float32) for i in keep}
  for direction in directions:
    for k in range(cube.shape[0] if direction == "inline" else cube.shape[1]):
      result = segment_section(cube_section(cube, direction, k), snapshots, loader, stride, value == "probs")
      values, votes = (result.probs if value == "probs" else result.votes).T, result.votes.T
      if direction == "inline":
        volume[k] += values
        if k in kept:
          kept[k] += votes
      else:
        volume[:, k] += values
        for i, v in kept.items():
          v[k] += votes[i]
      if progress is not None:
        progress(1)
  volume /= len(directions)
  for v in kept.values():
    v /= len(directions)
  return volume, kept


def segy_paths(out_dir, volume: segy.Volume, write: str, png_inlines: Sequence[int] = ()
               ) -> Dict[str, pathlib.Path]:
  """{"segy": <stem>_<write><suffix>, and per inline IL "mask IL" / "overlay IL": <stem>_inline<IL>_*.png}."""
  out_dir, stem = pathlib.Path(out_dir), volume.path.stem
  paths = {"segy": out_dir / f"{stem}_{write}{volume.path.suffix}"}
  for il in png_inlines:
    paths[f"mask {il}"] = out_dir / f"{stem}_inline{il}_mask.png"
    paths[f"overlay {il}"] = out_dir / f"{stem}_inline{il}_overlay.png"
  return paths


def check_volume(volume: segy.Volume, il_index: np.ndarray, xl_index: np.ndarray, directions: Sequence[str],
                 png_inlines: Sequence[int]) -> List[int]:
  """The cube indices (positions in il_index) of png_inlines; InputError when a direction's sections are
  smaller than a tile, a 2-D line is asked for crossline sections, or a PNG inline is not selected."""
  if not volume.is_3d and "crossline" in directions:
    raise InputError(f"{volume.path}: a 2-D line has one section (its traces); --sections=inline only")
  for direction in directions:
    traces = len(xl_index) if direction == "inline" else len(il_index)
    if min(traces, volume.n_samples) < TILE:
      across = "crosslines" if direction == "inline" else "inlines"
      raise InputError(f"{volume.path}: its {direction} sections are {volume.n_samples} samples x {traces} "
                       f"{across if volume.is_3d else 'traces'}, smaller than a {TILE} x {TILE} tile")
  selected = {int(volume.ilines[i]): k for k, i in enumerate(il_index)}
  missing = [il for il in png_inlines if il not in selected]
  if missing:
    raise InputError(f"{volume.path}: --png_inlines {missing[0]} is not a selected inline "
                     f"({min(selected)}..{max(selected)})")
  return [selected[il] for il in png_inlines]


def segment_segy(workdirs: Sequence[str], path, out_dir, *, directions: str = "inline",
                 inlines: Optional[Tuple[int, int]] = None, crosslines: Optional[Tuple[int, int]] = None,
                 write: str = "probs", iline_byte: int = segy.DEFAULT_ILINE_BYTE,
                 xline_byte: int = segy.DEFAULT_XLINE_BYTE,
                 percentiles: Tuple[float, float] = DEFAULT_PERCENTILES, png_inlines: Sequence[int] = (),
                 kind: str = "max_map", folds: Optional[Sequence[int]] = None, stride: int = DEFAULT_STRIDE,
                 batch_size: Optional[int] = None, overwrite: bool = False) -> Dict[str, Any]:
  """Segments a SEG-Y volume (or 2-D line) section by section and writes a SEG-Y of its geometry and
  headers holding the probabilities or the mask (1.0 salt, 0.0 not; traces outside the selection 0.0),
  plus mask and overlay PNGs of `png_inlines`; returns the run's record.

  Every flag, workdir, the file and the outputs are checked before anything is computed or written; the
  output is written to a temporary file and renamed at the end.
  """
  if write not in WRITES or directions not in DIRECTIONS:
    raise errors.BadInput(f"write must be one of {WRITES} and directions one of {tuple(DIRECTIONS)}")
  sections.axis_windows(TILE, stride)
  loader = SnapshotLoader(kind, batch_size, keep=True)
  snapshots = workdir_snapshots(workdirs, kind, folds)
  volume = segy.open_volume(path, iline_byte, xline_byte)
  il_index, xl_index = segy.select(volume, inlines, crosslines)
  png_index = check_volume(volume, il_index, xl_index, DIRECTIONS[directions], png_inlines)
  paths = segy_paths(out_dir, volume, write, png_inlines)
  for p in paths.values():
    check_output(p, overwrite)
  t0 = time.perf_counter()
  cube = volume_cube(volume, il_index, xl_index, *volume_range(volume, percentiles))
  n_sections = sum(cube.shape[0] if d == "inline" else cube.shape[1] for d in DIRECTIONS[directions])
  with locked(workdirs), tqdm.tqdm(total=n_sections, desc=volume.path.name, unit="section", disable=None,
                                   leave=False) as bar:
    values, kept = segment_cube(cube, DIRECTIONS[directions], snapshots, loader, stride,
                                "probs" if write == "probs" else "votes", bar.update, png_index)
  seconds = time.perf_counter() - t0
  if write == "mask":
    for row in values:
      row[...] = row >= 0.5
  with fileio.atomic_path(paths["segy"]) as tmp:
    segy.write_like(volume, tmp, values, il_index, xl_index)
  for il, i in zip(png_inlines, png_index):
    section, mask = cube_section(cube, "inline", i), kept[i].T >= 0.5
    for what, image in (("mask", mask.astype(np.uint8) * 255), ("overlay", overlay(section, mask))):
      with fileio.atomic_path(paths[f"{what} {il}"]) as tmp:
        viz.save_png(tmp, image)
  record = {"input": str(volume.path), "output": str(paths["segy"]), "geometry": "3-D" if volume.is_3d
            else "2-D line", "shape": list(cube.shape), "sections": n_sections, "directions": directions,
            "write": write, "seconds": round(seconds, 2), "sections_per_s": round(n_sections / seconds, 3),
            "mean": round(float(values.mean(dtype=np.float64)), 4), "pngs": [str(paths[k]) for k in paths
                                                                              if k != "segy"]}
  logging.info("%s: %d sections of a %s cube in %.1f s (%.2f sections/s) -> %s", volume.path, n_sections,
               "x".join(map(str, cube.shape)), seconds, record["sections_per_s"], paths["segy"])
  return record


FLAGS = flags.FLAGS


def define_flags() -> None:
  """Command-line flags (defined only when run as a program, so the module stays importable)."""
  flags.DEFINE_list("workdirs", None, "One workdir per model; every snapshot of --kind votes.")
  flags.DEFINE_string("input", None, "A section: .png, 2-D .npy, or a folder of them.")
  flags.DEFINE_list("mosaic", None, "Instead of --input: jigsaw mosaic ids to segment (needs --mosaics and "
                    "--data_dir).")
  flags.DEFINE_string("mosaics", None, "With --mosaic: the mosaic table of `jigsaw solve`.")
  flags.DEFINE_string("data_dir", None, "With --mosaic: the Kaggle data folder holding the tiles.")
  flags.DEFINE_string("cache_dir", None, "With --mosaic: optional npz cache of the decoded tiles.")
  flags.DEFINE_string("out", None, "Folder for <name>_mask.png, <name>_overlay.png (and _probs.npy).")
  flags.DEFINE_integer("stride", DEFAULT_STRIDE, "Pixels between window origins (1..101).")
  flags.DEFINE_integer("batch_size", None, "Windows per device call, a positive integer (default: the "
                       "config's eval_batch_size).")
  flags.DEFINE_list("clip_percentiles", [str(p) for p in DEFAULT_PERCENTILES], "lo,hi: percentiles a "
                    "non-uint8 .npy section is clipped to before it is mapped onto 0..255.")
  flags.DEFINE_bool("save_probs", False, "Also write <name>_probs.npy (float16 probabilities).")
  flags.DEFINE_bool("overwrite", False, "Replace outputs already in --out (without it, they stop the "
                    "command before anything is written).")
  flags.DEFINE_enum("kind", "max_map", list(rundir.SNAPSHOT_KINDS), "Which per-cycle snapshots vote.")
  flags.DEFINE_list("folds", None, "Only these folds' snapshots (default: all).")
  flags.DEFINE_enum("sections", "inline", list(DIRECTIONS), "SEG-Y: predict every inline section, every "
                    "crossline section, or both (the two volumes averaged).")
  flags.DEFINE_string("inlines", None, "SEG-Y: A:B, only inline numbers A..B (inclusive).")
  flags.DEFINE_string("crosslines", None, "SEG-Y: A:B, only crossline numbers A..B (inclusive).")
  flags.DEFINE_enum("write", "probs", list(WRITES), "SEG-Y: the output traces hold the salt probability or "
                    "the mask (1.0 salt, 0.0 not), float32.")
  flags.DEFINE_integer("iline_byte", segy.DEFAULT_ILINE_BYTE, "SEG-Y: trace header byte of the inline "
                       "number.")
  flags.DEFINE_integer("xline_byte", segy.DEFAULT_XLINE_BYTE, "SEG-Y: trace header byte of the crossline "
                       "number.")
  flags.DEFINE_list("png_inlines", [], "SEG-Y: also write mask and overlay PNGs of these inlines (a 2-D "
                    "line is inline 0).")
  flags.mark_flags_as_required(["workdirs", "out"])


SEGY_FLAGS = ("sections", "inlines", "crosslines", "write", "iline_byte", "xline_byte", "png_inlines")


def parse_span(text: Optional[str], flag: str) -> Optional[Tuple[int, int]]:
  """"A:B" -> (A, B) (None stays None); UsageError unless A and B are integers with A <= B."""
  if text is None:
    return None
  try:
    lo, hi = (int(p) for p in text.split(":"))
  except ValueError:
    lo, hi = 1, 0
  if lo > hi:
    raise app.UsageError(f"--{flag} must be A:B with integers A <= B, got {text}")
  return lo, hi


def parse_percentiles(parts: Sequence[str]) -> Tuple[float, float]:
  """["1", "99"] -> (1.0, 99.0); UsageError unless 0 <= lo < hi <= 100."""
  try:
    lo, hi = (float(p) for p in parts)
  except ValueError:
    lo = hi = -1.0
  if not 0 <= lo < hi <= 100:
    raise app.UsageError(f"--clip_percentiles must be lo,hi with 0 <= lo < hi <= 100, got {','.join(parts)}")
  return lo, hi


def _inputs() -> List[Section]:
  """The sections the flags name (exactly one of --input and --mosaic)."""
  if (FLAGS.input is None) == (FLAGS.mosaic is None):
    raise app.UsageError("give exactly one of --input and --mosaic")
  if FLAGS.input is not None:
    return file_sections(FLAGS.input, parse_percentiles(FLAGS.clip_percentiles))
  if not (FLAGS.mosaics and FLAGS.data_dir):
    raise app.UsageError("--mosaic needs --mosaics and --data_dir")
  return mosaic_sections(kaggle.DataSource(FLAGS.data_dir, FLAGS.cache_dir), FLAGS.mosaics,
                         [int(m) for m in FLAGS.mosaic])


def main(argv) -> List[Dict[str, Any]]:
  """Segments as the flags say; prints one JSON line per section."""
  del argv
  if FLAGS.input is not None and pathlib.Path(FLAGS.input).suffix.lower() in segy.SUFFIXES:
    return [_main_segy()]
  given = [f"--{name}" for name in SEGY_FLAGS if FLAGS[name].present]
  if given:
    raise app.UsageError(f"{given[0]} applies to a SEG-Y --input ({', '.join(segy.SUFFIXES)}) only")
  records = segment(FLAGS.workdirs, _inputs(), FLAGS.out, kind=FLAGS.kind, stride=FLAGS.stride,
                    folds=[int(f) for f in FLAGS.folds] if FLAGS.folds else None, batch_size=FLAGS.batch_size,
                    save_probs=FLAGS.save_probs, overwrite=FLAGS.overwrite)
  for record in records:
    print(json.dumps(record))
  return records


def _main_segy() -> Dict[str, Any]:
  """Segments the SEG-Y --input as the flags say; prints its record as a JSON line."""
  if FLAGS.mosaic is not None or FLAGS.save_probs:
    raise app.UsageError("a SEG-Y --input takes neither --mosaic nor --save_probs (see --write)")
  try:
    png_inlines = [int(il) for il in FLAGS.png_inlines]
  except ValueError:
    raise app.UsageError(f"--png_inlines must be inline numbers, got {','.join(FLAGS.png_inlines)}") from None
  record = segment_segy(FLAGS.workdirs, FLAGS.input, FLAGS.out, directions=FLAGS.sections,
                        inlines=parse_span(FLAGS.inlines, "inlines"),
                        crosslines=parse_span(FLAGS.crosslines, "crosslines"), write=FLAGS.write,
                        iline_byte=FLAGS.iline_byte, xline_byte=FLAGS.xline_byte,
                        percentiles=parse_percentiles(FLAGS.clip_percentiles), png_inlines=png_inlines,
                        kind=FLAGS.kind, folds=[int(f) for f in FLAGS.folds] if FLAGS.folds else None,
                        stride=FLAGS.stride, batch_size=FLAGS.batch_size, overwrite=FLAGS.overwrite)
  print(json.dumps(record))
  return record
