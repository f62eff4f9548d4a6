"""TFDS builder `tgs_salt` over the manually downloaded Kaggle folder, built and read without TensorFlow.

Built as ArrayRecord, so `tfds.data_source` gives random access with NumPy outputs and no TensorFlow
import. PNGs are encoded here with OpenCV (tfds would call TensorFlow to encode arrays).

  python -m salt_jax.data.tfds_tgs_salt --data_dir=../shared/tgs --out=/data/tfds   # build once
  tfds_tgs_salt.load_split("/data/tfds", "train")   # -> kaggle.Samples, equal to kaggle.load_train's

Features: id (Text; bytes when read back), image (101,101,1) uint8, mask (101,101,1) uint8 {0,1},
depth float32 (NaN if unknown). The test split has no labels: its mask is all zeros, so both splits share
one feature spec. Shuffling is disabled: examples keep the `salt_jax.data.kaggle` order (train.csv,
sample_submission.csv). The examples are the arrays `kaggle.load_split` returns (after its checks, RLEs
included), so both sources give the same tiles.
"""
import argparse
import pathlib
import time

import cv2
import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from google.protobuf import json_format

from salt_jax import errors
from salt_jax.data import kaggle
from salt_jax.data.errors import DataError
from salt_jax.geometry import TILE_SHAPE

NAME = "tgs_salt"
FILE_FORMAT = "array_record"
# What tfds raises reading a damaged build (json_format.Error: a dataset_info.json that is not its JSON).
_READ_ERRORS = (RuntimeError, ValueError, OSError, IndexError, AssertionError, json_format.Error)
_CHUNK = 1024


def _png(array: np.ndarray) -> bytes:
  """(101,101) uint8 -> PNG bytes (OpenCV, no TensorFlow)."""
  ok, buf = cv2.imencode(".png", array)
  if not ok:
    raise RuntimeError("cv2.imencode failed")
  return buf.tobytes()


class TgsSalt(tfds.core.GeneratorBasedBuilder, skip_registration=__name__ == "__main__"):
  """TGS Salt Identification Challenge 2018: 101x101 seismic tiles and salt masks.

  Run as a program (`python -m`), this file's copy of the class is not registered: the program uses the
  importable module's, whose module path tfds needs to find the builder's files.
  """

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


def build(kaggle_dir, data_dir, file_format: str = FILE_FORMAT, overwrite: bool = False) -> TgsSalt:
  """Prepares tgs_salt from the Kaggle folder into `data_dir` (a TFDS data dir); returns the builder.

  An existing build is kept unless `overwrite`. Needs no TensorFlow.
  """
  if not pathlib.Path(kaggle_dir).is_dir():   # else tfds asserts with its manual-download instructions
    raise DataError(f"missing folder: {kaggle_dir}")
  modes = tfds.download.GenerateMode
  mode = modes.FORCE_REDOWNLOAD if overwrite else modes.REUSE_DATASET_IF_EXISTS
  builder = TgsSalt(data_dir=str(data_dir), file_format=file_format)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(kaggle_dir),
                                                                            download_mode=mode))
  return builder


def dataset_dir(data_dir) -> epath.Path:
  """Where the build of this version lives under a TFDS data dir: <data_dir>/tgs_salt/<version>."""
  return epath.Path(data_dir) / NAME / str(TgsSalt.VERSION)


def _build_hint(data_dir) -> str:
  return f"build it with: python -m salt_jax.data.tfds_tgs_salt --data_dir=<Kaggle folder> --out={data_dir}"


def load_split(data_dir, split: str) -> kaggle.Samples:
  """One split of the build under the TFDS data dir `data_dir` (a path or gs:// URL), as `kaggle.Samples`.

  The same ids (same order), images (N,101,101) uint8, masks (N,101,101) {0,1} (None for 'test') and
  depths (N,) float32 as `kaggle.load_split` gives for the folder it was built from. Reads the ArrayRecord
  shards with tfds' data source (no TensorFlow). A missing or incomplete build raises DataError naming
  the path.
  """
  if split not in kaggle.SPLITS:
    raise ValueError(f"split must be one of {kaggle.SPLITS}, got {split!r}")
  root = dataset_dir(data_dir)
  if not (root / "dataset_info.json").exists():
    raise DataError(f"no {NAME} dataset at {root} (config.tfds_data_dir={data_dir}); {_build_hint(data_dir)}")
  try:
    builder = TgsSalt(data_dir=str(data_dir))
    info = builder.info
  except _READ_ERRORS as e:
    raise DataError(f"unreadable {NAME} dataset info {root / 'dataset_info.json'} ({errors.one_line(e)}); "
                    f"{_build_hint(data_dir)} --overwrite") from e
  if split not in info.splits:
    raise DataError(f"incomplete {NAME} dataset at {root}: no {split} split; {_build_hint(data_dir)}")
  if info.file_format.value != FILE_FORMAT:
    raise DataError(f"{NAME} dataset at {root} is {info.file_format.value}, not {FILE_FORMAT}; rebuild it")
  split_info = info.splits[split]
  missing = [path for path in split_info.filepaths if not path.exists()]
  if missing:
    raise DataError(f"incomplete {NAME} dataset at {root}: missing {missing[0]}; {_build_hint(data_dir)}")
  n = split_info.num_examples
  ids = []
  images = np.empty((n, *TILE_SHAPE), np.uint8)
  masks = np.empty((n, *TILE_SHAPE), np.uint8) if split == "train" else None
  depths = np.empty(n, np.float32)
  skip = {"mask": tfds.decode.SkipDecoding()} if masks is None else None   # unlabelled: all-zero masks
  try:
    source = builder.as_data_source(split, decoders=skip)
    if len(source) != n:
      raise DataError(f"{root}: the {split} split holds {len(source)} examples, dataset_info.json says {n}")
    for start in range(0, n, _CHUNK):   # decoded chunk by chunk: the raw records of a chunk at a time
      for i, example in enumerate(source.__getitems__(range(start, min(start + _CHUNK, n))), start):
        ids.append(example["id"].decode())
        images[i] = example["image"][..., 0]
        depths[i] = example["depth"]
        if masks is not None:
          masks[i] = example["mask"][..., 0]
  except _READ_ERRORS as e:
    raise DataError(f"cannot read the {split} split of {root} ({errors.one_line(e)})") from e
  return kaggle.Samples(ids=np.array(ids, dtype=str), images=images, masks=masks, depths=depths)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description="Builds the tgs_salt TFDS dataset (ArrayRecord) from the "
                                   "Kaggle folder; no TensorFlow needed.")
  parser.add_argument("--data_dir", required=True, help="the Kaggle folder (train/, test/, train.csv, ...)")
  parser.add_argument("--out", required=True, help="TFDS data dir to build into (then config.tfds_data_dir)")
  parser.add_argument("--overwrite", action="store_true", help="rebuild an existing build")
  args = parser.parse_args(argv)
  t0 = time.perf_counter()
  try:
    builder = build(args.data_dir, args.out, overwrite=args.overwrite)
  except DataError as e:
    parser.exit(1, f"salt_jax.data.tfds_tgs_salt: {e}\n")
  counts = ", ".join(f"{s} {builder.info.splits[s].num_examples}" for s in kaggle.SPLITS)
  print(f"{dataset_dir(args.out)}: {counts} examples ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
  from salt_jax.data import tfds_tgs_salt  # the importable module's builder (tfds finds its files by module)
  tfds_tgs_salt.main()
