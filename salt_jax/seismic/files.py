"""Section files for `segment`: PNG and `.npy` sections and jigsaw mosaics in (each as (H,W) uint8), and
per section its mask PNG, overlay PNG and probabilities out.

An input is a PNG (grayscale, or RGB read as grayscale), a 2-D `.npy` array or a folder of them. A uint8
array is used as it is; any other array is clipped to its percentiles (default the 1st and 99th of the
section) and mapped linearly onto 0..255. A mosaic is the grey section of a jigsaw mosaic built from its
tiles (empty cells black, as `jigsaw render` draws them, without its tints).
"""
import dataclasses
import pathlib
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from salt_jax import errors, fileio, viz
from salt_jax.data import sources
from salt_jax.geometry import TILE
from salt_jax.jigsaw import render, tables

SUFFIXES = (".png", ".npy")
DEFAULT_PERCENTILES = (1.0, 99.0)


class InputError(errors.BadInput):
  """A section that cannot be segmented (unreadable, not 2-D, empty, not finite); names the file."""


@dataclasses.dataclass(frozen=True)
class Section:
  """One input: its output name, where it comes from, and a loader returning (H,W) uint8."""
  name: str
  origin: str
  load: Callable[[], np.ndarray]


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
  if not array.size:
    raise InputError(f"{path}: an empty array of shape {array.shape}; a section has pixels")
  if array.dtype.kind not in "biuf":
    raise InputError(f"{path}: array of dtype {array.dtype}; a section holds real numbers")
  bad = int(np.count_nonzero(~np.isfinite(array))) if array.dtype.kind == "f" else 0
  if bad:
    raise InputError(f"{path}: {bad} NaN or infinite value(s); a section must be finite")
  return to_uint8(array, percentiles)


def read_section(path, percentiles: Tuple[float, float] = DEFAULT_PERCENTILES) -> np.ndarray:
  """A PNG or `.npy` section file -> (H,W) uint8; InputError naming the file when it cannot be used."""
  path = pathlib.Path(path)
  return _read_png(path) if path.suffix.lower() == ".png" else _read_npy(path, percentiles)


def small_note(shape: Tuple[int, int], origin: str, what: str = "the section is") -> Optional[str]:
  """The one line said about a section smaller than a tile ((height, width) `shape`), None otherwise:
  such a section is reflect-padded to a tile (sections.layout), and its outputs keep its own size."""
  if min(shape) >= TILE:
    return None
  return (f"{origin}: {what} {shape[0]} x {shape[1]} px (height x width), smaller than a {TILE} x {TILE} "
          "tile; reflect-padded to a tile, its outputs keep its size")


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
    out.append(Section(f"mosaic_{mid:04d}", origin, lambda s=section: s))
  return out


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


def write_outputs(paths: Dict[str, pathlib.Path], section: np.ndarray, mask: np.ndarray,
                  probs: Optional[np.ndarray] = None) -> None:
  """Writes the (H,W) bool mask as a PNG (0/255), the overlay PNG and the (H,W) probabilities as float16
  (when `paths` has "probs"), each atomically."""
  pictures = {"mask": mask.astype(np.uint8) * 255, "overlay": overlay(section, mask)}
  for what, image in pictures.items():
    viz.save_png(paths[what], image)
  if "probs" in paths:
    with fileio.atomic_path(paths["probs"]) as tmp:
      np.save(tmp, probs.astype(np.float16))


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


def check_output(path: pathlib.Path, overwrite: bool = False, folder: bool = False) -> None:
  """Refuses an output path that cannot be written or, unless `overwrite`, already exists (a `folder`
  output, such as an MDIO dataset, may be a folder)."""
  fileio.check_writable(path.parent / f".{path.name}" if folder else path, "--out")
  if path.exists() and not overwrite:
    raise fileio.UnwritableError(f"--out {path} already exists; pass --overwrite to replace it, or "
                                 "choose another --out")
