"""On-device, batched, jittable augmentation and padding (SPEC 2.1).

Training: random replicate-pad 101 -> 128 (top/left = 13 + U{-13..12}, independently per image and
axis, same offsets for image and mask), left-right flip with p=0.5, normalise to 3 equal channels.
Evaluation: deterministic replicate centre pad (13 top/left, 14 bottom/right); `crop` inverts it.
Other canvases (`canvas`, e.g. 112) use the same placement rule: top/left = c + U{-c..c-1}, c =
geometry.pad_center(canvas).

Optional jitter (`Jitter`, the config's augment section, every key off by default; not in the original):
an affine warp (zoom / crop-rescale, rotation, shear) of image and mask together, grey-level changes
(brightness, contrast, gamma) and cutout holes of the image alone. It acts on the 101x101 tile before the
padding, so the tile keeps its place on the canvas: the padding stays what `tile_mask` marks (the pixels a
loss on the tile ignores) and a warp's samples past the tile's edge replicate its border, as the padding
does.
"""
import dataclasses
import math
from typing import Any, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
from jax.scipy import ndimage

from salt_jax import geometry
from salt_jax.geometry import CANVAS, TILE



def shift_range(canvas: int) -> Tuple[int, int]:
  """(low, high) of the random shift, numpy randint semantics (high exclusive): (-13, 13) for 128, so
  top/left in [0, 25]."""
  c = geometry.pad_center(canvas)
  return -c, c


SHIFT_RANGE = shift_range(CANVAS)


def pad_offsets(key: jax.Array, batch: int, canvas: int) -> Tuple[jax.Array, jax.Array]:
  """Random (top, left) pads, each (B,) int32 (for 128 in [0, 25]: 13 + U{-13..12}) per image and axis."""
  low, high = shift_range(canvas)
  shift = jax.random.randint(key, (2, batch), low, high, dtype=jnp.int32)
  return geometry.pad_center(canvas) + shift[0], geometry.pad_center(canvas) + shift[1]


def pad_at(x: jax.Array, top: jax.Array, left: jax.Array, canvas: int) -> jax.Array:
  """Replicate-pads x (B,101,101,...) to (B,canvas,canvas,...) with content at rows top.., cols left..

  top, left: (B,) int. A gather with clipped index maps: out[i, j] = x[clip(i - top), clip(j - left)].
  """
  ar = jnp.arange(canvas, dtype=jnp.int32)
  rows = jnp.clip(ar[None, :] - top[:, None], 0, TILE - 1)  # (B,canvas)
  cols = jnp.clip(ar[None, :] - left[:, None], 0, TILE - 1)
  return jax.vmap(lambda img, r, c: img[r][:, c])(x, rows, cols)


def random_pad(key: jax.Array, images: jax.Array, masks: jax.Array, *, canvas: int,
               return_offsets: bool = False):
  """Random replicate pad (B,101,101,...) -> (B,canvas,canvas,...) of images and masks, shared offsets.

  Returns (images, masks), or (images, masks, (top, left)) with return_offsets.
  """
  top, left = pad_offsets(key, images.shape[0], canvas)
  out = pad_at(images, top, left, canvas), pad_at(masks, top, left, canvas)
  return (*out, (top, left)) if return_offsets else out


def hflip(x: jax.Array) -> jax.Array:
  """Left-right flip of (B,H,W) or (B,H,W,C): reverses axis 2."""
  return jnp.flip(x, axis=2)


def _where_batch(flag: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.where(flag.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)


def random_hflip(key: jax.Array, images: jax.Array, masks: jax.Array, return_flags: bool = False):
  """Flips each image (B,H,W,...) and its mask together with probability 0.5.

  Returns (images, masks), or (images, masks, flags (B,) bool) with return_flags.
  """
  flags = jax.random.bernoulli(key, 0.5, (images.shape[0],))
  out = _where_batch(flags, hflip(images), images), _where_batch(flags, hflip(masks), masks)
  return (*out, flags) if return_flags else out


def center_pad(x: jax.Array, canvas: int) -> jax.Array:
  """Replicate centre pad (B,101,101,...) -> (B,canvas,canvas,...): for 128, 13 top/left, 14 bottom/right."""
  before, total = geometry.pad_center(canvas), geometry.pad_total(canvas)
  pad = ((0, 0), (before, total - before), (before, total - before))
  return jnp.pad(x, pad + ((0, 0),) * (x.ndim - 3), mode="edge")


def crop(x: jax.Array) -> jax.Array:
  """Inverse of `center_pad`: (B,canvas,canvas,...) -> (B,101,101,...) (for 128 the slice [13:114])."""
  window = geometry.crop_slice(x.shape[1])
  return x[:, window, window]


def normalize(images: jax.Array, dtype=jnp.float32) -> jax.Array:
  """uint8 grey (B,H,W) -> (B,H,W,3) of (x - 127.5) / 127.5 in [-1, 1], three equal channels (SPEC 1.2)."""
  x = (images.astype(jnp.float32) - 127.5) / 127.5
  return jnp.broadcast_to(x[..., None], x.shape + (3,)).astype(dtype)


def tile_mask(top: jax.Array, left: jax.Array, canvas: int) -> jax.Array:
  """Where each tile lies on its canvas: (B,) top, left -> (B,canvas,canvas) float32, 1 on the 101x101
  tile's own pixels, 0 on the padding."""
  ar = jnp.arange(canvas, dtype=jnp.int32)
  rows = (ar[None, :] >= top[:, None]) & (ar[None, :] < top[:, None] + TILE)
  cols = (ar[None, :] >= left[:, None]) & (ar[None, :] < left[:, None] + TILE)
  return (rows[:, :, None] & cols[:, None, :]).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class Jitter:
  """Training jitter beyond the original's pad and flip: the config keys aug_<field> (configlib.KEYS,
  section "augment"). Amplitudes 0 are off; the default instance changes nothing.

  scale: zoom factor s ~ U[1 - scale, 1 + scale] (s > 1 magnifies; the window then moves at random within
  the tile: a crop-rescale); rotate, shear: angles ~ U[-a, a] degrees; warp_prob: the fraction of images
  warped. brightness: grey shift ~ U[-a, a] x 255; contrast: factor ~ U[1 - a, 1 + a] about the tile's
  mean grey; gamma: exponent exp(U[-ln(1 + a), ln(1 + a)]). cutout: probability of each of cutout_holes
  square holes of cutout_size pixels (centres uniform on the tile, clipped at its edge) filled with mid
  grey 127.5 (0 after normalisation), in the image only: the mask keeps the salt under a hole.
  """
  scale: float = 0.0
  rotate: float = 0.0
  shear: float = 0.0
  warp_prob: float = 1.0
  brightness: float = 0.0
  contrast: float = 0.0
  gamma: float = 0.0
  cutout: float = 0.0
  cutout_size: int = 25
  cutout_holes: int = 1

  PREFIX = "aug_"

  @classmethod
  def of(cls, section: Mapping[str, Any]) -> "Jitter":
    """From the config's augment section {aug_<field>: value}."""
    return cls(**{k[len(cls.PREFIX):]: v for k, v in section.items()})

  @property
  def warps(self) -> bool:
    return self.warp_prob > 0 and (self.scale > 0 or self.rotate > 0 or self.shear > 0)

  @property
  def photometric(self) -> bool:
    return self.brightness > 0 or self.contrast > 0 or self.gamma > 0

  @property
  def active(self) -> bool:
    return self.warps or self.photometric or self.cutout > 0


def warp_params(key: jax.Array, batch: int, jitter: Jitter) -> Tuple[jax.Array, jax.Array]:
  """Random sampling maps of the tile: (B,2,2) matrices A and (B,2) shifts t (pixels, (row, col)) such
  that the output pixel p reads the input at c + t + A (p - c), c the tile's centre. A = R(rotation) @
  H(shear) / zoom; an image left unwarped (probability 1 - warp_prob) gets A = I, t = 0."""
  keys = jax.random.split(key, 5)
  u = lambda k, shape=(batch,): jax.random.uniform(k, shape, jnp.float32, -1.0, 1.0)
  zoom = 1.0 + jitter.scale * u(keys[0])
  theta = math.radians(jitter.rotate) * u(keys[1])
  shear = jnp.tan(math.radians(jitter.shear) * u(keys[2]))
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  rotation = jnp.stack([jnp.stack([cos, -sin], -1), jnp.stack([sin, cos], -1)], -2)  # (B,2,2)
  shearing = jnp.stack([jnp.stack([jnp.ones_like(shear), jnp.zeros_like(shear)], -1),
                        jnp.stack([shear, jnp.ones_like(shear)], -1)], -2)
  matrices = rotation @ shearing / zoom[:, None, None]
  room = 0.5 * (TILE - 1) * jnp.maximum(0.0, 1.0 - 1.0 / zoom)  # a magnified window stays on the tile
  shifts = room[:, None] * u(keys[3], (batch, 2))
  on = jax.random.bernoulli(keys[4], jitter.warp_prob, (batch,))
  matrices = jnp.where(on[:, None, None], matrices, jnp.eye(2, dtype=jnp.float32))
  return matrices, jnp.where(on[:, None], shifts, 0.0)


def affine_warp(images: jax.Array, masks: jax.Array, matrices: jax.Array, shifts: jax.Array
                ) -> Tuple[jax.Array, jax.Array]:
  """Warps tiles (B,H,W) and their masks with the sampling maps of warp_params: bilinear samples, the
  border replicated past the edge. Returns images (B,H,W) float32 and masks (B,H,W) float32 in {0,1}
  (the bilinear mask >= 0.5, so image and mask edges move together)."""
  h, w = images.shape[1:3]
  centre = jnp.array([(h - 1) / 2, (w - 1) / 2], jnp.float32)
  grid = jnp.stack(jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                                indexing="ij"), -1) - centre  # (H,W,2)
  coords = centre + shifts[:, None, None, :] + jnp.einsum("bij,hwj->bhwi", matrices, grid)  # (B,H,W,2)
  sample = jax.vmap(lambda x, c: ndimage.map_coordinates(x, (c[..., 0], c[..., 1]), order=1, mode="nearest"))
  warped_masks = sample(masks.astype(jnp.float32), coords)
  return sample(images.astype(jnp.float32), coords), (warped_masks >= 0.5).astype(jnp.float32)


def random_warp(key: jax.Array, images: jax.Array, masks: jax.Array, jitter: Jitter
                ) -> Tuple[jax.Array, jax.Array]:
  """affine_warp with random maps (warp_params); images left unwarped are returned exactly (float32)."""
  matrices, shifts = warp_params(key, images.shape[0], jitter)
  warped_images, warped_masks = affine_warp(images, masks, matrices, shifts)
  keep = jnp.all(matrices == jnp.eye(2), axis=(1, 2)) & jnp.all(shifts == 0, axis=1)
  return (_where_batch(keep, images.astype(jnp.float32), warped_images),
          _where_batch(keep, masks.astype(jnp.float32), warped_masks))


def random_grey(key: jax.Array, images: jax.Array, jitter: Jitter) -> jax.Array:
  """Per-image contrast (about the tile's mean), brightness and gamma: (B,H,W) grey in [0, 255] -> float32
  in [0, 255]."""
  b = images.shape[0]
  k_contrast, k_bright, k_gamma = jax.random.split(key, 3)
  u = lambda k: jax.random.uniform(k, (b, 1, 1), jnp.float32, -1.0, 1.0)
  x = images.astype(jnp.float32)
  mean = jnp.mean(x, axis=(1, 2), keepdims=True)
  x = mean + (1.0 + jitter.contrast * u(k_contrast)) * (x - mean)
  x = jnp.clip(x + 255.0 * jitter.brightness * u(k_bright), 0.0, 255.0)
  gamma = jnp.exp(math.log1p(jitter.gamma) * u(k_gamma))
  return 255.0 * (x / 255.0) ** gamma


def random_cutout(key: jax.Array, images: jax.Array, jitter: Jitter) -> jax.Array:
  """Each of jitter.cutout_holes square holes of jitter.cutout_size pixels, present with probability
  jitter.cutout, centred uniformly on the tile and clipped at its edge, filled with 127.5: (B,H,W) ->
  float32 (B,H,W)."""
  b, h, w = images.shape[:3]
  n, size = jitter.cutout_holes, jitter.cutout_size
  k_on, k_row, k_col = jax.random.split(key, 3)
  on = jax.random.bernoulli(k_on, jitter.cutout, (b, n))
  top = jax.random.randint(k_row, (b, n), 0, h) - size // 2
  left = jax.random.randint(k_col, (b, n), 0, w) - size // 2
  rows = jnp.arange(h)[None, None, :]
  cols = jnp.arange(w)[None, None, :]
  in_rows = (rows >= top[..., None]) & (rows < top[..., None] + size)  # (B,n,H)
  in_cols = (cols >= left[..., None]) & (cols < left[..., None] + size)
  holes = jnp.any(on[..., None, None] & in_rows[..., :, None] & in_cols[..., None, :], axis=1)  # (B,H,W)
  return jnp.where(holes, 127.5, images.astype(jnp.float32))


def jitter_tiles(key: jax.Array, images: jax.Array, masks: jax.Array, jitter: Jitter
                 ) -> Tuple[jax.Array, jax.Array]:
  """The jitter on 101x101 tiles: warp (image and mask), then grey levels and cutout (image only).
  images (B,101,101) grey, masks (B,101,101) {0,1} -> images float32 in [0, 255], masks float32 {0,1};
  a part that is off is skipped (the default Jitter returns its inputs)."""
  k_warp, k_grey, k_cut = jax.random.split(key, 3)
  if jitter.warps:
    images, masks = random_warp(k_warp, images, masks, jitter)
  if jitter.photometric:
    images = random_grey(k_grey, images, jitter)
  if jitter.cutout > 0:
    images = random_cutout(k_cut, images, jitter)
  return images, masks


def train_augment(key: jax.Array, images: jax.Array, masks: jax.Array, dtype=jnp.float32, *,
                  canvas: int, jitter: Optional[Jitter] = None, return_valid: bool = False):
  """Training input (SPEC 2.1): images uint8 (B,101,101), masks {0,1} (B,101,101) -> x (B,canvas,canvas,3)
  `dtype`, y (B,canvas,canvas) float32 in {0,1} (mask >= 0.5). Jitter the tile (when `jitter` is on), pad,
  then flip, then normalise. With return_valid also the tile's pixels on the canvas (tile_mask, flipped
  with its image): (x, y, valid (B,canvas,canvas) float32)."""
  pad_key, flip_key = jax.random.split(key)
  if jitter is not None and jitter.active:
    images, masks = jitter_tiles(jax.random.fold_in(key, 1), images, masks, jitter)
  images, masks, (top, left) = random_pad(pad_key, images, masks, canvas=canvas, return_offsets=True)
  images, masks, flags = random_hflip(flip_key, images, masks, return_flags=True)
  x, y = normalize(images, dtype), (masks >= 0.5).astype(jnp.float32)
  if not return_valid:
    return x, y
  valid = tile_mask(top, left, canvas)
  return x, y, _where_batch(flags, hflip(valid), valid)


def eval_pad(images: jax.Array, dtype=jnp.float32, *, canvas: int) -> jax.Array:
  """Validation/test input: uint8 (B,101,101) -> centre-padded, normalised (B,canvas,canvas,3) `dtype`."""
  return normalize(center_pad(images, canvas), dtype)
