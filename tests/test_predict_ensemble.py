"""Prediction files, cycle voting, submissions and the out-of-fold table."""
import json
import os
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest

from salt_jax import cli, metrics
from salt_jax.data import DataError, DataSource, submission
from salt_jax.inference import ensemble, gating, predict
from salt_jax.seismic import segment
from salt_jax.workdir import checkpoints, rundir


def test_voting_arithmetic_on_hand_made_masks():
  a = np.zeros((1, 101, 101), np.float32)
  # Model 1: 3 snapshots vote pixel (0,0) in 2 of 3, pixel (0,1) in 1 of 3.
  m1 = np.stack([a[0].copy() for _ in range(3)])
  m1[0, 0, 0] = m1[1, 0, 0] = 1
  m1[2, 0, 1] = 1
  v1 = m1.mean(0)[None]
  # Model 2: 1 snapshot votes (0,1) only: equal model weight despite fewer snapshots.
  v2 = a.copy()
  v2[0, 0, 1] = 1
  sub = ensemble.combine_models([(np.array(["t"]), v1), (np.array(["t"]), v2)])
  ids, out = sub.ids, sub.masks
  assert list(ids) == ["t"]
  assert out[0, 0, 0] == 0       # (2/3 + 0) / 2 = 1/3
  assert out[0, 0, 1] == 1       # (1/3 + 1) / 2 = 2/3
  half = ensemble.combine_models([(np.array(["t"]), np.full((1, 101, 101), 0.5, np.float32))]).masks
  assert half.all()              # ties count as salt (>= 0.5)


def test_tiles_predicted_by_some_models_average_over_those():
  one = np.ones((1, 101, 101), np.float32)
  zero = np.zeros((1, 101, 101), np.float32)
  # Model A predicts tiles a and b, model B only b (the pseudo-label "other half" protocol).
  sub = ensemble.combine_models([(np.array(["a", "b"]), np.concatenate([one, one])), (np.array(["b"]), zero)])
  ids, masks = sub.ids, sub.masks
  assert list(ids) == ["a", "b"]
  assert masks[0].all()          # a: only A voted, 1.0
  assert masks[1].all()          # b: (1 + 0) / 2 = 0.5 >= 0.5
  votes = ensemble.Votes()
  votes.add(np.array(["x", "y"]), np.concatenate([one, zero]))
  votes.add(np.array(["y"]), one)
  np.testing.assert_array_equal(votes.count, [1, 2])
  assert votes.mean()[1, 0, 0] == 0.5


def test_missing_predictions_and_snapshots_are_errors(tmp_path):
  with pytest.raises(rundir.WorkdirError, match="run python -m salt_jax.predict"):
    ensemble.prediction_files(tmp_path)
  with pytest.raises(rundir.WorkdirError, match="no max_map snapshots"):
    predict.predict_workdir(tmp_path)
  with pytest.raises(rundir.WorkdirError, match="does not exist"):
    checkpoints.load_snapshot(tmp_path / "fold_0" / "snapshots" / "cycle_0_max_map")


@pytest.mark.slow
def test_tiny_run_goes_through_predict_and_ensemble(tiny_run, tmp_path, capsys):
  config, workdir, summary = tiny_run
  metas = predict.predict_workdir(workdir, save_logits=True)
  assert [(m["fold"], m["cycle"]) for m in metas] == [(0, 0)]
  pred = predict.load_prediction(rundir.RunDir(workdir).prediction_file("max_map", 0, 0))
  # Same threshold rule as training: the re-derived validation mAP equals the snapshot's.
  assert pred["meta"]["val_map"] == pytest.approx(pred["meta"]["snapshot_val_map"], abs=1e-6)
  assert pred["test_masks"].shape == (24, 101, 101) and pred["test_logits"].dtype == np.float16
  z = pred["test_logits"].astype(np.float32) - pred["meta"]["threshold"]
  clear = np.abs(z) > 1e-2  # away from float16 rounding of the stored logits
  np.testing.assert_array_equal(pred["test_masks"][clear], (z > 0)[clear])
  # A second call skips the finished snapshot.
  again = predict.predict_workdir(workdir)
  assert again[0]["seconds"] == metas[0]["seconds"]

  out = tmp_path / "submission.csv"
  png = tmp_path / "grid.png"
  oof_csv = tmp_path / "oof.csv"
  source = DataSource(config.data_dir)
  report_png = tmp_path / "breakdown.png"
  table = ensemble.ensemble([str(workdir)], str(out), source, save_png=str(png), oof_csv=str(oof_csv),
                            report_png=str(report_png))
  oof = submission.read_submission(oof_csv)
  oof_ids, oof_pred = oof.ids, oof.masks
  order = np.argsort(pred["valid_ids"])
  assert sorted(oof_ids) == sorted(pred["valid_ids"])
  np.testing.assert_array_equal(oof_pred[np.argsort(oof_ids)], pred["valid_masks"][order])
  sub = submission.read_submission(out)
  ids, masks = sub.ids, sub.masks
  sample = pd.read_csv(f"{config.data_dir}/sample_submission.csv", dtype=str)["id"]
  assert list(ids) == list(sample)
  lookup = dict(zip(pred["test_ids"], pred["test_masks"]))
  np.testing.assert_array_equal(masks, np.stack([lookup[i] for i in ids]))  # one snapshot: vote = mask
  assert table["OOF mAP"][0] == pytest.approx(pred["meta"]["val_map"], abs=1e-6)
  printed = capsys.readouterr().out
  assert "OOF mAP" in printed
  assert f"out-of-fold ensemble: mAP {table['OOF mAP'][0]:.4f} on {len(oof_ids)} tiles" in printed
  assert png.stat().st_size > 0 and report_png.stat().st_size > 0
  prob = tmp_path / "prob.csv"
  ensemble.ensemble([str(workdir)], str(prob), source, mode="prob", oof=False)
  np.testing.assert_array_equal(submission.read_submission(prob).masks, np.stack([dict(zip(
      pred["test_ids"], z >= 0))[i] for i in ids]))


@pytest.mark.slow
def test_a_truncated_prediction_file_is_one_line_naming_it_in_each_program(tiny_run, tmp_path, capsys):
  """predict's file of a snapshot cut in half (a copy or a disk that stopped): ensemble, segment (its
  threshold) and predict (reading a finished snapshot back) each stop with exit 1 and one line naming the
  file, and write nothing; before, a BadZipFile traceback that did not name it."""
  config, workdir, _ = tiny_run
  copy = tmp_path / "wd"
  shutil.copytree(workdir, copy)
  predict.predict_workdir(copy)
  path = rundir.RunDir(copy).prediction_file("max_map", 0, 0)
  os.truncate(path, path.stat().st_size // 2)
  tiles = DataSource(config.data_dir).train().images[:4]
  section = tmp_path / "section.png"
  cv2.imwrite(str(section), np.block([[tiles[0], tiles[1]], [tiles[2], tiles[3]]]))  # 202 x 202 px
  message = (f"cannot read prediction file {path} (BadZipFile: File is not a zip file); run salt_jax.predict "
             "with --overwrite to write it again")
  for prog, main, define, argv in (
      ("salt_jax.ensemble", ensemble.main, ensemble.define_flags,
       [f"--workdirs={copy}", f"--out={tmp_path / 'sub.csv'}", f"--data_dir={config.data_dir}"]),
      ("salt_jax.segment", segment.main, segment.define_flags,
       [f"--workdirs={copy}", f"--input={section}", f"--out={tmp_path / 'seg'}"]),
      ("salt_jax.predict", predict.main, predict.define_flags, [f"--workdir={copy}"])):
    with pytest.raises(SystemExit) as info:
      cli.run(main, define, prog=prog, argv=argv)
    assert (info.value.code, capsys.readouterr().err) == (1, f"{prog}: {message}\n"), prog
  assert sorted(p.name for p in tmp_path.iterdir()) == ["section.png", "wd"]


def test_predict_tunes_and_applies_the_configured_gate(tiny_run, tmp_path):
  """With gate candidates in the fold's config, predict records the best gate (never below the plain
  threshold's mAP) and writes the masks that gate makes of its logits."""
  config, workdir, _ = tiny_run
  copy = tmp_path / "gated"
  shutil.copytree(workdir, copy)
  run = rundir.RunDir(copy)
  recorded = json.loads(run.config_json(0).read_text())
  plain = predict.predict_workdir(copy, save_logits=True)[0]
  recorded.update(gate_min_areas="20,200", gate_empty_above="0.5,0.9", gate_salt_below="0.5")
  run.config_json(0).write_text(json.dumps(recorded))
  gated = predict.predict_workdir(copy, save_logits=True, overwrite=True)[0]
  assert plain["gate"] == gating.Gate(plain["threshold"]).as_dict()
  assert gated["val_map"] >= plain["val_map"] - 1e-12
  assert gated["gate"]["min_area"] in (0, 20, 200) and gated["gate"]["empty_above"] in (0.5, 0.9, 1.0)
  pred = predict.load_prediction(run.prediction_file("max_map", 0, 0))
  gate = gating.Gate(**pred["meta"]["gate"])
  train = DataSource(config.data_dir).train()
  truth = dict(zip(train.ids, train.masks))
  assert metrics.kaggle_map(pred["valid_masks"], np.stack([truth[i] for i in pred["valid_ids"]])) == (
      pytest.approx(gated["val_map"]))
  assert gate.threshold == gated["threshold"]


def test_save_logits_adds_them_to_predicted_snapshots_and_prob_mode_scores_them(tiny_run, tmp_path):
  """predict --save_logits on snapshots predicted without logits predicts them again (not "already
  predicted"), and ensemble --mode=prob computes its out-of-fold table from the probabilities."""
  config, workdir, _ = tiny_run
  copy = tmp_path / "logits"
  shutil.copytree(workdir, copy)
  path = rundir.RunDir(copy).prediction_file("max_map", 0, 0)
  predict.predict_workdir(copy, overwrite=True)
  assert not predict.has_logits(path)
  predict.predict_workdir(copy, save_logits=True)
  assert predict.has_logits(path)
  pred = predict.load_prediction(path)
  source = DataSource(config.data_dir)
  train = source.train()
  truth = dict(zip(train.ids, train.masks))
  table = ensemble.ensemble([str(copy)], str(tmp_path / "prob.csv"), source, mode="prob")
  prob = 1 / (1 + np.exp(-(pred["valid_logits"].astype(np.float32) - pred["meta"]["threshold"])))
  want = metrics.kaggle_map(prob >= 0.5, np.stack([truth[i] for i in pred["valid_ids"]]))
  assert table["OOF mAP"][0] == pytest.approx(want)


def _fake_prediction(workdir, fold, valid_ids, valid_masks, val_map):
  predict.save_prediction(rundir.RunDir(workdir).prediction_file("max_map", fold, 0),
                          meta={"fold": fold, "cycle": 0, "val_map": val_map, "threshold": 0.0},
                          valid_ids=valid_ids,
                          valid_masks=valid_masks, test_ids=np.array(["t"]),
                          test_masks=np.zeros((1, 101, 101), np.uint8))


def test_oof_table_ensemble_row_covers_models_validated_on_different_folds(tmp_path):
  """Pseudo-label parts validate on different folds: the ensemble row is over the union of their tiles,
  each tile voted by the models that validated it."""
  full, empty = np.ones((101, 101), np.uint8), np.zeros((101, 101), np.uint8)
  truth = {"a": full, "b": empty, "c": full}
  _fake_prediction(tmp_path / "part0", 0, np.array(["a", "b"]), np.stack([full, full]), 0.5)  # a hit, b miss
  _fake_prediction(tmp_path / "part1", 1, np.array(["c"]), np.stack([full]), 1.0)             # c hit
  table = ensemble.oof_table([str(tmp_path / "part0"), str(tmp_path / "part1")], truth).set_index("model")
  assert table.loc["part0", "OOF mAP"] == 0.5 and table.loc["part0", "images"] == 2
  assert table.loc["part1", "OOF mAP"] == 1.0 and table.loc["part1", "fold 1"] == 1.0
  assert table.loc["ensemble", "images"] == 3 and table.loc["ensemble", "snapshots"] == 2
  assert table.loc["ensemble", "OOF mAP"] == pytest.approx(2 / 3)


def test_oof_votes_are_each_folds_cycle_votes(tmp_path):
  """Per fold, the mean of its cycles' validation masks (the Votes of the test tiles), the cycles' mAPs in
  file order; cycles of one fold that validated other tiles are an error naming the file."""
  run = rundir.RunDir(tmp_path)
  rng = np.random.default_rng(0)
  masks = (rng.random((3, 2, 101, 101)) > 0.5).astype(np.uint8)  # (cycle, tile, H, W) of fold 0
  for cycle in range(3):
    predict.save_prediction(run.prediction_file("max_map", 0, cycle),
                            meta={"fold": 0, "cycle": cycle, "val_map": 0.1 * cycle, "threshold": 0.0},
                            valid_ids=np.array(["a", "b"]), valid_masks=masks[cycle], test_ids=np.array(["t"]),
                            test_masks=masks[0, :1])
  _fake_prediction(tmp_path, 1, np.array(["c"]), masks[0, :1], 0.9)
  votes = ensemble.oof_votes(run.prediction_files())
  assert sorted(votes) == [0, 1] and list(votes[0]["ids"]) == ["a", "b"] and list(votes[1]["ids"]) == ["c"]
  np.testing.assert_array_equal(votes[0]["vote"], masks.mean(axis=0))
  assert votes[0]["maps"] == [0.0, 0.1, 0.2] and votes[1]["maps"] == [0.9]
  predict.save_prediction(run.prediction_file("max_map", 0, 3), meta={"fold": 0, "cycle": 3, "val_map": 0.0,
                          "threshold": 0.0}, valid_ids=np.array(["a", "x"]), valid_masks=masks[0],
                          test_ids=np.array(["t"]), test_masks=masks[0, :1])
  with pytest.raises(ValueError, match="fold_0_cycle_3.npz: validation ids differ between cycles of fold 0"):
    ensemble.oof_votes(run.prediction_files())


@pytest.mark.parametrize("content,match", [
    (b"", "cannot parse .*sample_submission.csv"),
    (b"id,rle_mask\n\xff\xfet,\n", "cannot parse .*sample_submission.csv.*utf-8"),
])
def test_ensemble_with_unreadable_sample_submission_names_it_and_writes_nothing(tmp_path, content, match):
  """The sample ids are read before any vote (the workdir here has no predictions at all)."""
  (tmp_path / "data").mkdir()
  sample = tmp_path / "data" / "sample_submission.csv"
  sample.write_bytes(content)
  out = tmp_path / "submission.csv"
  with pytest.raises(DataError, match=match) as err:
    ensemble.ensemble([str(tmp_path / "model")], str(out), DataSource(tmp_path / "data"), oof=False)
  assert str(sample) in str(err.value)
  assert not out.exists() and sample.read_bytes() == content
  assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_confidence_is_the_mean_pixel_margin_around_the_threshold():
  logits = np.zeros((3, 101, 101), np.float32)
  logits[1] = 50.0
  logits[2, :, :50] = -50.0
  logits[2, :, 50:] = 0.5
  got = predict.confidence(logits, threshold=0.5)
  margin = abs(2 / (1 + np.exp(-(-50.5))) - 1)
  np.testing.assert_allclose(got, [abs(2 / (1 + np.exp(0.5)) - 1), 1.0, margin * 50 / 101], rtol=1e-5)
