"""Kaggle RLE (SPEC 7.4): hand cases, error cases, and agreement with every real train mask."""
import numpy as np
import pandas as pd
import pytest

from salt_jax.data import DataError, kaggle, rle
from salt_jax.inference import predict


def test_hand_cases_column_major_one_indexed():
  mask = np.zeros((3, 3), np.uint8)
  mask[0, 1] = 1                               # row 0, col 1 -> pixel col*H + row = 3 -> start 4
  assert rle.rle_encode(mask) == "4 1"
  mask[1, 1] = mask[2, 1] = mask[0, 2] = 1     # runs through the column into the next one
  assert rle.rle_encode(mask) == "4 4"
  assert rle.rle_encode(np.ones((3, 3), bool)) == "1 9"
  assert rle.rle_encode(np.zeros((3, 3))) == ""
  np.testing.assert_array_equal(rle.rle_decode("1 2 5 1", (3, 3)), [[1, 0, 0], [1, 1, 0], [0, 0, 0]])
  assert rle.rle_decode("1 2 5 1", (3, 3)).dtype == np.uint8


def test_rectangular_shape_is_h_by_w():
  mask = np.zeros((2, 4), np.uint8)
  mask[1, 3] = 1                               # last pixel: col 3 * H 2 + row 1 = 7 -> start 8
  assert rle.rle_encode(mask) == "8 1"
  np.testing.assert_array_equal(rle.rle_decode("8 1", (2, 4)), mask)


@pytest.mark.parametrize("empty", ["", "   ", float("nan"), None])
def test_empty_values_decode_to_zeros(empty):
  out = rle.rle_decode(empty)
  assert out.shape == (101, 101) and not out.any()


def test_adjacent_runs_are_accepted():
  np.testing.assert_array_equal(rle.rle_decode("1 2 3 1", (2, 2)), rle.rle_decode("1 3", (2, 2)))


def test_round_trip_random_masks_many_equals_single():
  rng = np.random.default_rng(0)
  masks = (rng.random((20, 101, 101)) < rng.random((20, 1, 1))).astype(np.uint8)
  masks[0] = 0
  masks[1] = 1
  encoded = rle.rle_encode_many(masks)
  assert encoded == [rle.rle_encode(m) for m in masks]
  np.testing.assert_array_equal(rle.rle_decode_many(encoded, (101, 101)), masks)
  assert rle.rle_decode_many([], (101, 101)).shape == (0, 101, 101)
  assert rle.rle_encode_many(np.zeros((0, 101, 101))) == []


@pytest.mark.parametrize("bad, message", [
    ("1 2 3", "odd number"),
    ("1 b", "non-integer token 'b'"),
    ("1.5 2", "non-integer token '1.5'"),
    ("0 1", "start 0 < 1"),
    ("-3 1", "start -3 < 1"),
    ("1 0", "run length 0 < 1"),
    ("1 -2", "run length -2 < 1"),
    ("9 2", "out of bounds"),
    ("10 1", "out of bounds"),
    ("99999999999999999999999 1", "out of bounds"),
    ("5 1 1 1", "overlaps or precedes"),
    ("1 3 2 1", "overlaps or precedes"),
    (3, "must be a string"),
])
def test_malformed_rle_raises(bad, message):
  with pytest.raises(DataError, match=message):
    rle.rle_decode(bad, (3, 3))


def test_decode_many_names_the_bad_entry():
  with pytest.raises(DataError, match="id 'abc'.*out of bounds"):
    rle.rle_decode_many(["1 1", "", "1 10"], (3, 3), names=["x", "y", "id 'abc'"])
  with pytest.raises(DataError, match="RLE #1"):
    rle.rle_decode_many(["1 1", "1 1 1"], (3, 3))


@pytest.mark.parametrize("bad, message", [
    (np.int64(3), "got int64 3$"),
    (np.array(["1 x"])[0], "non-integer token 'x'$"),
    (np.array(["1\x1c1"])[0], r"malformed RLE '1\\x1c1'$"),
])
def test_errors_show_plain_values_not_numpy_reprs(bad, message):
  with pytest.raises(DataError, match=message) as err:
    rle.rle_decode_many(np.array([bad], dtype=object), (3, 3), names=np.array(["a"]))
  assert "np." not in str(err.value)
  assert not rle.rle_decode_many([np.float32("nan")], (3, 3)).any()  # a NumPy NaN is an empty mask too


def test_encode_wrong_rank_raises():
  with pytest.raises(ValueError):
    rle.rle_encode(np.zeros((2, 3, 3)))
  with pytest.raises(ValueError):
    rle.rle_encode_many(np.zeros((3, 3)))


@pytest.fixture(scope="module")
def real_train(data_dir):
  return kaggle.load_train(data_dir, verify_rle=False)


def test_real_train_csv_equals_mask_pngs_and_round_trips(data_dir, real_train):
  frame = pd.read_csv(data_dir / "train.csv", dtype=str, keep_default_na=False)
  assert list(frame["id"]) == list(real_train.ids)
  decoded = rle.rle_decode_many(list(frame["rle_mask"]), (101, 101), names=list(frame["id"]))
  np.testing.assert_array_equal(decoded, real_train.masks)
  encoded = rle.rle_encode_many(real_train.masks)
  assert encoded == [" ".join(r.split()) for r in frame["rle_mask"]]
  np.testing.assert_array_equal(rle.rle_decode_many(encoded, (101, 101)), real_train.masks)


def test_bit_packing_is_row_major_eight_pixels_a_byte_and_round_trips(tmp_path):
  """The one packing of the prediction files (and of the decoded-data cache, tests/test_data.py)."""
  masks = (np.random.default_rng(0).random((5, 101, 101)) > 0.5).astype(np.uint8)
  packed = rle.pack_masks(masks)
  assert packed.shape == (5, 1276) and packed.dtype == np.uint8
  assert packed[0, 0] == int("".join(map(str, masks[0, 0, :8])), 2)  # row 0's first 8 pixels, first = MSB
  np.testing.assert_array_equal(rle.unpack_masks(packed), masks)
  np.testing.assert_array_equal(rle.pack_masks(masks * 255), packed)  # nonzero is salt
  path = tmp_path / "fold_0_cycle_0.npz"
  ids = np.array([f"id{i}" for i in range(5)])
  predict.save_prediction(path, meta={"fold": 0}, valid_ids=ids[:3], valid_masks=masks[:3], test_ids=ids,
                          test_masks=masks)
  with np.load(path) as z:
    np.testing.assert_array_equal(z["test_masks"], packed)
  np.testing.assert_array_equal(predict.load_prediction(path)["valid_masks"], masks[:3])
