"""Window arithmetic for whole sections: where the 101x101 windows go, the reflect padding around the
section, the smooth weight that blends overlapping windows, and the stitching of their probabilities.

A section (H,W) is reflect-padded by `(101 - stride) // 2` pixels before (so its first row sits as deep in
the first window as the stride allows), plus an optional `phase` (0 <= phase < stride) that shifts every
window back by that many pixels, and by at least `(101 - stride) // 2` after, up to the next window boundary.
Windows start every `stride` pixels of the padded section; every pixel of the section lies in at least one
window. Each window's probabilities are weighted by `window_weight` (a separable sin^2 bump, positive
everywhere) and the weighted sum is divided by the sum of the weights, so the weights of a pixel sum to one
wherever it lies, borders included. With stride 101 on a section made of tiles there is no padding and no
overlap: every pixel gets exactly the probability of the one window holding it.

Sums are kept in float64 (16 bytes per padded pixel: 256 MB for a 4,000 x 4,000 section) so that the
result, rounded to float32, reproduces a constant field and a single window's values exactly.
"""
from typing import Callable, Iterator, NamedTuple, Optional, Tuple

import numpy as np

from salt_jax import errors
from salt_jax.geometry import TILE

WindowFn = Callable[[np.ndarray], np.ndarray]  # (B,101,101) uint8 windows -> (B,101,101) probabilities


class Layout(NamedTuple):
  """The windows of one section: its shape (H,W), the stride, the padding ((top, bottom), (left, right))
  and the window origins along each axis in padded coordinates (ys (ny,), xs (nx,))."""
  shape: Tuple[int, int]
  stride: int
  pads: Tuple[Tuple[int, int], Tuple[int, int]]
  ys: np.ndarray
  xs: np.ndarray

  @property
  def padded_shape(self) -> Tuple[int, int]:
    return tuple(n + before + after for n, (before, after) in zip(self.shape, self.pads))

  @property
  def n_windows(self) -> int:
    return len(self.ys) * len(self.xs)

  def crop(self, padded: np.ndarray) -> np.ndarray:
    """The section's own pixels of a (...,Hp,Wp) padded-section array (a view)."""
    (top, _), (left, _) = self.pads
    return padded[..., top:top + self.shape[0], left:left + self.shape[1]]


def axis_windows(size: int, stride: int, tile: int = TILE, phase: int = 0) -> Tuple[np.ndarray, int, int]:
  """(window origins (n,) in padded coordinates, padding before, padding after) along one axis.

  The margin (tile - stride) // 2 pads both ends: the padding before is the margin plus `phase` (every
  window shifted back by that many pixels), and the last window ends at least the margin past the section.
  With stride 101 and phase 50 on a section of tiles, every window straddles a tile border and still no two
  windows overlap. An axis shorter than a tile is padded (reflected) up to at least one window.
  """
  if size < 1:
    raise errors.BadInput(f"a section of {size} px has no pixels")
  if not 1 <= stride <= tile:
    raise errors.BadInput(f"stride must be between 1 and {tile}, got {stride}")
  if not 0 <= phase < stride:
    raise errors.BadInput(f"phase must be between 0 and stride - 1 = {stride - 1}, got {phase}")
  margin = (tile - stride) // 2
  before = margin + phase
  n = 1 + -(-max(0, before + size + margin - tile) // stride)
  after = (n - 1) * stride + tile - before - size
  return np.arange(n) * stride, before, after


def layout(shape: Tuple[int, int], stride: int, tile: int = TILE, phase: int = 0) -> Layout:
  """The Layout of a (H,W) section windowed at `stride`, shifted back by `phase` pixels (axis_windows)."""
  (ys, top, bottom), (xs, left, right) = (axis_windows(int(n), stride, tile, phase) for n in shape)
  return Layout((int(shape[0]), int(shape[1])), stride, ((top, bottom), (left, right)), ys, xs)


def pad(section: np.ndarray, lay: Layout) -> np.ndarray:
  """(H,W) -> the reflect-padded (Hp,Wp) section (mirrored without repeating the edge pixel; a padding
  wider than the section mirrors it again, and a 1-pixel axis repeats its pixel)."""
  if section.shape != lay.shape:
    raise ValueError(f"section {section.shape} does not match its layout {lay.shape}")
  return np.pad(section, lay.pads, mode="reflect")


def window_weight(tile: int = TILE) -> np.ndarray:
  """(tile,tile) float64 blending weight: outer product of sin^2(pi (i + 1/2) / tile), 1 at the centre,
  small but positive at the edges (~6e-8 at a corner), so every covered pixel has a positive weight sum."""
  w = np.sin(np.pi * (np.arange(tile) + 0.5) / tile) ** 2
  return np.outer(w, w)


def origins(lay: Layout) -> np.ndarray:
  """(N,2) int (y, x) window origins in padded coordinates, row by row."""
  yy, xx = np.meshgrid(lay.ys, lay.xs, indexing="ij")
  return np.stack([yy.ravel(), xx.ravel()], axis=1)


def covering(lay: Layout, needed: np.ndarray, tile: int = TILE) -> np.ndarray:
  """(N,) bool over origins(lay): whether the window overlaps a pixel of the (H,W) bool `needed` mask."""
  wanted = np.zeros(lay.padded_shape, bool)
  lay.crop(wanted)[...] = needed
  return np.array([wanted[y:y + tile, x:x + tile].any() for y, x in origins(lay)], bool)


def batches(corners: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
  """(N,2) window origins in consecutive (<= batch_size, 2) chunks (never all windows' pixels at once)."""
  for start in range(0, len(corners), batch_size):
    yield corners[start:start + batch_size]


def accumulate(total: np.ndarray, corners: np.ndarray, values: np.ndarray, weight: np.ndarray) -> None:
  """total[window] += weight * value for each window (in place; total (Hp,Wp), values (B,tile,tile))."""
  tile = weight.shape[0]
  for (y, x), value in zip(corners, values):
    total[y:y + tile, x:x + tile] += weight * value


def weight_sum(lay: Layout, tile: int = TILE) -> np.ndarray:
  """(Hp,Wp) float64 sum of the window weights over every window; positive on the section's pixels."""
  total = np.zeros(lay.padded_shape, np.float64)
  corners = origins(lay)
  accumulate(total, corners, np.ones((len(corners), 1, 1)), window_weight(tile))
  return total


def blend(padded: np.ndarray, lay: Layout, window_fn: WindowFn, batch_size: int,
          weights: Optional[np.ndarray] = None, progress: Optional[Callable[[int], None]] = None,
          needed: Optional[np.ndarray] = None) -> np.ndarray:
  """blend_stack of one (Hp,Wp) padded section: (H,W) float32."""
  return blend_stack(padded[None], lay, window_fn, batch_size, weights, progress, needed)[0]


def blend_stack(padded: np.ndarray, lay: Layout, window_fn: WindowFn, batch_size: int,
                weights: Optional[np.ndarray] = None, progress: Optional[Callable[[int], None]] = None,
                needed: Optional[np.ndarray] = None) -> np.ndarray:
  """Weighted mean of the windows' outputs on each of K same-shaped sections: (K,Hp,Wp) -> (K,H,W) float32.

  The windows of all K sections (section by section, each row by row) are cut `batch_size` at a time,
  so batches run across the sections and only the stack's last batch is short. window_fn maps each batch
  of (<= batch_size, 101, 101) windows to their values; weights is weight_sum(lay) (computed here when
  None; pass it to share it between several models); progress(n) is called with the number of windows of
  each finished batch. With `needed` ((H,W) bool), only the windows overlapping a needed pixel run: those
  pixels get exactly the values of the whole blend, the others NaN.
  """
  weight = window_weight()
  weights = weight_sum(lay) if weights is None else weights
  corners = origins(lay) if needed is None else origins(lay)[covering(lay, needed)]
  k, n = len(padded), len(corners)
  keyed = np.concatenate([np.repeat(np.arange(k), n)[:, None], np.tile(corners, (k, 1))], axis=1)
  total = np.zeros((k, *lay.padded_shape), np.float64)
  for chunk in batches(keyed, batch_size):
    values = np.asarray(window_fn(np.stack([padded[s, y:y + TILE, x:x + TILE] for s, y, x in chunk])))
    if values.shape != (len(chunk), TILE, TILE):
      raise ValueError(f"window_fn returned {values.shape} for {len(chunk)} windows")
    for (s, y, x), value in zip(chunk, values):
      total[s, y:y + TILE, x:x + TILE] += weight * value
    if progress is not None:
      progress(len(chunk))
  out = (lay.crop(total) / lay.crop(weights)).astype(np.float32)
  if needed is not None:
    out[:, ~needed] = np.nan
  return out
