"""Tiny synthetic Kaggle TGS folders: for data-layer tests (RGB image PNGs, 8/16-bit mask PNGs), and a
learnable one (bright discs are salt) on which a few tiny-model epochs give non-empty, differing
predictions."""
import pathlib

import cv2
import numpy as np
import pandas as pd

from salt_jax.data import rle


def make_fake_kaggle(root, num_train: int = 6, num_test: int = 4, seed: int = 0, depths: bool = True):
  """Writes a Kaggle-layout folder under `root`.

  Returns (root, train ids (N,), train images (N,101,101), masks (N,101,101) {0,1}, test ids, test images).
  """
  root = pathlib.Path(root)
  rng = np.random.default_rng(seed)
  for sub in ("train/images", "train/masks", "test/images"):
    (root / sub).mkdir(parents=True, exist_ok=True)
  train_ids = [f"{i:010x}" for i in rng.choice(2**40, num_train, replace=False)]
  test_ids = [f"{i:010x}" for i in rng.choice(2**40, num_test, replace=False)]
  train_images = rng.integers(0, 256, (num_train, 101, 101), dtype=np.uint8)
  test_images = rng.integers(0, 256, (num_test, 101, 101), dtype=np.uint8)
  masks = np.zeros((num_train, 101, 101), np.uint8)
  for i in range(1, num_train):               # mask 0 stays empty; others get a box and a bottom band
    r, c = rng.integers(0, 90, 2)
    masks[i, r:r + 5 + 2 * i, c:c + 9] = 1
    masks[i, 101 - i:, :] = 1
  for i, image in zip(train_ids, train_images):
    cv2.imwrite(str(root / "train/images" / f"{i}.png"), np.repeat(image[..., None], 3, axis=2))
  for k, (i, mask) in enumerate(zip(train_ids, masks)):
    png = mask.astype(np.uint16) * 65535 if k % 2 else mask * np.uint8(255)   # both Kaggle encodings
    cv2.imwrite(str(root / "train/masks" / f"{i}.png"), png)
  for i, image in zip(test_ids, test_images):
    cv2.imwrite(str(root / "test/images" / f"{i}.png"), np.repeat(image[..., None], 3, axis=2))
  train_csv = pd.DataFrame({"id": train_ids, "rle_mask": rle.rle_encode_many(masks)})
  train_csv.to_csv(root / "train.csv", index=False)
  pd.DataFrame({"id": test_ids, "rle_mask": "1 1"}).to_csv(root / "sample_submission.csv", index=False)
  if depths:
    known = train_ids + test_ids[:-1]           # the last test id has no depth -> NaN
    pd.DataFrame({"id": known, "z": np.arange(len(known)) * 10 + 50}).to_csv(root / "depths.csv", index=False)
  return root, np.array(train_ids), train_images, masks, np.array(test_ids), test_images


def make_learnable_kaggle(root, num_train: int = 96, num_test: int = 24, seed: int = 0):
  """A Kaggle-layout folder whose salt is learnable in a few epochs: a quarter of the tiles are empty, the
  others hold one disc (radius 10..45) of grey level 180 on 60, plus N(0, 20) noise. Returns root."""
  root = pathlib.Path(root)
  rng = np.random.default_rng(seed)
  for sub in ("train/images", "train/masks", "test/images"):
    (root / sub).mkdir(parents=True, exist_ok=True)
  ids = [f"{i:010x}" for i in rng.choice(2**40, num_train + num_test, replace=False)]
  yy, xx = np.mgrid[:101, :101]
  masks = np.zeros((len(ids), 101, 101), np.uint8)
  for k in range(len(ids)):
    radius, cy, cx = rng.uniform(10, 45), *rng.uniform(0, 101, 2)
    if rng.random() > 0.25:
      masks[k] = (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2
  images = np.clip(60 + 120 * masks + rng.normal(0, 20, masks.shape), 0, 255).astype(np.uint8)
  for k, i in enumerate(ids):
    if k < num_train:
      cv2.imwrite(str(root / "train/images" / f"{i}.png"), images[k])
      cv2.imwrite(str(root / "train/masks" / f"{i}.png"), masks[k] * np.uint8(255))
    else:
      cv2.imwrite(str(root / "test/images" / f"{i}.png"), images[k])
  pd.DataFrame({"id": ids[:num_train], "rle_mask": rle.rle_encode_many(masks[:num_train])}).to_csv(
      root / "train.csv", index=False)
  pd.DataFrame({"id": ids[num_train:], "rle_mask": "1 1"}).to_csv(root / "sample_submission.csv", index=False)
  pd.DataFrame({"id": ids, "z": np.arange(len(ids)) * 10 + 50}).to_csv(root / "depths.csv", index=False)
  return root
