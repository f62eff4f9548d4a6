"""TFDS builder `tgs_salt` over the manually downloaded Kaggle folder, usable without TensorFlow.

Built as ArrayRecord by default, so `tfds.data_source` gives random access with NumPy outputs and no
TensorFlow import. PNGs are encoded here with OpenCV (tfds would call TensorFlow to encode arrays).

  from salt_jax.data import tfds_tgs_salt   # registers 'tgs_salt' with tfds
  tfds_tgs_salt.build("../shared/tgs", out_dir)
  source = tfds.data_source("tgs_salt", split="train", data_dir=out_dir)   # source[i] -> dict of NumPy

Features: id (Text; bytes when read back), image (101,101,1) uint8, mask (101,101,1) uint8 {0,1},
depth float32 (NaN if unknown). The test split has no labels: its mask is all zeros, so both splits share
one feature spec. Shuffling is disabled: examples keep the `salt_jax.data.kaggle` order (train.csv,
sample_submission.csv).
"""
import pathlib

import cv2
import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from salt_jax.data import kaggle
from salt_jax.geometry import TILE_SHAPE

FILE_FORMAT = "array_record"


def _png(array: np.ndarray) -> bytes:
  """(101,101) uint8 -> PNG bytes (OpenCV, no TensorFlow)."""
  ok, buf = cv2.imencode(".png", array)
  if not ok:
    raise RuntimeError("cv2.imencode failed")
  return buf.tobytes()


class TgsSalt(tfds.core.GeneratorBasedBuilder):
  """TGS Salt Identification Challenge 2018: 101x101 seismic tiles and salt masks."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Kaggle train (3,601 labelled) and test (18,399 unlabelled) tiles."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download the Kaggle competition data (`kaggle competitions download -c tgs-salt-identification-challenge`),
  unzip it and pass the folder as the manual dir (`download_config=tfds.download.DownloadConfig(
  manual_dir=...)`). It must hold train/images/*.png, train/masks/*.png, test/images/*.png, train.csv,
  sample_submission.csv and optionally depths.csv.
  """

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    """This file. (tfds' own lookup imports `importlib_resources`, absent on Python >= 3.9 installs.)"""
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "id": tfds.features.Text(),
            "image": tfds.features.Image(shape=(*TILE_SHAPE, 1), dtype=np.uint8),
            "mask": tfds.features.Image(shape=(*TILE_SHAPE, 1), dtype=np.uint8),
            "depth": tfds.features.Scalar(dtype=np.float32),
        }),
        supervised_keys=("image", "mask"),
        disable_shuffling=True,
        homepage="https://www.kaggle.com/c/tgs-salt-identification-challenge",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = pathlib.Path(dl_manager.manual_dir)
    return {split: self._generate_examples(root, split) for split in kaggle.SPLITS}

  def _generate_examples(self, root: pathlib.Path, split: str):
    samples = kaggle.load_split(root, split)
    empty = _png(np.zeros(TILE_SHAPE, np.uint8))
    for i, sample_id in enumerate(samples.ids):
      yield str(sample_id), {
          "id": str(sample_id),
          "image": _png(samples.images[i]),
          "mask": empty if samples.masks is None else _png(samples.masks[i]),
          "depth": np.float32(samples.depths[i]),
      }


def build(kaggle_dir, data_dir, file_format: str = FILE_FORMAT) -> TgsSalt:
  """Prepares tgs_salt from the Kaggle folder into `data_dir`; returns the builder."""
  builder = TgsSalt(data_dir=str(data_dir), file_format=file_format)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(kaggle_dir)))
  return builder
