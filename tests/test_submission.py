"""Submission CSVs: exact ids, RLE round trip, atomic writes, reading a subset of ids, sample ids."""
import os
import pathlib

import numpy as np
import pandas as pd
import pytest

from salt_jax import fileio
from salt_jax.data import DataError, kaggle, submission


def test_submission_ids_must_match_sample():
  with pytest.raises(DataError, match=r"sub\.csv: ids differ from sample_submission\.csv: 1 missing: 'c'$"):
    submission.check_ids(["a", "b"], ["a", "b", "c"], "sub.csv")
  with pytest.raises(DataError, match=r"ids differ from sample_submission\.csv: 1 unknown: 'z'$"):
    submission.check_ids(["a", "z"], ["a"])
  with pytest.raises(DataError, match=r"1 duplicated: 'a'$"):
    submission.check_ids(["a", "a"], ["a"])
  with pytest.raises(DataError, match=r"sample_submission\.csv lists 1 id\(s\) more than once: 'a'"):
    submission.check_ids(["a"], ["a", "a"])
  submission.check_ids(np.array(["b", "a"]), ["a", "b"])  # order does not matter


def test_check_ids_names_a_few_plain_ids_of_each_problem():
  sample = np.array([f"s{i}" for i in range(10)])
  ids = np.concatenate([sample[5:], ["x1", "x2", "s7", "s9", "s7"]])
  with pytest.raises(DataError) as err:
    submission.check_ids(ids, sample, "sub.csv")
  msg = str(err.value)
  assert msg == ("sub.csv: ids differ from sample_submission.csv: 5 missing: 's0', 's1', 's2' (and 2 more); "
                 "2 unknown: 'x1', 'x2'; 2 duplicated: 's7', 's9'")
  assert "np." not in msg


def test_sample_ids_are_read_in_file_order(tmp_path):
  pd.DataFrame({"id": ["b", "a"], "rle_mask": ["1 1", ""]}).to_csv(tmp_path / "sample_submission.csv",
                                                                   index=False)
  assert kaggle.read_sample_ids(tmp_path) == ["b", "a"]
  assert all(type(i) is str for i in kaggle.read_sample_ids(tmp_path))


@pytest.mark.parametrize("content,match", [
    (None, "missing file"),
    (b"", "cannot parse"),
    (b"id,rle_mask\n\xff\xfeab,1 1\n", "cannot parse .*utf-8"),
    (b"id,mask\na,\n", "expected columns id,rle_mask, got id,mask"),
    (b"id,rle_mask\n", "lists no ids"),
    (b"id,rle_mask\na,\na,\n", "duplicate id 'a'"),
])
def test_bad_sample_submission_is_an_error_naming_the_file(tmp_path, content, match):
  path = tmp_path / "sample_submission.csv"
  if content is not None:
    path.write_bytes(content)
  with pytest.raises(DataError, match=match) as err:
    kaggle.read_sample_ids(tmp_path)
  assert str(path) in str(err.value)


def test_submission_round_trips_through_rle(tmp_path):
  rng = np.random.default_rng(1)
  masks = (rng.random((4, 101, 101)) > 0.7).astype(np.uint8)
  masks[2] = 0
  ids = np.array(["d", "a", "c", "b"])
  path = tmp_path / "sub.csv"
  submission.write_submission(path, submission.Submission(ids, masks), ["a", "b", "c", "d"])
  read = submission.read_submission(path)
  read_ids, read_masks = read.ids, read.masks
  assert list(read_ids) == ["a", "b", "c", "d"]
  np.testing.assert_array_equal(read_masks, masks[[1, 3, 2, 0]])
  assert pd.read_csv(path, keep_default_na=False)["rle_mask"][2] == ""
  assert [p.name for p in tmp_path.iterdir()] == ["sub.csv"]  # no temporary file left behind


@pytest.mark.parametrize("old", [None, "id,rle_mask\nold,1 1\n"])
def test_write_failing_midway_leaves_no_partial_file(tmp_path, monkeypatch, old):
  """The writer opens the file, writes the header and the first row, then fails (a full disk): the error
  propagates, the target is absent or untouched, and no temporary file is left."""
  path = tmp_path / "sub.csv"
  if old is not None:
    path.write_text(old)
  opened = []

  def failing_to_csv(frame, target, index=True):
    with open(target, "w") as f:
      opened.append(target)
      f.write("id,rle_mask\n" + f"{frame['id'][0]},{frame['rle_mask'][0]}\n")
      f.flush()
      raise OSError(28, "No space left on device")

  monkeypatch.setattr(pd.DataFrame, "to_csv", failing_to_csv)
  masks = np.ones((2, 101, 101), np.uint8)
  with pytest.raises(OSError, match="No space left on device"):
    submission.write_submission(path, submission.Submission(["a", "b"], masks), ["a", "b"])
  assert len(opened) == 1 and opened[0] != path and opened[0].parent == tmp_path
  assert sorted(p.name for p in tmp_path.iterdir()) == ([] if old is None else ["sub.csv"])
  if old is not None:
    assert path.read_text() == old


def test_failed_rename_leaves_no_temporary_file(tmp_path, monkeypatch):
  """The whole CSV is written, then putting it in place fails: the temporary file is removed."""
  path = tmp_path / "sub.csv"

  def failing_replace(src, dst):
    assert pathlib.Path(src).read_text().startswith("id,rle_mask\na,")  # complete before the rename
    raise PermissionError(13, "Permission denied")

  monkeypatch.setattr(os, "replace", failing_replace)
  with pytest.raises(fileio.UnwritableError, match=rf"cannot write {path} \(\[Errno 13\] Permission denied\)"):
    submission.write_submission(path, submission.Submission(["a"], np.ones((1, 101, 101), np.uint8)), ["a"])
  assert list(tmp_path.iterdir()) == []


def test_read_selected_ids_in_their_order_and_missing_ids_are_errors(tmp_path):
  path = tmp_path / "sub.csv"
  pd.DataFrame({"id": ["a", "b", "c"], "rle_mask": ["1 2", "", "5 1"]}).to_csv(path, index=False)
  read = submission.read_submission(path, ["c", "a"])
  ids, masks = read.ids, read.masks
  assert list(ids) == ["c", "a"] and masks.shape == (2, 101, 101)
  assert masks[0].sum() == 1 and masks[1].sum() == 2
  with pytest.raises(DataError, match="no mask for 1 of the requested ids: 'z'$"):
    submission.read_submission(path, ["a", "z"])


def test_wrong_columns_are_an_error(tmp_path):
  path = tmp_path / "sub.csv"
  pd.DataFrame({"id": ["a"], "mask": [""]}).to_csv(path, index=False)
  with pytest.raises(ValueError, match="expected columns id,rle_mask"):
    submission.read_submission(path)


def test_read_submission_checks_ids_on_the_raw_csv(tmp_path):
  path = tmp_path / "sub.csv"
  pd.DataFrame({"id": ["a", "b", "a"], "rle_mask": ["1 2", "", "1 1"]}).to_csv(path, index=False)
  with pytest.raises(DataError, match=r"sub\.csv: 1 duplicated id\(s\): 'a'"):
    submission.read_submission(path)  # never collapsed into one mask
  pd.DataFrame({"id": ["a", "z"], "rle_mask": ["1 2", ""]}).to_csv(path, index=False)
  with pytest.raises(DataError, match=r"sub\.csv: ids differ .*1 missing: 'b'; 1 unknown: 'z'$"):
    submission.read_submission(path, sample_ids=np.array(["a", "b"]))
  with pytest.raises(DataError, match=r"sub\.csv: ids differ .*1 unknown: 'z'$"):
    submission.check_file(path, ["a"])
  submission.check_file(path, ["z", "a"])


def test_bad_rle_names_the_file_and_the_id(tmp_path):
  path = tmp_path / "sub.csv"
  pd.DataFrame({"id": ["a", "b"], "rle_mask": ["1 2", "5 x"]}).to_csv(path, index=False)
  with pytest.raises(DataError, match=r"sub\.csv id 'b': malformed RLE, non-integer token 'x'"):
    submission.read_submission(path)


def test_write_with_wrong_ids_writes_nothing(tmp_path):
  path = tmp_path / "sub.csv"
  path.write_text("old\n")
  with pytest.raises(DataError, match="1 missing: 'c'"):
    submission.write_submission(path, submission.Submission(np.array(["a", "b"]), np.zeros((2, 101, 101))),
                                ["a", "b", "c"])
  assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["sub.csv"]


def test_submission_is_a_read_only_mapping_of_masks_by_id():
  masks = np.zeros((3, 101, 101), bool)
  masks[1, 0, 0] = True
  sub = submission.Submission(np.array(["a", "b", "c"], dtype=object), masks)
  assert sub.ids.dtype.kind == "U" and sub.masks.dtype == np.uint8
  assert list(sub) == ["a", "b", "c"] and len(sub) == 3 and "b" in sub and "z" not in sub
  assert sub["b"][0, 0] == 1 and dict(sub.items()).keys() == {"a", "b", "c"}
  picked = sub.select(["c", "b"])
  assert list(picked) == ["c", "b"] and picked["b"][0, 0] == 1
  with pytest.raises(KeyError, match="no mask for 1 of the requested ids: 'z'"):
    sub.select(["a", "z"])
  changed = sub.replace({"a": np.ones((101, 101), np.uint8)})
  assert changed["a"].all() and not sub["a"].any()  # a new submission; the old one is unchanged
  want = np.stack([np.ones((101, 101)), masks[1], masks[2]])
  assert changed == submission.Submission(["a", "b", "c"], want)
  assert list(submission.Submission.concat([picked, sub.select(["a"])])) == ["c", "b", "a"]
  assert len(submission.Submission([], [])) == 0
  with pytest.raises(ValueError, match="each id once; 1 duplicated: 'a'"):
    submission.Submission(["a", "a"], np.zeros((2, 101, 101)))
  with pytest.raises(ValueError, match=r"masks must be \(1,101,101\)"):
    submission.Submission(["a"], np.zeros((1, 10201)))
