"""On-device augmentation (SPEC 2.1) against OpenCV's BORDER_REPLICATE padding, on real tiles."""
import dataclasses
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


ALL_ON = augment.Jitter(scale=0.15, rotate=10.0, shear=8.0, warp_prob=0.75, brightness=0.08, contrast=0.15,
                        gamma=0.2, cutout=0.5, cutout_size=25, cutout_holes=2)


def test_jitter_fields_are_the_config_s_augment_keys():
  from salt_jax import configlib
  section = configlib.section(configlib.base_config(), "augment")
  assert {augment.Jitter.PREFIX + f.name for f in dataclasses.fields(augment.Jitter)} == set(section)
  assert augment.Jitter.of(section) == augment.Jitter() and not augment.Jitter().active


@pytest.mark.parametrize("jitter", [augment.Jitter(), augment.Jitter(scale=0.2, rotate=10.0, warp_prob=0.0),
                                    augment.Jitter(cutout=0.0, cutout_holes=3, warp_prob=0.3)],
                         ids=["default", "warp_prob_0", "cutout_0"])
def test_jitter_off_is_the_identity(tiles, jitter):
  """Each part off (its amplitude 0, or warp_prob 0) leaves the batch bit for bit what the original's pad
  and flip give, and the valid mask marks each tile where random_pad put it."""
  images, masks = map(jnp.asarray, tiles)
  key = jax.random.key(7)
  fn = jax.jit(functools.partial(augment.train_augment, canvas=128, return_valid=True),
               static_argnames="jitter")
  x, y, valid = fn(key, images, masks, jitter=jitter)
  x0, y0 = augment.train_augment(key, images, masks, canvas=128)
  np.testing.assert_array_equal(np.asarray(x), np.asarray(x0))
  np.testing.assert_array_equal(np.asarray(y), np.asarray(y0))
  pad_key, flip_key = jax.random.split(key)
  top, left = map(np.asarray, augment.pad_offsets(pad_key, 16, 128))
  flags = np.asarray(augment.random_hflip(flip_key, jnp.zeros((16, 1, 1)), jnp.zeros((16, 1, 1)), True)[2])
  for b in range(16):
    want = np.zeros((128, 128), np.float32)
    want[top[b]:top[b] + 101, left[b]:left[b] + 101] = 1.0
    np.testing.assert_array_equal(np.asarray(valid[b]), want[:, ::-1] if flags[b] else want)


def test_affine_warp_by_known_maps_matches_numpy(tiles):
  """Identity, an integer shift (border replicated past the edge) and a quarter turn about the centre
  (out[i, j] = in[100 - j, i], numpy's clockwise rot90) are exact: bilinear samples at whole pixels."""
  images, masks = tiles
  eye, quarter = np.eye(2, dtype=np.float32), np.array([[0, -1], [1, 0]], np.float32)
  mats = jnp.asarray(np.stack([eye, eye, quarter]))
  shifts = jnp.asarray(np.array([[0, 0], [3, -2], [0, 0]], np.float32))
  out_i, out_m = jax.jit(augment.affine_warp)(jnp.asarray(images[:3]), jnp.asarray(masks[:3]), mats, shifts)
  rows, cols = np.clip(np.arange(101) + 3, 0, 100), np.clip(np.arange(101) - 2, 0, 100)
  want_i = [images[0], images[1][rows][:, cols], np.rot90(images[2], k=-1)]
  want_m = [masks[0], masks[1][rows][:, cols], np.rot90(masks[2], k=-1)]
  assert out_i.dtype == out_m.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(out_i), np.stack(want_i).astype(np.float32))
  np.testing.assert_array_equal(np.asarray(out_m), np.stack(want_m).astype(np.float32))


def test_random_warp_moves_image_and_mask_together(tiles):
  """A mask equal to its thresholded image stays so after a random warp (up to bilinear ties at exactly
  half); warped tiles change, unwarped ones (warp_prob) are returned exactly; a zoom-in's window stays on
  the tile."""
  _, masks = tiles
  jitter = augment.Jitter(scale=0.2, rotate=15.0, shear=10.0, warp_prob=0.75)
  key = jax.random.key(11)
  out_i, out_m = jax.jit(augment.random_warp, static_argnums=3)(key, jnp.asarray(255 * masks),
                                                                 jnp.asarray(masks), jitter)
  out_i, out_m = np.asarray(out_i), np.asarray(out_m)
  ties = np.abs(out_i / 255.0 - 0.5) < 1e-4
  assert ties.mean() < 1e-3
  np.testing.assert_array_equal((out_i >= 127.5)[~ties], (out_m > 0)[~ties])
  assert set(np.unique(out_m)) == {0.0, 1.0}
  mats, shifts = map(np.asarray, augment.warp_params(key, 16, jitter))
  kept = np.all(mats == np.eye(2), axis=(1, 2)) & np.all(shifts == 0, axis=1)
  assert 0 < kept.sum() < 8
  np.testing.assert_array_equal(out_m[kept], masks[kept].astype(np.float32))
  assert all((out_m[b] != masks[b]).any() for b in np.flatnonzero(~kept))
  zoom_mats, zoom_shifts = map(np.asarray, augment.warp_params(key, 256, augment.Jitter(scale=0.3)))
  corners = np.array([[0, 0], [0, 100], [100, 0], [100, 100]], np.float32) - 50.0
  src = 50.0 + zoom_shifts[:, None, :] + np.einsum("bij,kj->bki", zoom_mats, corners)
  zoomed_in = zoom_mats[:, 0, 0] < 1.0
  assert zoomed_in.sum() > 64 and (src[zoomed_in] >= -1e-4).all() and (src[zoomed_in] <= 100 + 1e-4).all()
  scale = 1.0 / zoom_mats[:, 0, 0]
  assert 0.7 <= scale.min() < 0.75 and 1.25 < scale.max() <= 1.3


def test_grey_jitter_and_cutout_touch_the_image_only(tiles):
  """Brightness, contrast, gamma and cutout leave masks unchanged and grey values in [0, 255]; cutout
  holes are mid-grey squares clipped at the tile's edge; contrast alone keeps each unclipped tile's mean."""
  images, masks = map(jnp.asarray, tiles)
  key = jax.random.key(5)
  grey = augment.Jitter(brightness=0.1, contrast=0.2, gamma=0.3)
  out_i, out_m = augment.jitter_tiles(key, images, masks, grey)
  assert out_m is masks
  out_i = np.asarray(out_i)
  assert out_i.min() >= 0.0 and out_i.max() <= 255.0
  assert all(not np.allclose(out_i[b], np.asarray(images[b])) for b in range(16))
  contrast = np.asarray(augment.random_grey(key, images, augment.Jitter(contrast=0.2)))
  unclipped = ((contrast > 0) & (contrast < 255)).all((1, 2))  # the clip to [0, 255] moves the mean
  assert unclipped.sum() >= 8
  np.testing.assert_allclose(contrast.mean((1, 2))[unclipped],
                             np.asarray(images, np.float32).mean((1, 2))[unclipped], rtol=1e-4)
  cut = augment.Jitter(cutout=1.0, cutout_size=25)
  out_c, out_cm = augment.jitter_tiles(key, images, masks, cut)
  assert out_cm is masks
  holes = np.asarray(out_c) == 127.5  # never a grey of a uint8 tile
  area = holes.sum((1, 2))
  assert (area >= 13 * 13).all() and (area <= 25 * 25).all() and (area < 25 * 25).any()
  np.testing.assert_array_equal(np.asarray(out_c)[~holes], np.asarray(images, np.float32)[~holes])
  for b in range(16):
    r, c = np.flatnonzero(holes[b].any(1)), np.flatnonzero(holes[b].any(0))
    assert holes[b].sum() == len(r) * len(c) == (r[-1] - r[0] + 1) * (c[-1] - c[0] + 1)


def test_all_jitter_is_deterministic_per_key_and_in_range(tiles):
  images, masks = map(jnp.asarray, tiles)
  fn = jax.jit(functools.partial(augment.train_augment, canvas=104, jitter=ALL_ON, return_valid=True))
  x, y, valid = fn(jax.random.key(3), images, masks)
  x2, y2, valid2 = fn(jax.random.key(3), images, masks)
  x3, _, _ = fn(jax.random.key(4), images, masks)
  assert x.shape == (16, 104, 104, 3) and y.shape == valid.shape == (16, 104, 104)
  for a, b in ((x, x2), (y, y2), (valid, valid2)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.array_equal(np.asarray(x), np.asarray(x3))
  assert float(jnp.min(x)) >= -1.0 and float(jnp.max(x)) <= 1.0
  assert set(np.unique(np.asarray(y))) <= {0.0, 1.0}
  assert (np.asarray(valid).sum((1, 2)) == 101 * 101).all()
  _, y_off = augment.train_augment(jax.random.key(3), images, masks, canvas=104)
  assert not np.array_equal(np.asarray(y), np.asarray(y_off))  # the warp moved some masks

