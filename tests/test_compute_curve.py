"""scripts/compute_curve.py: image-steps, the table and the picture from a real (tiny) run's history."""
import importlib.util
import json
import pathlib

import cv2
import numpy as np
import pandas as pd
import pytest

from salt_jax import cli

REPO = pathlib.Path(__file__).resolve().parents[1]


def _script():
  spec = importlib.util.spec_from_file_location("compute_curve", REPO / "scripts" / "compute_curve.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_curve_of_a_tiny_run(tiny_run, tmp_path):
  """Each epoch costs (train images // batch) x batch image-steps (train_subset 48, batch 8: 48); the table
  holds the run's best and last validation; the PNG is written whole."""
  config, workdir, _ = tiny_run
  mod = _script()
  assert mod.epoch_image_steps(workdir, 0) == 48
  history = [json.loads(line) for line in (workdir / "fold_0" / "history.jsonl").read_text().splitlines()]
  out = tmp_path / "curve.png"
  table = cli.run(mod.main, mod.define_flags, prog="scripts/compute_curve.py",
                  argv=[f"--runs=tiny={workdir},tiny={workdir}", f"--out={out}"])
  assert isinstance(table, pd.DataFrame) and len(table) == 2
  row = table.iloc[0]
  assert row["epochs"] == len(history) == config.warmup_epochs + config.cycle_len
  assert row["image_steps"] == 48 * len(history)
  maps = [r["val_map"] for r in history if "val_map" in r]
  assert row["best_val_map"] == max(maps) and row["last_val_map"] == maps[-1]
  image = cv2.imread(str(out))
  assert image is not None and image.shape[0] > 100 and image.shape[1] > 100
  assert [p.name for p in tmp_path.iterdir()] == ["curve.png"]


def test_the_breakdown_splits_the_vote_s_map_between_the_empty_and_the_salt_tiles(tiny_run, mini_data_dir):
  """--breakdown: the one max_map snapshot's vote on fold 0's validation tiles scores the run's best
  validation mAP; the empty and salt tiles are the fold's validation tiles by their truth, their scores
  average to that mAP and what they give away adds up to 1 - mAP."""
  config, workdir, _ = tiny_run
  mod = _script()
  table = cli.run(mod.main, mod.define_flags, prog="scripts/compute_curve.py",
                  argv=[f"--runs=tiny={workdir}", "--breakdown"])
  row = table.iloc[0]
  split = pd.read_csv(workdir / "folds.csv", dtype={"id": str})
  valid = set(split["id"][split["fold"] == 0])
  masks = {p.stem: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in (mini_data_dir / "train" / "masks").iterdir()
           if p.stem in valid}
  assert row["empty_tiles"] == sum(not m.any() for m in masks.values())
  assert row["empty_tiles"] + row["salt_tiles"] == len(valid)
  assert row["vote_map"] == pytest.approx(row["best_val_map"], abs=1e-9)
  assert (row["empty_score"] * row["empty_tiles"] + row["salt_score"] * row["salt_tiles"]) / len(valid) == (
      pytest.approx(row["vote_map"]))
  assert row["empty_lost"] + row["salt_lost"] == pytest.approx(1 - row["vote_map"])
  small = [m for m in masks.values() if 0 < np.count_nonzero(m) * 10 <= m.size]
  assert row["small_tiles"] == len(small) > 0
  assert 0 <= row["small_missed"] <= row["small_tiles"]
  assert row["small_lost"] == pytest.approx((1 - row["small_score"]) * row["small_tiles"] / len(valid))
  assert row["small_lost"] <= row["salt_lost"] + 1e-12


def test_a_run_without_history_is_refused_in_one_line(tmp_path, capsys):
  mod = _script()
  with pytest.raises(SystemExit) as exit_:
    cli.run(mod.main, mod.define_flags, prog="scripts/compute_curve.py", argv=[f"--runs=x={tmp_path}"])
  assert exit_.value.code == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert err == [f"scripts/compute_curve.py: {tmp_path}/fold_0/history.jsonl not found: no epoch of fold 0 "
                 f"has finished in {tmp_path}"]


def test_saved_histories_draw_and_table_again_without_their_workdirs(tiny_run, tmp_path):
  """--save_csv keeps each run's history; --from_csv gives the same table rows (and a picture) once the
  workdirs are gone, and a run given again in --runs replaces its saved rows instead of doubling them: the
  file saved again is the same bytes (floats read back exactly, not re-rounded)."""
  _, workdir, _ = tiny_run
  mod = _script()
  saved = tmp_path / "curve.csv"
  first = cli.run(mod.main, mod.define_flags, prog="scripts/compute_curve.py",
                  argv=[f"--runs=a={workdir},b={workdir}", f"--save_csv={saved}"])
  again = cli.run(mod.main, mod.define_flags, prog="scripts/compute_curve.py",
                  argv=[f"--from_csv={saved}", f"--out={tmp_path / 'curve.png'}"])
  pd.testing.assert_frame_equal(again, first)
  assert cv2.imread(str(tmp_path / "curve.png")) is not None
  resaved = tmp_path / "again.csv"
  both = cli.run(mod.main, mod.define_flags, prog="scripts/compute_curve.py",
                 argv=[f"--from_csv={saved}", f"--runs=b={workdir}", f"--save_csv={resaved}"])
  assert list(both["recipe"]) == ["a", "b"] and resaved.read_bytes() == saved.read_bytes()
  assert sorted(p.name for p in tmp_path.iterdir()) == ["again.csv", "curve.csv", "curve.png"]


def test_a_csv_that_is_not_a_saved_history_is_refused_in_one_line(tmp_path, capsys):
  mod = _script()
  other = tmp_path / "other.csv"
  other.write_text("id,rle_mask\n0a,1 2\n")
  with pytest.raises(SystemExit) as exit_:
    cli.run(mod.main, mod.define_flags, prog="scripts/compute_curve.py", argv=[f"--from_csv={other}"])
  assert exit_.value.code == 1
  assert capsys.readouterr().err.strip().splitlines() == [
      f"scripts/compute_curve.py: {other} is not a compute_curve.py --save_csv file (no column 'epoch')"]


def test_labels_table_and_draw_only_those_recipes_and_the_csv_keeps_every_run(tiny_run, tmp_path, capsys):
  """--labels=b: the table holds b's row alone, the CSV still holds a's and b's histories; a label no run
  has is refused in one line before anything is written."""
  _, workdir, _ = tiny_run
  mod = _script()
  saved = tmp_path / "curve.csv"
  table = cli.run(mod.main, mod.define_flags, prog="scripts/compute_curve.py",
                  argv=[f"--runs=a={workdir},b={workdir}", "--labels=b", f"--save_csv={saved}",
                        f"--out={tmp_path / 'curve.png'}"])
  assert list(table["recipe"]) == ["b"]
  assert set(pd.read_csv(saved)["label"]) == {"a", "b"}
  before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
  capsys.readouterr()
  with pytest.raises(SystemExit) as exit_:
    cli.run(mod.main, mod.define_flags, prog="scripts/compute_curve.py",
            argv=[f"--from_csv={saved}", "--labels=b,c", f"--save_csv={saved}", f"--out={tmp_path / 'curve.png'}"])
  assert exit_.value.code == 2
  assert capsys.readouterr().err.strip().splitlines() == ["scripts/compute_curve.py: --labels: no run is labelled 'c'"]
  assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_saved_history_saved_again_is_the_same_bytes(tmp_path):
  """Floats are read back exactly: 0.9731941710014155 (a real loss of docs/compute_curve.csv) is re-rounded
  to ...156 by pandas' default parser, which would change every saved history each time one run is added."""
  mod = _script()
  text = ("label,run,epoch,image_steps,loss,seg_loss,val_map,val_loss\n"
          "4x,curve_4x,0,3232,0.9731941710014155,bce_dice,,\n"
          "4x,curve_4x,1,6464,0.46232045759068857,lovasz,0.8211,0.8447\n")
  saved, again = tmp_path / "curve.csv", tmp_path / "again.csv"
  saved.write_text(text)
  mod.save_histories(mod.saved_histories(saved), again)
  assert again.read_text() == text
