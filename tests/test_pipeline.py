"""The two-stage pipeline on the mini data: it finishes, and a re-run skips every finished step."""
import json

import ml_collections
import pandas as pd
import pytest

from salt_jax import ensemble, pipeline, predict, train
from salt_jax.data import rle

TINY = dict(batch_size=8, train_subset=48, eval_batch_size=8, num_folds=4, warmup_epochs=1, cycle_num=1,
            cycle_len=2, eval_start=1, eval_every=1, cache_dir="")


def tiny_pipeline_config(data_dir):
  c = ml_collections.ConfigDict()
  c.data_dir = str(data_dir)
  c.train_overrides = ml_collections.ConfigDict(TINY)
  c.stage1 = ml_collections.ConfigDict(dict(
      models=[dict(name="tiny", config="configs/cpu_small.py", overrides=dict(seed=0))], folds=[0]))
  c.stage2 = ml_collections.ConfigDict(dict(
      models=[dict(name="tiny", config="configs/cpu_small.py", overrides=dict(seed=1))], part_folds=[0, 1],
      pseudo_prob=0.5, pseudo_seed=0, predict_other_half=True))
  return c


@pytest.fixture(scope="module")
def finished(mini_data_dir, tmp_path_factory):
  outdir = tmp_path_factory.mktemp("pipeline")
  table = pipeline.run_pipeline(tiny_pipeline_config(mini_data_dir), str(outdir))
  return outdir, table


def test_pipeline_writes_final_submission_and_summary(finished, mini_data_dir):
  outdir, table = finished
  sub = pd.read_csv(outdir / "submission.csv", dtype=str, keep_default_na=False)
  sample = pd.read_csv(mini_data_dir / "sample_submission.csv", dtype=str, keep_default_na=False)
  assert list(sub["id"]) == list(sample["id"])
  assert rle.rle_decode_many(list(sub["rle_mask"]), (101, 101)).shape == (len(sample), 101, 101)
  assert set(table["stage"]) == {"stage1", "stage2"}
  assert table["OOF mAP"].between(0, 1).all()
  assert (outdir / "summary.csv").exists() and (outdir / "pseudo_split.csv").exists()
  # stage 2 part k trained on test half k and predicted only the other half
  half = pd.read_csv(outdir / "pseudo_split.csv", dtype={"id": str}).set_index("id")["half"]
  for part in (0, 1):
    pred = predict.load_prediction(outdir / "stage2" / f"tiny_pseudo_part{part}" / "predictions" / "max_map"
                                   / f"fold_{part}_cycle_0.npz")
    assert set(half.loc[pred["test_ids"]]) == {1 - part}
    config = json.loads((outdir / "stage2" / f"tiny_pseudo_part{part}" / f"fold_{part}" / "config.json")
                        .read_text())
    assert config["pseudo_split"] == part and config["pseudo_csv"].endswith("ensemble-vertical-empty-smooth.csv")


def test_pipeline_rerun_skips_finished_steps(finished, mini_data_dir, monkeypatch):
  outdir, table = finished

  def forbidden(*args, **kwargs):
    raise AssertionError("a finished step ran again")

  for module, name in ((train, "train_and_evaluate"), (predict, "predict_workdir"), (ensemble, "ensemble")):
    monkeypatch.setattr(module, name, forbidden)
  again = pipeline.run_pipeline(tiny_pipeline_config(mini_data_dir), str(outdir))
  pd.testing.assert_frame_equal(again, table)


def test_pipeline_reruns_only_the_step_whose_marker_is_gone(finished, mini_data_dir, monkeypatch):
  outdir, _ = finished
  (outdir / "done" / "stage2__ensemble.json").unlink()
  calls = []
  real_ensemble = ensemble.ensemble

  def counting(*args, **kwargs):
    calls.append(args[0])
    return real_ensemble(*args, **kwargs)

  monkeypatch.setattr(train, "train_and_evaluate", lambda *a, **k: pytest.fail("training ran again"))
  monkeypatch.setattr(ensemble, "ensemble", counting)
  pipeline.run_pipeline(tiny_pipeline_config(mini_data_dir), str(outdir))
  assert len(calls) == 1 and all("stage2" in w for w in calls[0])
  assert (outdir / "done" / "stage2__ensemble.json").exists()
