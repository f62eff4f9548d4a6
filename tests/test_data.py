"""Strict, fast loading of the Kaggle folder: a synthetic folder for every error case, then the real data."""
import os
import shutil
import time

import cv2
import numpy as np
import pandas as pd
import pytest

from fake_kaggle import make_fake_kaggle
from salt_jax.data import DataError, Samples, kaggle, load_split, load_test, load_train, rle


@pytest.fixture
def fake(tmp_path):
  return make_fake_kaggle(tmp_path / "tgs")


def test_loads_fake_folder_in_csv_order(fake):
  root, train_ids, train_images, masks, test_ids, test_images = fake
  train, test = load_train(root), load_test(root)
  assert isinstance(train, Samples) and len(train) == 6 and len(test) == 4
  np.testing.assert_array_equal(train.ids, train_ids)
  np.testing.assert_array_equal(train.images, train_images)
  np.testing.assert_array_equal(train.masks, masks)        # 8-bit 0/255 and 16-bit 0/65535 PNGs
  assert train.images.dtype == train.masks.dtype == np.uint8 and set(np.unique(train.masks)) == {0, 1}
  np.testing.assert_array_equal(test.ids, test_ids)
  np.testing.assert_array_equal(test.images, test_images)
  assert test.masks is None
  np.testing.assert_array_equal(train.depths, np.arange(6) * 10 + 50)
  assert train.depths.dtype == np.float32
  np.testing.assert_array_equal(test.depths[:3], np.arange(6, 9) * 10 + 50)
  assert np.isnan(test.depths[3])
  np.testing.assert_array_equal(load_split(root, "test").images, test.images)


def test_without_depths_csv_depths_are_nan(tmp_path):
  root = make_fake_kaggle(tmp_path, depths=False)[0]
  assert np.isnan(load_train(root).depths).all()


def test_cache_is_reused_and_invalidated(fake, tmp_path, monkeypatch):
  root, train_ids = fake[0], fake[1]
  cache = tmp_path / "cache"
  cold = load_train(root, cache_dir=cache)
  load_test(root, cache_dir=cache)
  assert (cache / "tgs_train.npz").exists() and (cache / "tgs_test.npz").exists()
  with np.load(cache / "tgs_train.npz") as z:  # the masks packed as the prediction files pack them
    np.testing.assert_array_equal(z["masks_packed"], rle.pack_masks(cold.masks))
  reads = []
  real_read = kaggle.read_images
  monkeypatch.setattr(kaggle, "read_images", lambda *a, **k: reads.append(1) or real_read(*a, **k))
  warm = load_train(root, cache_dir=cache)
  assert not reads
  for name in ("ids", "images", "masks", "depths"):
    np.testing.assert_array_equal(getattr(warm, name), getattr(cold, name))
  assert load_test(root, cache_dir=cache).masks is None and not reads
  # A new tile (new PNGs and a new train.csv row) invalidates the cache.
  new_id = "ffffffffff"
  cv2.imwrite(str(root / "train/images" / f"{new_id}.png"), np.full((101, 101, 3), 7, np.uint8))
  cv2.imwrite(str(root / "train/masks" / f"{new_id}.png"), np.zeros((101, 101), np.uint8))
  frame = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
  pd.concat([frame, pd.DataFrame({"id": [new_id], "rle_mask": [""]})]).to_csv(root / "train.csv", index=False)
  fresh = load_train(root, cache_dir=cache)
  assert reads and list(fresh.ids) == list(train_ids) + [new_id] and (fresh.images[-1] == 7).all()


@pytest.fixture
def mini(mini_data_dir, tmp_path):
  """(root, cache): a writable copy of the real mini folder (96 train, 24 test tiles), both splits cached."""
  root, cache = tmp_path / "tgs", tmp_path / "cache"
  shutil.copytree(mini_data_dir, root)
  load_train(root, cache_dir=cache)
  load_test(root, cache_dir=cache)
  return root, cache


def test_unchanged_real_folder_is_served_from_the_cache(mini, monkeypatch):
  root, cache = mini
  cold_train, cold_test = load_train(root), load_test(root)
  assert sorted(p.name for p in cache.iterdir()) == ["tgs_test.npz", "tgs_train.npz"]   # no temporary files
  (root / "test/images" / "notes.txt").write_text("not a tile")                         # not read: ignored
  monkeypatch.setattr(kaggle, "read_images", lambda *a, **k: pytest.fail("images decoded again"))
  monkeypatch.setattr(kaggle, "read_masks", lambda *a, **k: pytest.fail("masks decoded again"))
  warm_train, warm_test = load_train(root, cache_dir=cache), load_test(root, cache_dir=cache)
  for cold, warm in ((cold_train, warm_train), (cold_test, warm_test)):
    for name in ("ids", "images", "masks", "depths"):
      np.testing.assert_array_equal(getattr(warm, name), getattr(cold, name))


def test_fingerprint_follows_the_bytes_not_the_place_or_the_mtimes(mini, tmp_path):
  """A moved, re-copied folder (new path, new mtimes) keeps its fingerprint, so a pipeline outdir resumes;
  one changed mask byte, a removed depths.csv or an extra test tile change it."""
  root, _ = mini
  first = kaggle.DataSource(str(root)).fingerprint()
  copy = tmp_path / "elsewhere" / "tgs"
  shutil.copytree(root, copy, copy_function=shutil.copy)  # new mtimes
  assert os.stat(copy / "train.csv").st_mtime_ns != os.stat(root / "train.csv").st_mtime_ns
  assert kaggle.DataSource(str(copy), cache_dir=str(tmp_path / "c")).fingerprint() == first
  mask = sorted((copy / "train/masks").glob("*.png"))[3]
  data = bytearray(mask.read_bytes())
  data[-20] ^= 1
  mask.write_bytes(bytes(data))
  changed = kaggle.DataSource(str(copy)).fingerprint()
  assert changed != first
  (copy / "depths.csv").unlink()
  assert kaggle.DataSource(str(copy)).fingerprint() not in (first, changed)


def test_cache_sees_a_png_rewritten_with_new_pixels(mini):
  root, cache = mini
  test = load_test(root, cache_dir=cache)
  path = root / "test/images" / f"{test.ids[5]}.png"
  mtime_ns, new = path.stat().st_mtime_ns, 255 - test.images[5]
  cv2.imwrite(str(path), new)
  assert path.stat().st_mtime_ns != mtime_ns
  fresh = load_test(root, cache_dir=cache)
  np.testing.assert_array_equal(fresh.images[5], new)
  np.testing.assert_array_equal(np.delete(fresh.images, 5, 0), np.delete(test.images, 5, 0))


def test_cache_sees_a_same_size_rewrite_by_its_mtime_ns(mini):
  root, cache = mini
  train = load_train(root, cache_dir=cache)
  path = root / "train/images" / f"{train.ids[7]}.png"
  stored = [cv2.IMWRITE_PNG_COMPRESSION, 0]            # uncompressed: the file size depends only on the shape
  cv2.imwrite(str(path), train.images[7], stored)
  load_train(root, cache_dir=cache)                     # cached with this file
  before, new = path.stat(), 255 - train.images[7]
  cv2.imwrite(str(path), new, stored)
  os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1))   # only 1 ns apart
  after = path.stat()
  assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns + 1)
  np.testing.assert_array_equal(load_train(root, cache_dir=cache).images[7], new)


def test_cache_sees_a_truncated_png(mini):
  root, cache = mini
  test = load_test(root, cache_dir=cache)
  path = root / "test/images" / f"{test.ids[3]}.png"
  before = path.stat()
  os.truncate(path, before.st_size // 2)
  os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))     # only the size tells
  with pytest.raises(DataError, match=f"unreadable image PNG: .*{test.ids[3]}.png"):
    load_test(root, cache_dir=cache)


def test_cache_sees_a_mask_changed_in_place(mini):
  root, cache = mini
  train = load_train(root, cache_dir=cache)
  i = int(np.argmax(train.masks.reshape(len(train), -1).any(1)))   # a tile with salt
  new = 1 - train.masks[i]
  cv2.imwrite(str(root / "train/masks" / f"{train.ids[i]}.png"), new * 255)
  np.testing.assert_array_equal(load_train(root, cache_dir=cache, verify_rle=False).masks[i], new)
  with pytest.raises(DataError, match=f"disagree with their mask PNGs, e.g. id '{train.ids[i]}'"):
    load_train(root, cache_dir=cache)


def test_cache_sees_a_changed_depths_csv(mini):
  root, cache = mini
  depths = load_train(root, cache_dir=cache).depths
  frame = pd.read_csv(root / "depths.csv", dtype={"id": str})
  frame.assign(z=frame["z"] + 1).to_csv(root / "depths.csv", index=False)
  np.testing.assert_array_equal(load_train(root, cache_dir=cache).depths, depths + 1)


def _edit_csv(path, **changes):
  frame = pd.read_csv(path, dtype=str, keep_default_na=False)
  for row, value in changes.items():
    frame.loc[int(row[1:]), "rle_mask"] = value
  frame.to_csv(path, index=False)


def test_missing_folders_and_files(tmp_path, fake):
  root = fake[0]
  with pytest.raises(DataError, match="missing folder.*nowhere"):
    load_train(tmp_path / "nowhere")
  (root / "sample_submission.csv").unlink()
  with pytest.raises(DataError, match="missing file.*sample_submission.csv"):
    load_test(root)
  (root / "train.csv").rename(root / "other.csv")
  with pytest.raises(DataError, match="missing file.*train.csv"):
    load_train(root)


def test_missing_masks_folder(fake):
  root = fake[0]
  for p in (root / "train/masks").iterdir():
    p.unlink()
  (root / "train/masks").rmdir()
  with pytest.raises(DataError, match="missing folder.*masks"):
    load_train(root)


def test_train_id_without_image_or_mask(fake):
  root, ids = fake[0], fake[1]
  (root / "train/masks" / f"{ids[2]}.png").unlink()
  with pytest.raises(DataError, match=f"no mask, e.g. id '{ids[2]}'"):
    load_train(root)
  (root / "train/images" / f"{ids[3]}.png").unlink()
  with pytest.raises(DataError, match=f"no train image, e.g. id '{ids[3]}'"):
    load_train(root)


def test_test_id_without_image_and_png_without_row(fake):
  root, test_ids = fake[0], fake[4]
  (root / "test/images" / f"{test_ids[1]}.png").rename(root / "test/images" / "0123456789.png")
  with pytest.raises(DataError, match=f"no test image, e.g. id '{test_ids[1]}'"):
    load_test(root)
  (root / "test/images" / "0123456789.png").rename(root / "test/images" / f"{test_ids[1]}.png")
  cv2.imwrite(str(root / "train/images" / "abcdefabcd.png"), np.zeros((101, 101), np.uint8))
  with pytest.raises(DataError, match="no row in .*train.csv, e.g. abcdefabcd.png"):
    load_train(root)


def test_image_not_101x101(fake):
  root, ids = fake[0], fake[1]
  cv2.imwrite(str(root / "train/images" / f"{ids[1]}.png"), np.zeros((100, 101, 3), np.uint8))
  with pytest.raises(DataError, match=f"{ids[1]}.png is 101x100, expected 101x101"):
    load_train(root)


def test_mask_not_101x101(fake):
  root, ids = fake[0], fake[1]
  cv2.imwrite(str(root / "train/masks" / f"{ids[1]}.png"), np.zeros((101, 102), np.uint8))
  with pytest.raises(DataError, match=f"mask .*{ids[1]}.png is 102x101"):
    load_train(root)


def test_unreadable_pngs(fake):
  root, ids, test_ids = fake[0], fake[1], fake[4]
  (root / "test/images" / f"{test_ids[0]}.png").write_bytes(b"not a png")
  with pytest.raises(DataError, match=f"unreadable image PNG: .*{test_ids[0]}.png"):
    load_test(root)
  (root / "train/masks" / f"{ids[0]}.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
  with pytest.raises(DataError, match=f"unreadable mask PNG: .*{ids[0]}.png"):
    load_train(root)


@pytest.mark.parametrize("dtype, value, top", [(np.uint8, 128, 255), (np.uint16, 255, 65535)])
def test_mask_with_values_other_than_0_and_max(fake, dtype, value, top):
  root, ids = fake[0], fake[1]
  mask = np.zeros((101, 101), dtype)
  mask[3, 4] = value
  cv2.imwrite(str(root / "train/masks" / f"{ids[4]}.png"), mask)
  with pytest.raises(DataError, match=f"{ids[4]}.png .*value {value}; only 0 and {top}"):
    load_train(root)


def test_colour_mask_rejected(fake):
  root, ids = fake[0], fake[1]
  cv2.imwrite(str(root / "train/masks" / f"{ids[4]}.png"), np.zeros((101, 101, 3), np.uint8))
  with pytest.raises(DataError, match="3 channels"):
    load_train(root)


@pytest.mark.parametrize("rle, message", [
    ("1 2 3", "odd number"), ("x 1", "non-integer"), ("10200 5", "out of bounds"), ("5 3 1 1", "overlaps")])
def test_malformed_rle_in_train_csv_names_the_id(fake, rle, message):
  root, ids = fake[0], fake[1]
  _edit_csv(root / "train.csv", r3=rle)
  with pytest.raises(DataError, match=f"train.csv id '{ids[3]}'.*{message}"):
    load_train(root)


def test_rle_disagreeing_with_mask_png(fake):
  root, ids = fake[0], fake[1]
  _edit_csv(root / "train.csv", r0="1 5")
  with pytest.raises(DataError, match=f"disagree with their mask PNGs, e.g. id '{ids[0]}'"):
    load_train(root)
  assert load_train(root, verify_rle=False).masks[0].sum() == 0


def test_bad_csv_columns_and_duplicates(fake):
  root = fake[0]
  frame = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
  frame.rename(columns={"rle_mask": "mask"}).to_csv(root / "train.csv", index=False)
  with pytest.raises(DataError, match="expected columns id,rle_mask"):
    load_train(root)
  pd.concat([frame, frame.iloc[:1]]).to_csv(root / "train.csv", index=False)
  with pytest.raises(DataError, match=f"duplicate id '{frame['id'][0]}'"):
    load_train(root)


def test_unknown_split(fake):
  with pytest.raises(ValueError, match="split must be one of"):
    load_split(fake[0], "valid")


def test_real_data_loads_complete(data_dir):
  """The loading time is scripts/load_data.py's figure, not a test's."""
  train, test = load_train(data_dir), load_test(data_dir)
  assert len(train) == 3601 and len(test) == 18399
  assert train.images.shape == (3601, 101, 101) and train.masks.shape == (3601, 101, 101)
  assert test.images.shape == (18399, 101, 101) and test.masks is None
  assert set(np.unique(train.masks)) == {0, 1}
  assert 2000 < int(train.masks.reshape(3601, -1).any(1).sum()) < 3601
  assert len(set(train.ids) | set(test.ids)) == 22000
  assert not np.isnan(train.depths).any() and not np.isnan(test.depths).any()
  assert test.ids[0] == "155410d6fa" and train.ids[0] == "575d24d81d"
