"""The tgs_salt TFDS builder: ArrayRecord build and `tfds.data_source` read-back, without TensorFlow."""
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets")
pytest.importorskip("array_record.python.array_record_module", reason="ArrayRecord needs array_record")

import tensorflow_datasets as tfds  # noqa: E402

from fake_kaggle import make_fake_kaggle  # noqa: E402
from salt_jax import geometry  # noqa: E402
from salt_jax.data import tfds_tgs_salt  # noqa: E402


def test_build_array_record_and_read_back_without_tensorflow(tmp_path):
  root, train_ids, train_images, masks, test_ids, test_images = make_fake_kaggle(tmp_path / "kaggle")
  out = tmp_path / "tfds"
  builder = tfds_tgs_salt.build(root, out)
  assert builder.name == "tgs_salt" and str(builder.version) == "1.0.0"
  features = builder.info.features
  assert features["image"].shape == features["mask"].shape == (*geometry.TILE_SHAPE, 1)
  assert builder.info.splits["train"].num_examples == 6 and builder.info.splits["test"].num_examples == 4
  assert sorted(p.name for p in (out / "tgs_salt" / "1.0.0").glob("*.array_record*")) == [
      "tgs_salt-test.array_record-00000-of-00001", "tgs_salt-train.array_record-00000-of-00001"]

  train = tfds.data_source("tgs_salt", split="train", data_dir=str(out))
  assert len(train) == 6
  for i in range(6):
    example = train[i]
    assert example["id"].decode() == train_ids[i]
    assert example["image"].shape == (101, 101, 1) and example["image"].dtype == np.uint8
    np.testing.assert_array_equal(example["image"][..., 0], train_images[i])
    np.testing.assert_array_equal(example["mask"][..., 0], masks[i])
    assert example["depth"] == pytest.approx(50 + 10 * i)

  test = tfds.data_source("tgs_salt", split="test", data_dir=str(out))
  assert [e["id"].decode() for e in test] == list(test_ids)
  np.testing.assert_array_equal(np.stack([e["image"][..., 0] for e in test]), test_images)
  assert not np.stack([e["mask"] for e in test]).any()      # no labels: all-zero masks
  assert np.isnan(test[3]["depth"])
  assert "tensorflow" not in sys.modules                   # built and read without TensorFlow
