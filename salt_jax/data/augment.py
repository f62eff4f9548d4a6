"""On-device, batched, jittable augmentation and padding (SPEC 2.1).

Training: random replicate-pad 101 -> 128 (top/left = 13 + U{-13..12}, independently per image and
axis, same offsets for image and mask), left-right flip with p=0.5, normalise to 3 equal channels.
Evaluation: deterministic replicate centre pad (13 top/left, 14 bottom/right); `crop` inverts it.
Other canvases (`canvas`, e.g. 112) use the same placement rule: top/left = c + U{-c..c-1}, c =
geometry.pad_center(canvas).
"""
from typing import Tuple

import jax
import jax.numpy as jnp

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


def train_augment(key: jax.Array, images: jax.Array, masks: jax.Array, dtype=jnp.float32, *,
                  canvas: int) -> Tuple[jax.Array, jax.Array]:
  """Training input (SPEC 2.1): images uint8 (B,101,101), masks {0,1} (B,101,101) -> x (B,canvas,canvas,3)
  `dtype`, y (B,canvas,canvas) float32 in {0,1} (mask >= 0.5). Pad, then flip, then normalise."""
  pad_key, flip_key = jax.random.split(key)
  images, masks = random_pad(pad_key, images, masks, canvas=canvas)
  images, masks = random_hflip(flip_key, images, masks)
  return normalize(images, dtype), (masks >= 0.5).astype(jnp.float32)


def eval_pad(images: jax.Array, dtype=jnp.float32, *, canvas: int) -> jax.Array:
  """Validation/test input: uint8 (B,101,101) -> centre-padded, normalised (B,canvas,canvas,3) `dtype`."""
  return normalize(center_pad(images, canvas), dtype)
