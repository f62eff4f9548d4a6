"""End-to-end training on a few real images: snapshots, history, resume after kill -9, clear errors."""
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest

from salt_jax import configlib, models, weights
from salt_jax.training import epochs, train
from salt_jax.workdir import checkpoints, rundir
import optim

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def finished_run(tiny_run):
  return tiny_run


@pytest.mark.slow
def test_run_writes_history_snapshots_and_config(finished_run):
  config, workdir, summary = finished_run
  fdir = workdir / "fold_0"
  history = [json.loads(l) for l in (fdir / "history.jsonl").read_text().splitlines()]
  assert [r["epoch"] for r in history] == [0, 1, 2]
  assert [r["seg_loss"] for r in history] == ["bce_dice", "lovasz", "lovasz"]
  assert history[0]["lr"] == pytest.approx(0.01)
  assert history[2]["lr"] == pytest.approx(config.eta_min)
  assert "val_map" not in history[0] and "val_map" in history[1] and "val_map" in history[2]
  assert all(np.isfinite(r["loss"]) and r["images_per_s"] > 0 for r in history)
  assert all(r["epoch_seconds"] >= r["seconds"] > 0 for r in history)
  startup = history[0]["startup"]  # the first epoch a process trains records its start-up phases
  assert set(startup) == {"data", "init", "restore", "compile", "first_step"}
  assert startup["first_step"] >= startup["compile"] > 0 and "startup" not in history[1]
  assert json.loads((fdir / "config.json").read_text())["model"] == "model_tiny"
  assert json.loads((workdir / "run.json").read_text())["model"] == "model_tiny"
  assert list((fdir / "tb").iterdir()), "no TensorBoard event file"
  # The max_map snapshot holds the best-mAP evaluation of the cycle, with its threshold.
  best = max((r for r in history if "val_map" in r), key=lambda r: (r["val_map"], -r["epoch"]))
  run = rundir.RunDir(workdir)
  meta = checkpoints.load_snapshot(run.snapshot_dir(0, 0, "max_map"))[1]
  assert meta["epoch"] == best["epoch"] and meta["val_map"] == pytest.approx(best["val_map"])
  assert -0.5 <= meta["val_threshold"] < 0.5
  assert [(f, c) for f, c, _ in run.snapshots()] == [(0, 0)]
  assert run.snapshot_dir(0, 0, "min_loss").is_dir()


@pytest.mark.slow
def test_rerun_of_a_finished_fold_does_no_work(finished_run):
  config, workdir, first = finished_run
  fdir = workdir / "fold_0"
  files = sorted(p for p in fdir.rglob("*") if p.is_file() and p.parent.name != "tb")
  stamps = {p: p.stat().st_mtime_ns for p in files if "snapshots" in p.parts or "checkpoints" in p.parts}
  summary = train.train_and_evaluate(config, str(workdir))[config.fold]
  assert [r["epoch"] for r in summary["history"]] == [0, 1, 2]
  assert summary["history"] == first["history"]  # the same records (timings included): nothing retrained
  assert stamps and {p: p.stat().st_mtime_ns for p in stamps} == stamps  # no snapshot or state rewritten


def test_epoch_chunks_cover_every_step_once():
  assert epochs.chunks(202, 0) == [(0, 202)]
  assert epochs.chunks(202, 100) == [(0, 100), (100, 100), (200, 2)]
  rows = epochs.epoch_rows(ml_collections.ConfigDict(dict(seed=0, batch_size=4)), 0.5, 1, 3, n_real=10,
                           n_pseudo=0, steps_per_epoch=2)
  assert rows.shape == (2, 4) and rows.dtype == np.int32 and len(set(rows.ravel())) == 8
  np.testing.assert_array_equal(rows.ravel(), np.random.default_rng([0, 1, 3]).permutation(10)[:8])


def test_workdir_of_another_model_is_refused(tmp_path, tiny_config):
  run = rundir.RunDir(tmp_path)
  run.record_run(tiny_config(model="model_50A"))
  with pytest.raises(rundir.WorkdirError, match="holds checkpoints of model 'model_50A'"):
    run.check_run(tiny_config(model="model_34"))


def test_bad_fold_is_refused(tmp_path, tiny_config):
  with pytest.raises(ValueError, match="config.fold=4 is outside 0..3"):
    train.train_and_evaluate(tiny_config(fold=4), str(tmp_path))


@pytest.mark.slow
def test_non_finite_loss_stops_with_the_step(tmp_path, tiny_config):
  config = tiny_config(lr=1e12, warmup_epochs=2)
  with pytest.raises(FloatingPointError, match=r"non-finite training loss .* at step \d+ \(fold 0, epoch"):
    train.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / "fold_0" / "snapshots").exists()


def _final_params(workdir, config):
  ckpt = checkpoints.LatestCheckpoint(pathlib.Path(workdir) / "fold_0" / "checkpoints")
  epoch = ckpt.latest_epoch()
  assert epoch is not None
  model = models.build(**configlib.section(config, "model"))
  from salt_jax.training import steps
  state = steps.create_train_state(model, optim.constant_sgd(config.lr), jax.random.key(0),
                                   image_size=config.input_size)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), jax.device_put(state))
  restored, _ = ckpt.restore(epoch, abstract)
  ckpt.close()
  return epoch, restored.params


@pytest.mark.slow
def test_kill_9_then_resume_matches_uninterrupted_run(finished_run, tmp_path):
  """A run killed with SIGKILL after its first epoch and started again ends with identical weights."""
  config, ref_workdir, ref_summary = finished_run
  workdir = tmp_path / "killed"
  cmd = [sys.executable, "-m", "salt_jax.train", "--config=configs/tiny.py", f"--workdir={workdir}",
         f"--config.data_dir={config.data_dir}"] + [f"--config.{k}={config[k]}" for k in (
             "batch_size", "train_subset", "valid_subset", "eval_batch_size", "num_folds", "warmup_epochs",
             "cycle_num", "cycle_len", "eval_start", "eval_every")]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  ckpt_dir = workdir / "fold_0" / "checkpoints"
  deadline = time.time() + 600
  history_path = workdir / "fold_0" / "history.jsonl"
  while (not ((ckpt_dir / "0").is_dir() and history_path.exists()) and proc.poll() is None
         and time.time() < deadline):
    time.sleep(0.2)
  assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  before = [json.loads(l) for l in history_path.read_text().splitlines()]
  done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-3000:]
  resumed_after = int(re.search(r"resuming fold 0 after epoch (\d+)", done.stderr).group(1))
  epoch_a, params_a = _final_params(ref_workdir, config)
  epoch_b, params_b = _final_params(workdir, config)
  assert epoch_a == epoch_b == 2
  for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  history = [json.loads(l) for l in (workdir / "fold_0" / "history.jsonl").read_text().splitlines()]
  ref = ref_summary["history"]
  assert [r["epoch"] for r in history] == [0, 1, 2]
  for r, s in zip(history, ref):
    assert r["loss"] == s["loss"] and r.get("val_map") == s.get("val_map")
  # Epochs up to the restored one keep the killed process's records (its timings); the resumed process
  # starts at the next epoch, which records its start-up. A run that retrained would rewrite them all.
  kept = [r for r in before if r["epoch"] <= resumed_after]
  assert [r["epoch"] for r in kept] == list(range(resumed_after + 1))
  assert history[:resumed_after + 1] == kept
  assert [r["epoch"] for r in history if "startup" in r] == [0, resumed_after + 1]


def test_init_from_a_snapshot_fine_tunes_its_weights(tiny_run, tiny_config, tmp_path):
  """config.init_from may name a salt_jax snapshot folder: training starts from exactly its weights (the
  EMA too); a snapshot of another model, or a folder that is no snapshot, is one ConfigError line."""
  config, workdir, _ = tiny_run
  snap = rundir.RunDir(workdir).snapshot_dir(0, 0, "max_map")
  s = configlib.sections(config)
  saved, _ = checkpoints.load_model_snapshot(snap, s.model, s.data.input_size)
  loaded = weights.load(configlib.sections(tiny_config(init_from=str(snap))))
  jax.tree.map(np.testing.assert_array_equal, loaded["init_from"], saved)
  model = models.build(**configlib.section(config, "model"))
  state, _ = train._initial_state(configlib.sections(tiny_config(init_from=str(snap), ema_decay=0.9)), model,
                                  train.parallel.make_mesh(), loaded)
  jax.tree.map(np.testing.assert_array_equal, state.params, saved["params"])
  jax.tree.map(np.testing.assert_array_equal, state.ema["params"], saved["params"])
  with pytest.raises(configlib.ConfigError, match=f"config.init_from: {snap} is a snapshot of model_tiny, "
                                                  "not of model_tiny_s2"):
    weights.load(configlib.sections(tiny_config(init_from=str(snap), model="model_tiny_s2")))
  with pytest.raises(configlib.ConfigError, match="is neither a weight file nor a salt_jax snapshot folder"):
    configlib.validate(tiny_config(init_from=str(tmp_path)))
