"""Which data a run reads (config.data_source): the Kaggle folder or the built tgs_salt TFDS dataset.

Both give the same `kaggle.Samples` (ids in train.csv / sample_submission.csv order, images, masks {0,1},
depths; tests/test_tfds.py checks them equal, and so the folds), so the rest of the program does not know
which one it read. The TFDS path imports tensorflow_datasets only when it is used.
"""
import dataclasses
from typing import Optional

from salt_jax.data import kaggle

SOURCES = ("kaggle", "tfds")


@dataclasses.dataclass(frozen=True)
class Source:
  """Where the tiles come from: kind "kaggle" (path: the folder, with an optional npz cache_dir) or
  "tfds" (path: the TFDS data dir holding tgs_salt/, local or gs://). Hashable: one load per source."""
  kind: str
  path: str
  cache_dir: Optional[str] = None

  def train(self) -> kaggle.Samples:
    """The labelled train tiles (3,601 on the real data), in train.csv order."""
    if self.kind == "tfds":
      from salt_jax.data import tfds_tgs_salt  # pylint: disable=import-outside-toplevel
      return tfds_tgs_salt.load_split(self.path, "train")
    return kaggle.load_train(self.path, cache_dir=self.cache_dir)

  def test(self) -> kaggle.Samples:
    """The unlabelled test tiles (18,399 on the real data; masks None), in sample_submission.csv order."""
    if self.kind == "tfds":
      from salt_jax.data import tfds_tgs_salt  # pylint: disable=import-outside-toplevel
      return tfds_tgs_salt.load_split(self.path, "test")
    return kaggle.load_test(self.path, cache_dir=self.cache_dir)


def of(config, data_dir: Optional[str] = None) -> Source:
  """The source of a run's config; `data_dir` (predict --data_dir) reads that Kaggle folder instead.

  Configs recorded before `data_source` existed read the Kaggle folder.
  """
  kind = config.get("data_source", "kaggle")
  if kind not in SOURCES:
    raise ValueError(f"data_source must be one of {', '.join(SOURCES)}, got {kind!r}")
  if data_dir or kind == "kaggle":
    return Source("kaggle", str(data_dir or config.data_dir), config.get("cache_dir") or None)
  return Source("tfds", str(config.tfds_data_dir))


def load_train(config) -> kaggle.Samples:
  """The train tiles of the config's source (`Source.train`)."""
  return of(config).train()


def load_test(config) -> kaggle.Samples:
  """The test tiles of the config's source (`Source.test`)."""
  return of(config).test()
