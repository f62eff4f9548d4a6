"""Which data a run reads (the config's source section): the Kaggle folder or the built tgs_salt TFDS dataset.

Both give the same `kaggle.Samples` (ids in train.csv / sample_submission.csv order, images, masks {0,1},
depths; tests/test_tfds.py checks them equal, and so the folds), so the rest of the program does not know
which one it read. Each is a hashable value that implements `Source`, made by `of(source_section)`:
`kaggle.DataSource` (the folder and its npz cache) or `TfdsSource`, which imports tensorflow_datasets only
when it loads. A program chooses its source once and hands it to every step (the pipeline: the source of
its models' configs).
"""
import dataclasses
import hashlib
from typing import Optional, Protocol, runtime_checkable

import numpy as np

from salt_jax.data import kaggle

SOURCES = ("kaggle", "tfds")


@runtime_checkable
class Source(Protocol):
  """The competition's tiles: `train()` the 3,601 labelled ones in train.csv order, `test()` the 18,399
  unlabelled ones in sample_submission.csv order, `test_ids()` their ids alone (a submission's rows), and a
  `fingerprint()` string that changes when the data does (for records that must notice it). Sources are
  hashable values: two equal sources read the same data."""

  def train(self) -> kaggle.Samples: ...

  def test(self) -> kaggle.Samples: ...

  def test_ids(self) -> np.ndarray: ...

  def fingerprint(self) -> str: ...


@dataclasses.dataclass(frozen=True)
class TfdsSource:
  """The tgs_salt build under a TFDS data dir (a path or gs:// URL), read without TensorFlow."""
  tfds_data_dir: str

  def train(self) -> kaggle.Samples:
    """The Kaggle folder's train tiles, from the build (its RLEs were verified when it was built)."""
    from salt_jax.data import tfds_tgs_salt  # pylint: disable=import-outside-toplevel
    return tfds_tgs_salt.load_split(self.tfds_data_dir, "train")

  def test(self) -> kaggle.Samples:
    """The Kaggle folder's test tiles (masks None), from the build."""
    from salt_jax.data import tfds_tgs_salt  # pylint: disable=import-outside-toplevel
    return tfds_tgs_salt.load_split(self.tfds_data_dir, "test")

  def test_ids(self) -> np.ndarray:
    """The test split's ids in sample_submission.csv order (read with its images: the build keeps them
    together)."""
    return self.test().ids

  def fingerprint(self) -> str:
    """A SHA-256 of the build's dataset_info.json and the name, size and mtime of every file beside it,
    for records that must notice a rebuilt dataset."""
    from salt_jax.data import tfds_tgs_salt  # pylint: disable=import-outside-toplevel
    root = tfds_tgs_salt.dataset_dir(self.tfds_data_dir)
    digest = hashlib.sha256((root / "dataset_info.json").read_bytes())
    for path in sorted(root.iterdir()):
      stat = path.stat()
      digest.update(f"{path.name}\0{stat.length}\0{stat.mtime}\n".encode())
    return digest.hexdigest()


def of(source, data_dir: Optional[str] = None) -> Source:
  """The source a config's source section names (data_source, data_dir, cache_dir, tfds_data_dir);
  `data_dir` (predict --data_dir) reads that Kaggle folder instead."""
  if source.data_source not in SOURCES:
    raise ValueError(f"data_source must be one of {', '.join(SOURCES)}, got {source.data_source!r}")
  if data_dir or source.data_source == "kaggle":
    return kaggle.DataSource(str(data_dir or source.data_dir), source.cache_dir or None)
  return TfdsSource(str(source.tfds_data_dir))
