"""Loads the Kaggle TGS Salt folder into NumPy arrays (SPEC 1.1), strictly and fast.

Layout: `train/images/<id>.png`, `train/masks/<id>.png`, `test/images/<id>.png`, `train.csv` (id,rle_mask),
`sample_submission.csv` (id,rle_mask) and, optionally, `depths.csv` (id,z; depth is not used by the model).

Order: train samples follow the rows of `train.csv`, test samples the rows of `sample_submission.csv`.
Every CSV id must have its PNG(s) and every PNG must have its CSV row; nothing is skipped silently, any
inconsistency raises `DataError` naming the path or id. PNGs are decoded by OpenCV in a thread pool
(cv2 releases the GIL). Images are read as 8-bit grayscale (the RGB PNGs have three equal channels);
masks must hold only 0 and the dtype's maximum (255 or 65535) and are binarised to {0,1}.
"""
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import pathlib
import zipfile
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from absl import logging
import pandas as pd

from salt_jax import errors, fileio
from salt_jax.data import rle as rle_lib
from salt_jax.data.errors import DataError
from salt_jax.geometry import TILE, TILE_SHAPE

SPLITS = ("train", "test")
_CACHE_VERSION = 2
_CHUNK = 256


@dataclasses.dataclass(frozen=True, eq=False)
class Samples:
  """One split: ids (N,) str, images (N,101,101) uint8, masks (N,101,101) uint8 {0,1} or None (test),
  depths (N,) float32 (NaN where depths.csv has no row)."""
  ids: np.ndarray
  images: np.ndarray
  masks: Optional[np.ndarray]
  depths: np.ndarray

  def __post_init__(self):
    n = len(self.ids)
    if self.images.shape != (n, TILE, TILE) or self.images.dtype != np.uint8:
      raise ValueError(f"images must be ({n},{TILE},{TILE}) uint8, got {self.images.shape} "
                       f"{self.images.dtype}")
    if self.masks is not None and (self.masks.shape != self.images.shape or self.masks.dtype != np.uint8):
      raise ValueError(f"masks must be ({n},{TILE},{TILE}) uint8, got {self.masks.shape} {self.masks.dtype}")
    if self.depths.shape != (n,):
      raise ValueError(f"depths must be ({n},), got {self.depths.shape}")

  def __len__(self) -> int:
    return len(self.ids)


def _require(path: pathlib.Path, kind: str = "file") -> pathlib.Path:
  ok = path.is_dir() if kind == "folder" else path.is_file()
  if not ok:
    raise DataError(f"missing {kind}: {path}")
  return path


def read_frame(path, columns: Sequence[str], dtype=str) -> pd.DataFrame:
  """The raw CSV frame (empty cells as ""), rows not checked; DataError naming `path` when the file is
  missing, empty, not UTF-8, malformed or has other columns than `columns`."""
  path = _require(pathlib.Path(path))
  try:
    frame = pd.read_csv(path, dtype=dtype, keep_default_na=False)
  except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
    raise DataError(f"cannot parse {path}: {e}") from e
  except OSError as e:  # e.g. no permission to read it
    raise errors.io_failure(e, path, "read") from e
  if list(frame.columns) != list(columns):
    raise DataError(f"{path}: expected columns {','.join(columns)}, got {','.join(map(str, frame.columns))}")
  return frame


SAMPLE_SUBMISSION = "sample_submission.csv"


def read_sample_ids(data_dir) -> List[str]:
  """The ids of `<data_dir>/sample_submission.csv`, in file order (a submission's rows).

  Raises DataError naming the file when it is missing, empty, not UTF-8, has columns other than id,rle_mask,
  or an empty or duplicate id.
  """
  path = pathlib.Path(data_dir) / SAMPLE_SUBMISSION
  ids = read_csv(path, ["id", "rle_mask"])["id"].tolist()
  if not ids:
    raise DataError(f"{path} lists no ids")
  return ids


def read_csv(path: pathlib.Path, columns: Sequence[str]) -> pd.DataFrame:
  """A CSV with exactly `columns` (all read as str, empty cells as ""), unique non-empty ids."""
  frame = read_frame(path, columns)
  ids = frame["id"]
  if (ids == "").any():
    raise DataError(f"{path}: empty id in row {int(np.argmax((ids == '').to_numpy())) + 2}")
  dup = ids[ids.duplicated()]
  if len(dup):
    raise DataError(f"{path}: duplicate id {dup.iloc[0]!r}")
  return frame


def _png_ids(folder: pathlib.Path) -> set:
  """Ids (file names without .png) of the PNGs in a folder; other files are ignored."""
  _require(folder, "folder")
  return {name[:-4] for name in os.listdir(folder) if name.endswith(".png")}


def _check_ids(ids: np.ndarray, folder: pathlib.Path, csv: pathlib.Path, what: str) -> None:
  """Every CSV id has `<folder>/<id>.png` and every PNG there has a CSV row."""
  found = _png_ids(folder)
  missing = [i for i in ids if i not in found]
  if missing:
    raise DataError(f"{len(missing)} id(s) of {csv} have no {what}, e.g. id '{missing[0]}': missing "
                    f"{folder / (missing[0] + '.png')}")
  extra = sorted(found - set(ids))
  if extra:
    raise DataError(f"{len(extra)} PNG(s) in {folder} have no row in {csv}, e.g. {extra[0]}.png")


def _parallel(n: int, work: Callable[[int], None], num_threads: Optional[int]) -> None:
  """Runs work(i) for i in range(n) in chunks on a thread pool; re-raises the first error."""
  threads = num_threads or min(16, 2 * (os.cpu_count() or 1))
  chunks = [range(a, min(a + _CHUNK, n)) for a in range(0, n, _CHUNK)]
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    for _ in pool.map(lambda chunk: [work(i) for i in chunk], chunks):
      pass


def read_images(paths: Sequence[pathlib.Path], num_threads: Optional[int] = None) -> np.ndarray:
  """PNG paths -> (N,101,101) uint8 grayscale."""
  out = np.empty((len(paths), *TILE_SHAPE), np.uint8)

  def work(i):
    image = cv2.imread(str(paths[i]), cv2.IMREAD_GRAYSCALE)
    if image is None:
      raise DataError(f"unreadable image PNG: {paths[i]}")
    if image.shape != TILE_SHAPE:
      raise DataError(f"image {paths[i]} is {image.shape[1]}x{image.shape[0]}, expected {TILE}x{TILE}")
    out[i] = image

  _parallel(len(paths), work, num_threads)
  return out


def read_masks(paths: Sequence[pathlib.Path], num_threads: Optional[int] = None) -> np.ndarray:
  """Mask PNG paths (values 0 and 255, or 0 and 65535) -> (N,101,101) uint8 {0,1}."""
  out = np.empty((len(paths), *TILE_SHAPE), np.uint8)

  def work(i):
    mask = cv2.imread(str(paths[i]), cv2.IMREAD_UNCHANGED)
    if mask is None:
      raise DataError(f"unreadable mask PNG: {paths[i]}")
    if mask.ndim != 2:
      raise DataError(f"mask {paths[i]} has {mask.shape[2]} channels, expected a single-channel PNG")
    if mask.shape != TILE_SHAPE:
      raise DataError(f"mask {paths[i]} is {mask.shape[1]}x{mask.shape[0]}, expected {TILE}x{TILE}")
    top = np.iinfo(mask.dtype).max
    bad = (mask != 0) & (mask != top)
    if bad.any():
      raise DataError(f"mask {paths[i]} ({mask.dtype}) has value {int(mask[bad][0])}; "
                      f"only 0 and {top} allowed")
    out[i] = mask != 0

  _parallel(len(paths), work, num_threads)
  return out


def _depths(data_dir: pathlib.Path, ids: np.ndarray) -> np.ndarray:
  """(N,) float32 depths from the optional depths.csv; NaN where unknown."""
  path = data_dir / "depths.csv"
  if not path.exists():
    return np.full(len(ids), np.nan, np.float32)
  frame = read_csv(path, ["id", "z"])
  z = pd.to_numeric(frame["z"], errors="coerce")
  if z.isna().any():
    raise DataError(f"{path}: non-numeric depth for id {frame['id'][z.isna()].iloc[0]!r}")
  return pd.Series(z.to_numpy(np.float32), index=frame["id"]).reindex(ids).to_numpy(np.float32)


def verify_rles(ids: np.ndarray, rles: Sequence[str], masks: np.ndarray, source: str = "train.csv") -> None:
  """Raises DataError unless every RLE decodes to its mask (N,101,101); errors name the id."""
  decoded = rle_lib.rle_decode_many(list(rles), TILE_SHAPE, names=[f"{source} id '{i}'" for i in ids])
  wrong = np.flatnonzero(np.any((decoded != masks).reshape(len(ids), -1), axis=1))
  if len(wrong):
    i = wrong[0]
    raise DataError(f"{len(wrong)} RLEs in {source} disagree with their mask PNGs, e.g. id '{ids[i]}' "
                    f"({int(decoded[i].sum())} px in the RLE, {int(masks[i].sum())} px in the PNG)")


def _split_files(data_dir: pathlib.Path, split: str) -> Tuple[pathlib.Path, np.ndarray, Dict]:
  """(CSV path, ids in CSV order, frame columns) of a split, with every PNG cross-checked."""
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  _require(data_dir, "folder")
  csv = data_dir / ("train.csv" if split == "train" else SAMPLE_SUBMISSION)
  frame = read_csv(csv, ["id", "rle_mask"])
  ids = frame["id"].to_numpy(str)
  _check_ids(ids, data_dir / split / "images", csv, f"{split} image")
  if split == "train":
    _check_ids(ids, data_dir / "train" / "masks", csv, "mask")
  return csv, ids, {"rle_mask": frame["rle_mask"].to_numpy()}


def _stat_line(name: str, stat: Optional[os.stat_result]) -> str:
  return f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n" if stat else f"{name}\0missing\n"


def _png_stats(folder: pathlib.Path) -> str:
  """One `name size mtime_ns` line per PNG of a folder, sorted by name (one stat per file)."""
  with os.scandir(folder) as entries:
    stats = [(e.name, e.stat()) for e in entries if e.name.endswith(".png")]
  stats.sort(key=lambda s: s[0])
  return "".join(_stat_line(name, stat) for name, stat in stats)


def _fingerprint(data_dir: pathlib.Path, split: str, csv: pathlib.Path) -> str:
  """What a cached split depends on: the folder, and a SHA-256 of the name, size and mtime (ns) of every
  file the split reads (its CSV, depths.csv or its absence, every PNG of its image and mask folders), so
  any PNG or CSV rewritten, truncated or replaced in place invalidates the cache. ~0.1 s per 20k files."""
  digest = hashlib.sha256()
  for path in (csv, data_dir / "depths.csv"):
    try:
      stat = path.stat()
    except FileNotFoundError:
      stat = None
    digest.update(_stat_line(path.name, stat).encode("utf-8", "surrogateescape"))
  folders = [data_dir / split / "images"] + ([data_dir / "train" / "masks"] if split == "train" else [])
  for folder in folders:
    digest.update(f"{folder.relative_to(data_dir)}/\n{_png_stats(folder)}".encode("utf-8", "surrogateescape"))
  return json.dumps({"version": _CACHE_VERSION, "data_dir": str(data_dir.resolve()), "split": split,
                     "files": digest.hexdigest()}, sort_keys=True)


def content_digest(data_dir: pathlib.Path) -> str:
  """SHA-256 over the relative name and bytes of the folder's CSVs (a missing depths.csv counts as absent)
  and of every PNG of train/images, train/masks and test/images, in name order: the same for a moved or
  re-copied folder, different for any changed byte. ~2 s for the competition's 259 MB (26,000 files)."""
  digest = hashlib.sha256()
  files = [data_dir / name for name in ("train.csv", "sample_submission.csv", "depths.csv")]
  for folder in ("train/images", "train/masks", "test/images"):
    files += sorted((data_dir / folder).glob("*.png"))
  for path in files:
    name = path.relative_to(data_dir).as_posix()
    try:
      data = path.read_bytes()
    except FileNotFoundError:
      digest.update(f"{name}\0absent\n".encode("utf-8", "surrogateescape"))
      continue
    digest.update(f"{name}\0{len(data)}\n".encode("utf-8", "surrogateescape"))
    digest.update(data)
  return digest.hexdigest()


def cache_path(cache_dir, split: str) -> pathlib.Path:
  """Where `load_split` caches a split (an uncompressed npz; masks bit-packed)."""
  return pathlib.Path(cache_dir) / f"tgs_{split}.npz"


def _load_cache(path: pathlib.Path, fingerprint: str, ids: np.ndarray) -> Optional[Samples]:
  """The cached split if it is valid for these ids and fingerprint, else None."""
  if not path.exists():
    return None
  try:
    with np.load(path, allow_pickle=False) as z:
      if str(z["fingerprint"]) != fingerprint or not np.array_equal(z["ids"], ids):
        return None
      masks = None
      if "masks_packed" in z.files:
        masks = rle_lib.unpack_masks(z["masks_packed"])
      return Samples(ids=z["ids"], images=z["images"], masks=masks, depths=z["depths"])
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):   # unreadable cache: rebuild
    return None


def usable_cache_dir(cache_dir) -> Optional[pathlib.Path]:
  """cache_dir if a cache can be written there, else None after one warning: the cache is optional, so
  an unwritable folder (or a file) only costs the decoding."""
  if not cache_dir:
    return None
  try:
    fileio.check_writable(pathlib.Path(cache_dir) / "tgs_train.npz", "cache")
  except fileio.UnwritableError as e:
    logging.warning("%s; running without the decoded-data cache", e)
    return None
  return pathlib.Path(cache_dir)


def _save_cache(path: pathlib.Path, fingerprint: str, samples: Samples) -> None:
  arrays = dict(fingerprint=np.array(fingerprint), ids=samples.ids, images=samples.images,
                depths=samples.depths)
  if samples.masks is not None:
    arrays["masks_packed"] = rle_lib.pack_masks(samples.masks)
  try:
    with fileio.atomic_path(path) as tmp:
      np.savez(tmp, **arrays)
  except fileio.UnwritableError as e:  # e.g. the disk filled up while writing: the data is loaded anyway
    logging.warning("%s; the decoded data is not cached", e)


def load_split(data_dir, split: str, cache_dir=None, verify_rle: bool = True,
               num_threads: Optional[int] = None) -> Samples:
  """Loads 'train' (with masks) or 'test' (masks None); see the module docstring for order and checks.

  With `cache_dir`, the decoded arrays are kept in `<cache_dir>/tgs_<split>.npz` and reused while the ids
  are the same and no file the split reads changed name, size or mtime (see `_fingerprint`). `verify_rle`
  (train only) checks that every train.csv RLE decodes to its mask PNG, also when the arrays come from the
  cache.
  """
  data_dir = pathlib.Path(data_dir)
  csv, ids, columns = _split_files(data_dir, split)
  samples, fingerprint = None, None
  if cache_dir:
    fingerprint = _fingerprint(data_dir, split, csv)
    samples = _load_cache(cache_path(cache_dir, split), fingerprint, ids)
    if samples is None:
      cache_dir = usable_cache_dir(cache_dir)  # warned once, before decoding, if it cannot be written
  if samples is None:
    images = read_images([data_dir / split / "images" / f"{i}.png" for i in ids], num_threads)
    masks = None
    if split == "train":
      masks = read_masks([data_dir / "train" / "masks" / f"{i}.png" for i in ids], num_threads)
    samples = Samples(ids=ids, images=images, masks=masks, depths=_depths(data_dir, ids))
    if cache_dir:
      _save_cache(cache_path(cache_dir, split), fingerprint, samples)
  if split == "train" and verify_rle:
    verify_rles(samples.ids, columns["rle_mask"], samples.masks, csv.name)
  return samples


def load_train(data_dir, cache_dir=None, verify_rle: bool = True,
               num_threads: Optional[int] = None) -> Samples:
  """The 3,601 labelled tiles in train.csv order: images, masks {0,1}, depths."""
  return load_split(data_dir, "train", cache_dir=cache_dir, verify_rle=verify_rle, num_threads=num_threads)


def load_test(data_dir, cache_dir=None, num_threads: Optional[int] = None) -> Samples:
  """The 18,399 unlabelled tiles in sample_submission.csv order: images, depths (masks None)."""
  return load_split(data_dir, "test", cache_dir=cache_dir, num_threads=num_threads)


@dataclasses.dataclass(frozen=True)
class DataSource:
  """A Kaggle folder and where its decoded splits are cached (None: decode the PNGs on every load).

  The one value every step that reads the data is handed (the pipeline gives all its steps the same), so
  the PNGs are decoded once and every step checks the same files.
  """
  data_dir: str
  cache_dir: Optional[str] = None

  def __post_init__(self):
    object.__setattr__(self, "data_dir", str(self.data_dir))
    object.__setattr__(self, "cache_dir", str(self.cache_dir) if self.cache_dir else None)

  def train(self) -> Samples:
    """`load_train` of the folder, through the cache (every RLE checked against its mask)."""
    return load_train(self.data_dir, cache_dir=self.cache_dir)

  def test(self) -> Samples:
    """`load_test` of the folder, through the cache."""
    return load_test(self.data_dir, cache_dir=self.cache_dir)

  def test_ids(self) -> np.ndarray:
    """(18399,) str: the test ids in sample_submission.csv order, without reading an image."""
    return np.asarray(read_sample_ids(self.data_dir), str)

  def fingerprint(self) -> str:
    """A SHA-256 of the bytes of every file both splits read (the CSVs, every PNG), by name within the
    folder: records (the pipeline's step markers) notice changed data, not a moved or re-copied folder."""
    return content_digest(pathlib.Path(self.data_dir))
