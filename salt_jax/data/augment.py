"""On-device, batched, jittable augmentation and padding (SPEC 2.1).

Training: random replicate-pad 101 -> 128 (top/left = 13 + U{-13..12}, independently per image and
axis, same offsets for image and mask), left-right flip with p=0.5, normalise to 3 equal channels.
Evaluation: deterministic replicate centre pad (13 top/left, 14 bottom/right); `crop` inverts it.
"""
from typing import Tuple

import jax
import jax.numpy as jnp

from salt_jax.geometry import CANVAS, CROP, PAD_CENTER, PAD_TOTAL, TILE

SHIFT_RANGE = (-13, 13)  # numpy randint semantics: high exclusive, so top/left in [0, 25]


def pad_offsets(key: jax.Array, batch: int) -> Tuple[jax.Array, jax.Array]:
  """Random (top, left) pads, each (B,) int32 in [0, 25]: 13 + U{-13..12} per image and axis."""
  shift = jax.random.randint(key, (2, batch), SHIFT_RANGE[0], SHIFT_RANGE[1], dtype=jnp.int32)
  return PAD_CENTER + shift[0], PAD_CENTER + shift[1]


def pad_at(x: jax.Array, top: jax.Array, left: jax.Array) -> jax.Array:
  """Replicate-pads x (B,101,101,...) to (B,128,128,...) with content at rows top.., cols left..

  top, left: (B,) int. A gather with clipped index maps: out[i, j] = x[clip(i - top), clip(j - left)].
  """
  ar = jnp.arange(CANVAS, dtype=jnp.int32)
  rows = jnp.clip(ar[None, :] - top[:, None], 0, TILE - 1)  # (B,128)
  cols = jnp.clip(ar[None, :] - left[:, None], 0, TILE - 1)
  return jax.vmap(lambda img, r, c: img[r][:, c])(x, rows, cols)


def random_pad(key: jax.Array, images: jax.Array, masks: jax.Array, return_offsets: bool = False):
  """Random replicate pad (B,101,101,...) -> (B,128,128,...) of images and masks with shared offsets.

  Returns (images, masks), or (images, masks, (top, left)) with return_offsets.
  """
  top, left = pad_offsets(key, images.shape[0])
  out = pad_at(images, top, left), pad_at(masks, top, left)
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


def center_pad(x: jax.Array) -> jax.Array:
  """Replicate centre pad (B,101,101,...) -> (B,128,128,...): 13 top/left, 14 bottom/right."""
  pad = ((0, 0), (PAD_CENTER, PAD_TOTAL - PAD_CENTER), (PAD_CENTER, PAD_TOTAL - PAD_CENTER))
  return jnp.pad(x, pad + ((0, 0),) * (x.ndim - 3), mode="edge")


def crop(x: jax.Array) -> jax.Array:
  """Inverse of `center_pad`: (B,128,128,...) -> (B,101,101,...), the slice [13:114] on H and W."""
  return x[:, CROP, CROP]


def normalize(images: jax.Array, dtype=jnp.float32) -> jax.Array:
  """uint8 grey (B,H,W) -> (B,H,W,3) of (x - 127.5) / 127.5 in [-1, 1], three equal channels (SPEC 1.2)."""
  x = (images.astype(jnp.float32) - 127.5) / 127.5
  return jnp.broadcast_to(x[..., None], x.shape + (3,)).astype(dtype)


def train_augment(key: jax.Array, images: jax.Array, masks: jax.Array,
                  dtype=jnp.float32) -> Tuple[jax.Array, jax.Array]:
  """Training input (SPEC 2.1): images uint8 (B,101,101), masks {0,1} (B,101,101) ->
  x (B,128,128,3) `dtype`, y (B,128,128) float32 in {0,1} (mask >= 0.5). Pad, then flip, then normalise."""
  pad_key, flip_key = jax.random.split(key)
  images, masks = random_pad(pad_key, images, masks)
  images, masks = random_hflip(flip_key, images, masks)
  return normalize(images, dtype), (masks >= 0.5).astype(jnp.float32)


def eval_pad(images: jax.Array, dtype=jnp.float32) -> jax.Array:
  """Validation/test input: uint8 (B,101,101) -> centre-padded, normalised (B,128,128,3) `dtype`."""
  return normalize(center_pad(images), dtype)
