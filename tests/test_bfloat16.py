"""bfloat16 end to end: training and prediction run with config.dtype="bfloat16" (parameters float32)."""
import pathlib

import jax
import numpy as np
import pandas as pd
import pytest

from fake_kaggle import make_learnable_kaggle
from salt_jax import configlib, parallel
from salt_jax.inference import predict
from salt_jax.training import train
from salt_jax.workdir import checkpoints, rundir

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.accelerator
def test_bfloat16_train_and_predict_smoke(tmp_path):
  config = configlib.load_config_file(REPO / "configs" / "tiny.py")
  config.data_dir = str(make_learnable_kaggle(tmp_path / "data"))
  config.update(dict(dtype="bfloat16", batch_size=8, train_subset=32, valid_subset=0, eval_batch_size=8,
                     num_folds=4, cache_dir="", warmup_epochs=1, cycle_num=1, cycle_len=1, eval_start=1,
                     eval_every=1))
  workdir = tmp_path / "bf16"
  history = train.train_and_evaluate(config, str(workdir))[config.fold]["history"]
  assert [(r["epoch"], r["seg_loss"]) for r in history] == [(0, "bce_dice"), (1, "lovasz")]
  terms = ("loss", "final_loss", "class_loss", "no_empty_loss")
  assert all(np.isfinite(r[k]) for r in history for k in terms)
  assert np.isfinite(history[1]["val_loss"]) and 0 <= history[1]["val_map"] <= 1
  run = rundir.RunDir(workdir)
  variables, meta = checkpoints.load_model_snapshot(run.snapshot_dir(0, 0, "max_map"),
                                                    configlib.section(config, "model"), config.input_size,
                                                    parallel.replicated(parallel.make_mesh()))
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {np.dtype("float32")}
  assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(variables))

  metas = predict.predict_workdir(workdir, save_logits=True)
  assert [(m["fold"], m["cycle"]) for m in metas] == [(0, 0)]
  pred = predict.load_prediction(run.prediction_file("max_map", 0, 0))
  sample = pd.read_csv(pathlib.Path(config.data_dir) / "sample_submission.csv", dtype=str)["id"]
  assert sorted(pred["test_ids"]) == sorted(sample)
  assert pred["test_masks"].shape == (24, 101, 101) and pred["test_logits"].shape == (24, 101, 101)
  assert np.isfinite(pred["test_logits"].astype(np.float32)).all()
  assert pred["valid_masks"].shape == (len(pred["valid_ids"]), 101, 101) == (24, 101, 101)
  assert pred["meta"]["val_map"] == pytest.approx(meta["val_map"], abs=1e-6)
