"""Submission CSVs: exact ids, RLE round trip, atomic writes, reading a subset of ids."""
import numpy as np
import pandas as pd
import pytest

from salt_jax.data import submission


def test_submission_ids_must_match_sample():
  with pytest.raises(ValueError, match="1 missing .*'c'.*0 extra"):
    submission.check_ids(["a", "b"], ["a", "b", "c"])
  with pytest.raises(ValueError, match="0 missing .*1 extra .*'z'"):
    submission.check_ids(["a", "z"], ["a"])
  with pytest.raises(ValueError, match="duplicate ids"):
    submission.check_ids(["a", "a"], ["a"])


def test_submission_round_trips_through_rle(tmp_path):
  rng = np.random.default_rng(1)
  masks = (rng.random((4, 101, 101)) > 0.7).astype(np.uint8)
  masks[2] = 0
  ids = np.array(["d", "a", "c", "b"])
  path = tmp_path / "sub.csv"
  submission.write_submission(path, ids, masks, ["a", "b", "c", "d"])
  read_ids, read_masks = submission.read_submission(path)
  assert list(read_ids) == ["a", "b", "c", "d"]
  np.testing.assert_array_equal(read_masks, masks[[1, 3, 2, 0]])
  assert pd.read_csv(path, keep_default_na=False)["rle_mask"][2] == ""
  assert [p.name for p in tmp_path.iterdir()] == ["sub.csv"]  # no temporary file left behind


def test_failed_write_leaves_no_csv(tmp_path):
  path = tmp_path / "sub.csv"
  with pytest.raises(ValueError):
    submission.write_submission(path, ["a"], np.zeros((1, 101, 101), np.uint8), ["b"])
  assert not path.exists()


def test_read_selected_ids_in_their_order_and_missing_ids_are_errors(tmp_path):
  path = tmp_path / "sub.csv"
  pd.DataFrame({"id": ["a", "b", "c"], "rle_mask": ["1 2", "", "5 1"]}).to_csv(path, index=False)
  ids, masks = submission.read_submission(path, ["c", "a"])
  assert list(ids) == ["c", "a"] and masks.shape == (2, 101, 101)
  assert masks[0].sum() == 1 and masks[1].sum() == 2
  with pytest.raises(ValueError, match="no mask for 1 of the requested ids .*'z'"):
    submission.read_submission(path, ["a", "z"])


def test_wrong_columns_are_an_error(tmp_path):
  path = tmp_path / "sub.csv"
  pd.DataFrame({"id": ["a"], "mask": [""]}).to_csv(path, index=False)
  with pytest.raises(ValueError, match="expected columns id,rle_mask"):
    submission.read_submission(path)
