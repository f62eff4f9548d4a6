"""On-device augmentation (SPEC 2.1) against OpenCV's BORDER_REPLICATE padding, on real tiles."""
import functools

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from salt_jax import geometry
from salt_jax.data import augment


@pytest.fixture(scope="module")
def tiles(data_dir):
  """(images (16,101,101) uint8, masks (16,101,101) uint8 {0,1}) of real training tiles with salt."""
  images, masks = [], []
  for path in sorted((data_dir / "train" / "masks").glob("*.png")):
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if 0.1 < (mask > 0).mean() < 0.9:
      images.append(cv2.imread(str(data_dir / "train" / "images" / path.name), cv2.IMREAD_GRAYSCALE))
      masks.append((mask > 0).astype(np.uint8))
    if len(images) == 16:
      break
  return np.stack(images), np.stack(masks)


def _cv2_pad(img, top, left):
  return cv2.copyMakeBorder(img, top, geometry.PAD_TOTAL - top, left, geometry.PAD_TOTAL - left,
                            cv2.BORDER_REPLICATE)


def test_constants():
  assert (geometry.TILE, geometry.CANVAS, geometry.PAD_TOTAL, geometry.PAD_CENTER) == (101, 128, 27, 13)
  assert augment.SHIFT_RANGE == (-13, 13)


def test_center_pad_matches_cv2_and_crop_inverts(tiles):
  images, masks = tiles
  padded = np.asarray(augment.center_pad(jnp.asarray(images), 128))
  assert padded.shape == (16, 128, 128)
  for img, out in zip(images, padded):
    np.testing.assert_array_equal(out, cv2.copyMakeBorder(img, 13, 14, 13, 14, cv2.BORDER_REPLICATE))
  np.testing.assert_array_equal(np.asarray(augment.crop(jnp.asarray(padded))), images)
  nhwc = jnp.asarray(np.stack([images, masks], axis=-1))
  assert augment.center_pad(nhwc, 128).shape == (16, 128, 128, 2)
  np.testing.assert_array_equal(np.asarray(augment.crop(augment.center_pad(nhwc, 128))), np.asarray(nhwc))


def test_random_pad_matches_cv2_with_its_offsets(tiles):
  images, masks = tiles
  key = jax.random.key(3)
  out_i, out_m, (top, left) = augment.random_pad(key, jnp.asarray(images), jnp.asarray(masks), canvas=128,
                                                 return_offsets=True)
  assert out_i.shape == out_m.shape == (16, 128, 128) and out_i.dtype == jnp.uint8
  top2, left2 = augment.pad_offsets(key, 16, 128)
  np.testing.assert_array_equal(top, top2)
  np.testing.assert_array_equal(left, left2)
  top, left = np.asarray(top), np.asarray(left)
  assert len(set(zip(top, left))) > 8
  for b in range(16):
    np.testing.assert_array_equal(np.asarray(out_i[b]), _cv2_pad(images[b], top[b], left[b]))
    np.testing.assert_array_equal(np.asarray(out_m[b]), _cv2_pad(masks[b], top[b], left[b]))


def test_offsets_cover_full_range():
  top, left = jax.jit(augment.pad_offsets, static_argnums=(1, 2))(jax.random.key(0), 20000, 128)
  for off in (np.asarray(top), np.asarray(left)):
    assert off.min() == 0 and off.max() == 25
    counts = np.bincount(off, minlength=26)
    assert len(counts) == 26 and counts.min() > 20000 / 26 * 0.8
  assert abs(np.corrcoef(np.asarray(top), np.asarray(left))[0, 1]) < 0.05


def test_random_hflip_same_for_image_and_mask(tiles):
  images, masks = tiles
  imgs, msks, flags = jax.jit(augment.random_hflip, static_argnums=3)(
      jax.random.key(1), jnp.asarray(images), jnp.asarray(masks), True)
  flags = np.asarray(flags)
  for b in range(16):
    want_i = images[b, :, ::-1] if flags[b] else images[b]
    want_m = masks[b, :, ::-1] if flags[b] else masks[b]
    np.testing.assert_array_equal(np.asarray(imgs[b]), want_i)
    np.testing.assert_array_equal(np.asarray(msks[b]), want_m)
  dummy = jnp.zeros((4096, 1, 1), jnp.uint8)
  rates = [float(np.mean(np.asarray(augment.random_hflip(jax.random.key(k), dummy, dummy, True)[2])))
           for k in range(5)]
  assert all(abs(r - 0.5) < 0.03 for r in rates)


def test_hflip_axis():
  x = jnp.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
  np.testing.assert_array_equal(np.asarray(augment.hflip(x)), np.asarray(x)[:, :, ::-1])
  np.testing.assert_array_equal(np.asarray(augment.hflip(x[..., 0])), np.asarray(x)[:, :, ::-1, 0])


def test_normalize():
  img = jnp.asarray(np.array([[[0, 255], [127, 128]]], np.uint8))
  out = augment.normalize(img)
  assert out.shape == (1, 2, 2, 3) and out.dtype == jnp.float32
  want = (np.array([[0, 255], [127, 128]], np.float32) - 127.5) / 127.5
  for c in range(3):
    np.testing.assert_allclose(np.asarray(out[0, ..., c]), want, rtol=0, atol=1e-6)
  assert augment.normalize(img, jnp.bfloat16).dtype == jnp.bfloat16


def test_train_augment_composes_pad_flip_normalize(tiles):
  images, masks = tiles
  key = jax.random.key(7)
  augment_128 = jax.jit(functools.partial(augment.train_augment, canvas=128))
  x, y = augment_128(key, jnp.asarray(images), jnp.asarray(masks))
  assert x.shape == (16, 128, 128, 3) and x.dtype == jnp.float32
  assert y.shape == (16, 128, 128) and y.dtype == jnp.float32
  pad_key, flip_key = jax.random.split(key)
  top, left = map(np.asarray, augment.pad_offsets(pad_key, 16, 128))
  flags = np.asarray(augment.random_hflip(flip_key, jnp.zeros((16, 1, 1)), jnp.zeros((16, 1, 1)), True)[2])
  assert 0 < flags.sum() < 16
  for b in range(16):
    img, msk = _cv2_pad(images[b], top[b], left[b]), _cv2_pad(masks[b], top[b], left[b])
    if flags[b]:
      img, msk = img[:, ::-1], msk[:, ::-1]
    want = (img.astype(np.float32) - 127.5) / 127.5
    np.testing.assert_allclose(np.asarray(x[b]), np.repeat(want[..., None], 3, -1), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(y[b]), msk.astype(np.float32))
  assert set(np.unique(np.asarray(y))) == {0.0, 1.0}
  x16, _ = augment.train_augment(key, jnp.asarray(images), jnp.asarray(masks), jnp.bfloat16, canvas=128)
  assert x16.dtype == jnp.bfloat16


def test_eval_pad(tiles):
  images, _ = tiles
  out = jax.jit(functools.partial(augment.eval_pad, canvas=128))(jnp.asarray(images))
  assert out.shape == (16, 128, 128, 3) and out.dtype == jnp.float32
  want = np.stack([cv2.copyMakeBorder(i, 13, 14, 13, 14, cv2.BORDER_REPLICATE) for i in images])
  np.testing.assert_allclose(np.asarray(out[..., 1]), (want.astype(np.float32) - 127.5) / 127.5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(augment.crop(out[..., 0])),
                             np.asarray(augment.normalize(images)[..., 0]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("canvas", [112, 104])
def test_other_canvases_use_the_same_placement_rule(canvas):
  """top/left = c + U{-c..c-1}, c = (canvas - 101) // 2; the centre pad and the crop invert each other."""
  c = (canvas - 101) // 2
  assert augment.shift_range(canvas) == (-c, c)
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (64, 101, 101)), jnp.uint8)
  x, y, (top, left) = augment.random_pad(jax.random.key(1), images, images, return_offsets=True,
                                         canvas=canvas)
  assert x.shape == y.shape == (64, canvas, canvas)
  assert int(top.min()) == 0 and int(top.max()) == 2 * c - 1 and int(left.max()) == 2 * c - 1
  for i in range(4):
    t, l = int(top[i]), int(left[i])
    np.testing.assert_array_equal(np.asarray(x[i, t:t + 101, l:l + 101]), np.asarray(images[i]))
  padded = augment.center_pad(images, canvas)
  assert padded.shape == (64, canvas, canvas)
  np.testing.assert_array_equal(np.asarray(augment.crop(padded)), np.asarray(images))
  assert augment.eval_pad(images, canvas=canvas).shape == (64, canvas, canvas, 3)
