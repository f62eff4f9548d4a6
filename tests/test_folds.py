"""Stratified, seeded k-fold split saved to disk and reused (SPEC 1.3 note)."""
import pathlib

import numpy as np
import pandas as pd
import pytest

from salt_jax.data import DataError, coverage_class, fold_split, kaggle, load_or_make_folds, make_folds
from salt_jax.data import folds as folds_lib


def _masks_with_counts(counts, size=10):
  masks = np.zeros((len(counts), size, size), np.uint8)
  for i, c in enumerate(counts):
    masks[i].reshape(-1)[:c] = 1
  return masks


def test_coverage_class_boundaries():
  # 100-pixel tiles: 0 -> empty; 1..10 px -> (0,10%] -> 1; 11 px -> 2; exactly 30 px -> 3; full -> 10.
  masks = _masks_with_counts([0, 1, 10, 11, 30, 31, 99, 100])
  np.testing.assert_array_equal(coverage_class(masks), [0, 1, 1, 2, 3, 4, 10, 10])
  assert coverage_class(masks).dtype == np.int64
  real_size = _masks_with_counts([1020, 1021, 10201], size=101)   # 1020/10201 < 10% < 1021/10201
  np.testing.assert_array_equal(coverage_class(real_size), [1, 2, 10])


def _synthetic(n=537, seed=1):
  rng = np.random.default_rng(seed)
  counts = np.where(rng.random(n) < 0.4, 0, rng.integers(1, 101, n))
  return np.array([f"{i:010x}" for i in rng.choice(2**40, n, replace=False)]), _masks_with_counts(counts)


@pytest.mark.parametrize("num_folds", [10, 4])
def test_folds_disjoint_cover_and_balanced(num_folds):
  ids, masks = _synthetic()
  folds = make_folds(ids, masks, num_folds=num_folds, seed=0)
  assert folds.shape == (len(ids),) and set(folds) == set(range(num_folds))
  valid = [fold_split(folds, k)[1] for k in range(num_folds)]
  assert sorted(np.concatenate(valid).tolist()) == list(range(len(ids)))
  for k in range(num_folds):
    train_idx, valid_idx = fold_split(folds, k)
    assert not set(train_idx) & set(valid_idx) and len(train_idx) + len(valid_idx) == len(ids)
  sizes = np.bincount(folds, minlength=num_folds)
  assert sizes.max() - sizes.min() <= 1
  classes = coverage_class(masks)
  for c in np.unique(classes):
    per_fold = np.bincount(folds[classes == c], minlength=num_folds)
    assert per_fold.max() - per_fold.min() <= 1, (c, per_fold)


def test_folds_deterministic_seeded_and_order_independent():
  ids, masks = _synthetic()
  a = make_folds(ids, masks, 10, seed=0)
  np.testing.assert_array_equal(a, make_folds(ids, masks, 10, seed=0))
  assert (a != make_folds(ids, masks, 10, seed=1)).any()
  perm = np.random.default_rng(5).permutation(len(ids))
  np.testing.assert_array_equal(make_folds(ids[perm], masks[perm], 10, seed=0), a[perm])


def test_make_folds_rejects_bad_input():
  ids, masks = _synthetic(20)
  with pytest.raises(ValueError):
    make_folds(ids[:-1], masks)
  with pytest.raises(ValueError):
    make_folds(np.concatenate([ids[:-1], ids[:1]]), masks)
  with pytest.raises(ValueError):
    make_folds(ids, masks, num_folds=1)


def test_load_or_make_folds_writes_once_and_reuses(tmp_path, monkeypatch):
  ids, masks = _synthetic()
  path = tmp_path / "run" / "folds.csv"
  first = load_or_make_folds(path, ids, masks, 10, seed=0)
  frame = pd.read_csv(path, dtype={"id": str})
  assert list(frame.columns) == ["id", "fold"] and list(frame["id"]) == list(ids)
  monkeypatch.setattr(folds_lib, "make_folds", lambda *a, **k: pytest.fail("folds re-made"))
  again = load_or_make_folds(path, ids, masks, 10, seed=123)          # the file wins over the seed
  np.testing.assert_array_equal(again, first)
  perm = np.random.default_rng(0).permutation(len(ids))
  np.testing.assert_array_equal(load_or_make_folds(path, ids[perm], masks[perm], 10, 0), first[perm])


def test_load_or_make_folds_mismatch_raises(tmp_path):
  ids, masks = _synthetic()
  path = tmp_path / "folds.csv"
  load_or_make_folds(path, ids, masks, 10, seed=0)
  with pytest.raises(DataError, match="does not match the data: 1 ids missing"):
    load_or_make_folds(path, np.append(ids, "ffffffffff"), np.concatenate([masks, masks[:1]]), 10, 0)
  with pytest.raises(DataError, match="does not match the data: 0 ids missing.*1 unknown"):
    load_or_make_folds(path, ids[1:], masks[1:], 10, 0)
  with pytest.raises(DataError, match="expected 0..4"):
    load_or_make_folds(path, ids, masks, 5, 0)
  path.write_text("id,fold\nabc,x\n")
  with pytest.raises(DataError, match="integer folds"):
    load_or_make_folds(path, ids, masks, 10, 0)


def test_fold_file_errors_show_plain_values(tmp_path):
  ids, masks = _synthetic(30)
  path = tmp_path / "folds.csv"
  load_or_make_folds(path, ids, masks, 3, seed=0)
  with pytest.raises(DataError) as missing:
    load_or_make_folds(path, np.append(ids, ["ffffffffff", "eeeeeeeeee"]), masks[np.arange(32) % 30], 3, 0)
  assert "2 ids missing ('eeeeeeeeee', 'ffffffffff'), 0 unknown;" in str(missing.value)
  with pytest.raises(DataError) as folds:
    load_or_make_folds(path, ids, masks, 4, 0)
  assert "holds folds 0, 1, 2, expected 0..3" in str(folds.value)
  pd.DataFrame({"id": ids, "fold": np.arange(30)}).to_csv(path, index=False)
  with pytest.raises(DataError) as many:
    load_or_make_folds(path, ids, masks, 3, 0)
  assert "holds folds 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 (and 18 more), expected 0..2" in str(many.value)
  for error in (missing, folds, many):
    assert "np." not in str(error.value)


def test_write_folds_is_atomic(tmp_path, monkeypatch):
  ids, masks = _synthetic(30)
  path = tmp_path / "folds.csv"
  folds_lib.write_folds(path, ids, make_folds(ids, masks, 3, seed=0))
  before = path.read_bytes()

  def crash(frame, target, **kwargs):
    pathlib.Path(target).write_text("id,fold\n0123")
    raise OSError("disk full")

  monkeypatch.setattr(pd.DataFrame, "to_csv", crash)
  with pytest.raises(OSError, match="disk full"):
    folds_lib.write_folds(path, ids, make_folds(ids, masks, 3, seed=1))
  assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["folds.csv"]


def test_fold_split_out_of_range():
  with pytest.raises(ValueError, match="fold 3 out of range"):
    fold_split(np.array([0, 1, 2, 0]), 3)


def test_real_train_folds(data_dir, tmp_path):
  train = kaggle.load_train(data_dir, verify_rle=False)
  folds = load_or_make_folds(tmp_path / "folds.csv", train.ids, train.masks, 10, seed=0)
  sizes = np.bincount(folds, minlength=10)
  assert sizes.sum() == 3601 and sizes.min() == 360 and sizes.max() == 361
  classes = coverage_class(train.masks)
  assert set(classes) == set(range(11))
  table = np.array([np.bincount(folds[classes == c], minlength=10) for c in range(11)])
  assert (table.max(1) - table.min(1) <= 1).all()
