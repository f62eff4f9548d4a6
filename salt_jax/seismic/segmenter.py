"""Trained workdirs as one Python object for notebooks: tiles, sections and volumes in, probabilities and
masks out, with the same windows and vote as `python -m salt_jax.segment` (salt_jax.seismic.segment).

    seg = salt_jax.load(["runs/cpu_small"])
    seg.tiles(tiles)          # (N,101,101) -> Prediction of (N,101,101): each tile alone, one window
    seg.section(section)      # (H,W)       -> Prediction of (H,W): windows every `stride` pixels
    seg.volume(volume)        # (n_il,n_xl,n_samples) -> Prediction of that shape, section by section

Every `kind` snapshot of each workdir (of `folds`) binarises its probabilities at its own threshold; per
workdir the mean of its snapshots' masks, then the equal-weight mean over workdirs, is salt where >= 0.5.
Arrays that are not uint8 are mapped onto 0..255 as `segment` maps them: a section or a tile by its own
percentiles, a volume by the percentiles of all its samples. The workdirs' locks are held while a call
reads their snapshots, as the command holds them.
"""
from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np

from salt_jax.geometry import TILE
from salt_jax.inference import ensemble
from salt_jax.seismic import files, infer, sections, volume

TILE_CHUNK = 512  # tiles segmented side by side at a time (a (101, 512*101) section)


class Prediction(NamedTuple):
  """The vote on an input of shape S: probs (S) float32, the mean over workdirs of the mean over their
  snapshots of the (blended) salt probability; mask (S) bool, the workdirs' vote."""
  probs: np.ndarray
  mask: np.ndarray


def _finite(array: np.ndarray, what: str) -> np.ndarray:
  array = np.asarray(array)
  if array.dtype.kind not in "biuf":
    raise files.InputError(f"{what}: array of dtype {array.dtype}; it must hold real numbers")
  if array.dtype.kind == "f" and not np.isfinite(array).all():
    raise files.InputError(f"{what}: {int(np.count_nonzero(~np.isfinite(array)))} NaN or infinite "
                             "value(s); it must be finite")
  return array


class Segmenter:
  """The snapshots of trained workdirs, voting on numpy arrays (see the module docstring).

  Args:
    workdirs: one workdir per model (a str is one workdir).
    kind: which per-cycle snapshots vote ("max_map" or "min_loss").
    folds: only these folds' snapshots (None: all).
    batch_size: windows per device call (None: each config's eval_batch_size).
    stride: pixels between the windows of sections and volumes (1..101; tiles are always one window).
    percentiles: (lo, hi) a non-uint8 input is clipped to before it is mapped onto 0..255.
  """

  def __init__(self, workdirs: Sequence[str], *, kind: str = "max_map", folds: Optional[Sequence[int]] = None,
               batch_size: Optional[int] = None, stride: int = infer.DEFAULT_STRIDE,
               percentiles: Tuple[float, float] = files.DEFAULT_PERCENTILES):
    self.workdirs = [workdirs] if isinstance(workdirs, str) else [str(w) for w in workdirs]
    sections.axis_windows(TILE, stride)  # BadInput for a stride outside 1..101
    self.stride, self.percentiles = stride, tuple(percentiles)
    self.loader = infer.SnapshotLoader(kind, batch_size, keep=True)  # each snapshot read once, then kept
    self.snapshots = infer.find_snapshots(self.workdirs, kind, folds)

  def __repr__(self) -> str:
    return (f"Segmenter({self.workdirs}, {sum(map(len, self.snapshots))} snapshots, stride {self.stride})")

  def _vote(self, stack: np.ndarray, stride: int) -> infer.Result:
    """The vote on a (K,H,W) uint8 stack of sections, as `segment` votes a chunk's sections."""
    with volume.locked(self.workdirs):
      return infer.segment_stack(stack, self.snapshots, self.loader, stride, save_probs=True)

  def tiles(self, images: np.ndarray) -> Prediction:
    """(N,101,101) tiles -> Prediction of (N,101,101); each tile is predicted alone, as `predict` predicts
    it and as `segment` does a 101 x 101 section (one window, flip TTA)."""
    images = _finite(images, "tiles")
    if images.ndim != 3 or images.shape[1:] != (TILE, TILE):
      raise files.InputError(f"tiles: shape {images.shape}; tiles are (N, {TILE}, {TILE})")
    probs = np.empty(images.shape, np.float32)
    mask = np.empty(images.shape, bool)
    for start in range(0, len(images), TILE_CHUNK):
      chunk = [files.to_uint8(t, self.percentiles) for t in images[start:start + TILE_CHUNK]]
      result = self._vote(np.concatenate(chunk, axis=1)[None], TILE)  # side by side at stride 101: no overlap
      probs[start:start + len(chunk)] = np.stack(np.split(result.probs[0], len(chunk), axis=1))
      mask[start:start + len(chunk)] = np.stack(np.split(result.mask[0], len(chunk), axis=1))
    return Prediction(probs, mask)

  def section(self, section: np.ndarray) -> Prediction:
    """(H,W) section (depth or time down; smaller than a tile: reflect-padded) -> Prediction of (H,W), as
    `segment --input`."""
    section = _finite(section, "section")
    if section.ndim != 2:
      raise files.InputError(f"section: a {section.ndim}-D array of shape {section.shape}; a section is "
                               "2-D")
    result = self._vote(files.to_uint8(section, self.percentiles)[None], self.stride)
    return Prediction(result.probs[0], result.mask[0])

  def volume(self, cube: np.ndarray, sections: str = "inline") -> Prediction:
    """(n_il,n_xl,n_samples) volume -> Prediction of that shape, as `segment` does a SEG-Y volume: every
    inline section, crossline section or both (their probabilities and votes averaged), each an image
    (n_samples, traces), depth down."""
    cube = _finite(cube, "volume")
    if cube.ndim != 3 or sections not in volume.DIRECTIONS:
      raise files.InputError(f"volume: shape {cube.shape} and sections={sections!r}; a volume is "
                             "(inlines, crosslines, samples), sections one of "
                             f"{', '.join(volume.DIRECTIONS)}")
    if cube.dtype != np.uint8:  # scaled by the percentiles of every sample
      cube = files.scale_uint8(cube, *np.percentile(cube, self.percentiles))
    probs, votes = [], []
    for direction in volume.DIRECTIONS[sections]:
      stack = cube.transpose(0, 2, 1) if direction == "inline" else cube.transpose(1, 2, 0)  # (k,samples,traces)
      result = self._vote(np.ascontiguousarray(stack), self.stride)
      back = (0, 2, 1) if direction == "inline" else (2, 0, 1)
      probs.append(result.probs.transpose(back))
      votes.append(result.votes.transpose(back))
    return Prediction(sum(probs) / len(probs), ensemble.is_salt(sum(votes) / len(votes)))

  def __call__(self, array: np.ndarray) -> Prediction:
    """By shape: (H,W) a section, (N,101,101) tiles, any other 3-D array a volume (call `volume` for a
    volume whose crossline and sample counts are both 101)."""
    array = np.asarray(array)
    if array.ndim == 2:
      return self.section(array)
    if array.ndim == 3 and array.shape[1:] == (TILE, TILE):
      return self.tiles(array)
    return self.volume(array)


def load(workdirs: Sequence[str], **options) -> Segmenter:
  """A Segmenter of the workdirs' snapshots (options: kind, folds, batch_size, stride, percentiles)."""
  return Segmenter(workdirs, **options)
