"""Pseudo-labelling (SPEC 9): the test split, the epoch mixing rate, and validation on real labels only."""
import numpy as np
import pandas as pd
import pytest

from salt_jax import configlib, parallel
from salt_jax.data import kaggle, pseudo, rle
from salt_jax.data.errors import DataError
from salt_jax.inference import tta
from salt_jax.training import epochs, train
from salt_jax.workdir import rundir


def test_split_halves_is_seeded_balanced_and_complete():
  ids = [f"id{i}" for i in range(1001)]
  a, b = pseudo.split_halves(ids, seed=3), pseudo.split_halves(ids, seed=3)
  np.testing.assert_array_equal(a, b)
  assert set(np.unique(a)) == {0, 1} and abs(int(a.sum()) - 500) <= 1
  assert not np.array_equal(a, pseudo.split_halves(ids, seed=4))


def test_split_file_is_reused_and_checked(tmp_path):
  path = tmp_path / "split.csv"
  ids = [f"t{i}" for i in range(20)]
  first = pseudo.load_or_make_split(path, ids, seed=0)
  again = pseudo.load_or_make_split(path, ids[::-1], seed=99)  # the file wins over the seed
  np.testing.assert_array_equal(again, first[::-1])
  with pytest.raises(ValueError, match="is not a split of these 19 test ids"):
    pseudo.load_or_make_split(path, ids[:19], seed=0)
  path.write_text("id,part\nt0,0\n")
  with pytest.raises(DataError, match=f"^{path}: expected columns id,half, got id,part$"):
    pseudo.load_or_make_split(path, ids, seed=0)
  path.write_text("id,half\n" + "".join(f"{i},2\n" for i in ids))
  with pytest.raises(DataError, match="is not a split of these 20 test ids"):
    pseudo.load_or_make_split(path, ids, seed=0)


@pytest.mark.parametrize("prob", [0.0, 0.3, 0.5, 1.0])
def test_mix_epoch_replaces_slots_at_the_configured_rate(prob):
  n_real, n_pseudo, n = 1000, 500, 200_000
  order = np.random.default_rng(0).integers(0, n_real, n)
  mixed = pseudo.mix_epoch(np.random.default_rng(1), order, n_real, n_pseudo, prob)
  is_pseudo = mixed >= n_real
  assert len(mixed) == n
  assert abs(is_pseudo.mean() - prob) < 0.005  # 4.5 binomial standard deviations at p=0.5
  np.testing.assert_array_equal(mixed[~is_pseudo], order[~is_pseudo])  # real slots keep their sample
  if prob:
    counts = np.bincount(mixed[is_pseudo] - n_real, minlength=n_pseudo)
    assert counts.min() > 0 and len(counts) == n_pseudo  # uniform over the whole half


def test_mix_epoch_rejects_bad_probability():
  with pytest.raises(ValueError, match=r"pseudo_prob must be in \[0, 1\]"):
    pseudo.mix_epoch(np.random.default_rng(0), np.arange(4), 4, 4, 1.5)


def test_read_pseudo_masks_needs_every_id(tmp_path):
  path = tmp_path / "sub.csv"
  pd.DataFrame({"id": ["a", "b"], "rle_mask": ["1 3", ""]}).to_csv(path, index=False)
  masks = pseudo.read_pseudo_masks(path, ["b", "a"])
  assert masks[0].sum() == 0 and masks[1].sum() == 3
  with pytest.raises(ValueError, match="no mask for 1 of the requested ids"):
    pseudo.read_pseudo_masks(path, ["a", "c"])


def test_training_mixes_pseudo_tiles_and_validates_on_real_labels_only(tiny_config, mini_data_dir, tmp_path,
                                                                       monkeypatch):
  """Pseudo labels are a checkerboard no real mask has: they show up in about half of the training
  samples, only with test images of the chosen half, and never in validation."""
  checker = (np.indices((101, 101)).sum(0) % 2).astype(np.uint8)
  test = kaggle.load_test(str(mini_data_dir))
  csv = tmp_path / "pseudo.csv"
  pd.DataFrame({"id": test.ids, "rle_mask": [rle.rle_encode(checker)] * len(test.ids)}).to_csv(csv, index=False)
  seen_rows, seen_data, seen_valid = [], {}, []
  device_rows, replicate = epochs.device_rows, parallel.replicate

  def record_rows(*args, **kwargs):  # the samples of each step: rows into the device-resident data
    seen_rows.append(device_rows(*args, **kwargs))
    return seen_rows[-1]

  def record_data(tree, mesh):
    if isinstance(tree, dict) and set(tree) == {"image", "mask"}:
      seen_data.update({k: np.array(v) for k, v in tree.items()})
    return replicate(tree, mesh)

  def record_validate(self, variables, images, masks):
    seen_valid.append((np.array(images), np.array(masks)))
    return {"val_loss": 1.0, "val_map": 0.5, "val_threshold": 0.0}

  monkeypatch.setattr(epochs, "device_rows", record_rows)
  monkeypatch.setattr(parallel, "replicate", record_data)
  monkeypatch.setattr(tta.Predictor, "validate", record_validate)
  workdir = tmp_path / "pseudo_run"
  config = tiny_config(pseudo_csv=str(csv), pseudo_split=1, pseudo_prob=0.5, cycle_len=1, eval_start=1)
  train.train_and_evaluate(config, str(workdir))

  half = pseudo.load_or_make_split(workdir / "pseudo_split.csv", test.ids, 0)
  half_images = test.images[half == 1]
  rows = np.concatenate([r.ravel() for r in seen_rows])
  masks, images = seen_data["mask"][rows], seen_data["image"][rows]
  is_pseudo = (masks == checker).all(axis=(1, 2))
  assert 0.3 < is_pseudo.mean() < 0.7  # 96 samples at p=0.5: about 4 standard deviations
  for image in images[is_pseudo]:
    assert (half_images == image).all(axis=(1, 2)).any()
  samples = kaggle.load_train(config.data_dir)
  s = configlib.sections(config)
  _, valid_idx = rundir.RunDir(workdir).fold_rows(s.data, config.fold, samples.ids, samples.masks, s.optim.seed)
  valid_images, valid_masks = samples.images[valid_idx], samples.masks[valid_idx]
  assert len(seen_valid) == 1
  np.testing.assert_array_equal(seen_valid[0][0], valid_images)
  np.testing.assert_array_equal(seen_valid[0][1], valid_masks)
  assert not (seen_valid[0][1] == checker).all(axis=(1, 2)).any()


def test_keep_takes_the_most_confident_or_a_seeded_random_choice():
  confidence = np.array([0.2, 0.9, 0.5, 0.9, 0.1])
  np.testing.assert_array_equal(pseudo.keep(5, 2, confidence, seed=0), [1, 3])
  np.testing.assert_array_equal(pseudo.keep(5, 3, confidence, seed=0), [1, 2, 3])
  for limit in (0, 5, 9):
    np.testing.assert_array_equal(pseudo.keep(5, limit, confidence, seed=0), np.arange(5))
  a, b = pseudo.keep(100, 10, None, seed=3), pseudo.keep(100, 10, None, seed=3)
  np.testing.assert_array_equal(a, b)
  assert len(np.unique(a)) == 10 and (np.diff(a) > 0).all()
  assert not np.array_equal(a, pseudo.keep(100, 10, None, seed=4))


def test_read_confidence_checks_columns_and_ids(tmp_path):
  path = tmp_path / "confidence.csv"
  pd.DataFrame({"id": ["a", "b", "c"], "confidence": [0.1, 0.7, 0.4]}).to_csv(path, index=False)
  np.testing.assert_allclose(pseudo.read_confidence(path, ["c", "a"]), [0.4, 0.1])
  with pytest.raises(ValueError, match="lacks 1 of the pseudo-labelled ids"):
    pseudo.read_confidence(path, ["a", "zz"])
  pd.DataFrame({"id": ["a"], "score": [0.1]}).to_csv(path, index=False)
  with pytest.raises(DataError, match=f"^{path}: expected columns id,confidence, got id,score$"):
    pseudo.read_confidence(path, ["a"])
  path.write_text("id,confidence\na,0.5\nb,\n")
  with pytest.raises(DataError, match=f"^{path}: the confidence of id 'b' is not a number$"):
    pseudo.read_confidence(path, ["a"])
  path.write_bytes(b"id,confidence\n\xff\xfe,1\n")
  with pytest.raises(DataError, match=f"^cannot parse {path}: "):
    pseudo.read_confidence(path, ["a"])
  with pytest.raises(DataError, match=f"^missing file: {tmp_path / 'none.csv'}$"):
    pseudo.read_confidence(tmp_path / "none.csv", ["a"])


def test_pseudo_data_keeps_the_most_confident_of_every_test_tile(tiny_config, mini_data_dir, tmp_path):
  """pseudo_split=-1 takes every test tile; pseudo_tiles=N keeps the N most confident of the confidence CSV,
  with their own pseudo masks."""
  test = kaggle.load_test(str(mini_data_dir))
  rng = np.random.default_rng(0)
  masks = (rng.random((len(test.ids), 101, 101)) < 0.5).astype(np.uint8)
  csv = tmp_path / "pseudo.csv"
  frame = pd.DataFrame({"id": test.ids, "rle_mask": [rle.rle_encode(m) for m in masks]})
  frame.to_csv(csv, index=False)
  confidence = rng.random(len(test.ids))
  conf_csv = tmp_path / "confidence.csv"
  pd.DataFrame({"id": test.ids, "confidence": confidence}).to_csv(conf_csv, index=False)
  config = tiny_config(pseudo_csv=str(csv), pseudo_split=-1, pseudo_tiles=5, pseudo_confidence_csv=str(conf_csv))
  images, got = train.pseudo_data(configlib.sections(config), rundir.RunDir(tmp_path / "run"))
  best = np.sort(np.argsort(-confidence)[:5])
  np.testing.assert_array_equal(images, test.images[best])
  np.testing.assert_array_equal(got, masks[best])
  images, got = train.pseudo_data(configlib.sections(tiny_config(pseudo_csv=str(csv), pseudo_split=-1)),
                                  rundir.RunDir(tmp_path / "r2"))
  assert len(images) == len(test.ids)
  np.testing.assert_array_equal(got, masks)
