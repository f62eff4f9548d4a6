"""Fold-parallel training (config.folds): folds trained together in one program get what each would get
alone -- in the compiled step (vmap and loop), in the training program, after a resume and on 2 devices."""
import functools
import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from salt_jax import configlib, models, parallel
from salt_jax.training import steps, train
from salt_jax.workdir import checkpoints, rundir
import optim
from conftest import TWO_CPU_DEVICES

REPO = pathlib.Path(__file__).resolve().parents[1]
WEIGHTS = configlib.loss_weights(configlib.section(configlib.base_config(), "loss"))  # the faithful ones (SPEC 4)


def _config(**overrides):
  config = configlib.base_config()
  config.update(dict(num_folds=10, fold=3), **overrides)
  return config


@pytest.mark.parametrize("spec,folds", [("", [3]), ("0,2,5", [0, 2, 5]), (" 7 ", [7]),
                                        ("all", list(range(10)))])
def test_fold_list(spec, folds):
  assert configlib.fold_list(_config(folds=spec)) == folds


@pytest.mark.parametrize("spec,message", [
    ("0;1", "comma-separated fold numbers, 'all' or '', got '0;1'"),
    ("1,10", "fold 10 is outside 0..9"),
    ("2,1,2", "lists fold 2 more than once"),
    ("-1", "fold -1 is outside 0..9")])
def test_bad_fold_lists_are_refused_by_validate(spec, message):
  with pytest.raises(configlib.ConfigError, match=message):
    configlib.validate(_config(folds=spec))


def test_bad_fold_map_is_refused():
  message = "config.fold_map must be one of auto, vmap, loop, got 'pmap'"
  with pytest.raises(configlib.ConfigError, match=message):
    configlib.validate(_config(fold_map="pmap"))


def test_for_fold_sets_only_the_fold():
  config = _config(folds="1,4")
  one = configlib.for_fold(config, 4)
  assert one["fold"] == 4 and config.fold == 3
  assert set(one) == set(config.keys())
  assert {k: v for k, v in one.items() if k != "fold"} == {k: v for k, v in config.items() if k != "fold"}


@pytest.mark.parametrize("folds,devices,fold_map,groups", [
    (8, 8, "vmap", 8), (2, 8, "vmap", 2), (10, 8, "vmap", 2), (3, 2, "vmap", 1), (10, 1, "vmap", 1),
    (8, 8, "loop", 1)])
def test_fold_axis_size_spreads_folds_over_devices(folds, devices, fold_map, groups):
  assert parallel.fold_axis_size(folds, devices, fold_map) == groups


@pytest.mark.accelerator
def test_fold_map_auto_is_loop_on_cpu_and_one_fold_never_batches():
  assert parallel.resolve_fold_map("auto", 2) == ("loop" if jax.default_backend() == "cpu" else "vmap")
  assert parallel.resolve_fold_map("vmap", 1) == "loop"
  assert parallel.resolve_fold_map("vmap", 3) == "vmap"


def test_mesh_has_fold_and_data_axes():
  mesh = parallel.make_mesh()
  assert mesh.axis_names == ("folds", "data") and dict(mesh.shape) == {"folds": 1, "data": jax.device_count()}
  with pytest.raises(ValueError, match="cannot form"):
    parallel.make_mesh(jax.device_count() + 1)


def test_a_batch_the_data_devices_cannot_split_is_refused():
  """Checked on a mesh of the shape a 4-device host makes (its devices are not needed for the check)."""
  mesh = jax.sharding.AbstractMesh((1, 4), ("folds", "data"))
  parallel.check_batch_size(8, mesh)
  with pytest.raises(ValueError, match="batch size 6 is not divisible by the 4 devices of each fold; use a "
                     "multiple of 4"):
    parallel.check_batch_size(6, mesh)


def _tiles(n, seed):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, 101, 101), dtype=np.uint8)
  yy, xx = np.mgrid[:101, :101]
  cy, cx, r = rng.uniform(10, 90, (3, n, 1, 1))
  masks = (((yy - cy) ** 2 + (xx - cx) ** 2) < (r * 0.5) ** 2).astype(np.uint8)
  masks[::4] = 0
  return {"image": jnp.asarray(images), "mask": jnp.asarray(masks)}


class _SmallNet(nn.Module):
  """A conv-BatchNorm-conv net with the U-Nets' three outputs: small enough to compile in seconds, with
  what fold batching changes (convolutions with per-fold kernels, per-fold BatchNorm statistics)."""

  @nn.compact
  def __call__(self, x, train: bool):
    h = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Conv(8, (3, 3))(x)))
    h = nn.Dropout(0.1, deterministic=not train)(h)
    logits = nn.Conv(2, (3, 3))(h)
    return nn.Dense(2)(h.mean(axis=(1, 2))), logits[..., :1], logits[..., 1:]


_KWARGS = dict(seg_loss="lovasz", loss_weights=WEIGHTS, canvas=128)
_alone_steps = jax.jit(functools.partial(steps.train_steps, **_KWARGS))


@pytest.mark.accelerator
@pytest.mark.parametrize("fold_map", ["vmap", "loop"])
def test_fold_steps_equal_each_fold_alone(fold_map, highest_precision):
  """Two folds with different initial states and samples, one step per call as the training loop runs
  them; fold 1 idles in the second call (a fold with fewer steps per epoch): each ends where train_steps
  alone on its own rows ends."""
  tx = optim.constant_sgd(0.01)
  create = jax.jit(functools.partial(steps.create_train_state, _SmallNet(), tx, image_size=128))
  init = [create(jax.random.key(k)) for k in (0, 1)]
  data = _tiles(24, seed=0)
  rows = np.random.default_rng(1).integers(0, 24, (2, 2, 4)).astype(np.int32)
  active = np.array([[True, True], [True, False]])
  rng = jax.random.key(7)
  together = jax.tree.map(lambda *x: jnp.stack(x), *init)
  fn = jax.jit(functools.partial(steps.fold_train_steps, fold_map=fold_map, **_KWARGS))
  losses = []
  for s in range(2):
    together, metrics = fn(together, data, rows[:, s:s + 1], rng, active[:, s:s + 1])
    losses.append(np.asarray(metrics["loss"][:, 0]))
  for f, n in ((0, 2), (1, 1)):
    alone = init[f]
    for s in range(n):
      alone, alone_metrics = _alone_steps(alone, data, rows[f, s:s + 1], rng)
      np.testing.assert_allclose(losses[s][f], np.asarray(alone_metrics["loss"][0]), rtol=1e-5)
    assert int(together.step[f]) == int(alone.step) == n
    mine = jax.tree.map(lambda x: x[f], together.params)
    for a, b in zip(jax.tree.leaves(alone.params), jax.tree.leaves(mine)):
      np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=2e-5, rtol=0)
    for a, b in zip(jax.tree.leaves(alone.batch_stats),
                    jax.tree.leaves(jax.tree.map(lambda x: x[f], together.batch_stats))):
      np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=2e-5, rtol=1e-5)


def _final_state(config, workdir, fold):
  run = rundir.RunDir(workdir)
  latest = checkpoints.LatestCheckpoint(run.checkpoints_dir(fold))
  abstract = jax.eval_shape(functools.partial(steps.create_train_state, models.build(**configlib.section(config, "model")),
                                              optim.constant_sgd(config.lr), image_size=config.input_size),
                            jax.random.key(0))
  one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])  # also for states written on 2 devices
  abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=one_device), abstract)
  epoch, state, loop = latest.restore_latest(abstract)
  latest.close()
  return epoch, state, loop


def _history(workdir, fold):
  return [json.loads(l) for l in rundir.RunDir(workdir).history_jsonl(fold).read_text().splitlines()]


def _assert_same_fold(config, workdir_a, workdir_b, fold, atol=1e-5):
  """Same epochs, losses, validation metrics, snapshots and final state in both workdirs' fold."""
  ha, hb = _history(workdir_a, fold), _history(workdir_b, fold)
  assert [r["epoch"] for r in ha] == [r["epoch"] for r in hb]
  for key in ("loss", "lovasz", "val_loss", "val_map", "lr"):
    np.testing.assert_allclose([r.get(key, np.nan) for r in hb], [r.get(key, np.nan) for r in ha], rtol=1e-4,
                               atol=1e-6, err_msg=key)
  ea, sa, la = _final_state(config, workdir_a, fold)
  eb, sb, lb = _final_state(config, workdir_b, fold)
  assert ea == eb and int(sa.step) == int(sb.step)
  assert la["bests"].keys() == lb["bests"].keys()
  for cycle, bests in la["bests"].items():
    assert lb["bests"][cycle] == pytest.approx(bests, rel=1e-4)
  for a, b in zip(jax.tree.leaves(sa.params), jax.tree.leaves(sb.params)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=atol, rtol=0)
  ra, rb = rundir.RunDir(workdir_a), rundir.RunDir(workdir_b)
  cycles = lambda r: [(f, c) for f, c, _ in r.snapshots() if f == fold]
  assert cycles(ra) == cycles(rb)
  for kind in rundir.SNAPSHOT_KINDS:
    # one device, also for 2-device saves
    load = functools.partial(checkpoints.load_model_snapshot, model_section=configlib.section(config, "model"),
                             input_size=config.input_size, sharding=parallel.replicated(parallel.make_mesh()))
    ma, mb = load(ra.snapshot_dir(fold, 0, kind))[1], load(rb.snapshot_dir(fold, 0, kind))[1]
    assert ma["epoch"] == mb["epoch"] and ma["fold"] == mb["fold"] == fold


@pytest.fixture(scope="module")
def alone_fold_1(tiny_config, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("alone_fold_1") / "model_tiny"
  train.train_and_evaluate(tiny_config(fold=1), str(workdir))
  return workdir


@pytest.fixture(scope="module")
def together(tiny_config, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("together") / "model_tiny"
  summary = train.train_and_evaluate(tiny_config(folds="0,1", keep_checkpoints=3), str(workdir))
  return workdir, summary


@pytest.mark.slow
def test_two_folds_together_equal_each_fold_alone(tiny_config, tiny_run, alone_fold_1, together):
  workdir, summary = together
  config = tiny_config()
  assert sorted(summary) == [0, 1]
  assert [r["epoch"] for r in summary[1]["history"]] == [0, 1, 2]
  _assert_same_fold(config, tiny_run[1], workdir, 0)
  _assert_same_fold(config, alone_fold_1, workdir, 1)
  run = rundir.RunDir(workdir)
  assert run.folds() == [0, 1]
  for fold in (0, 1):  # the same records as a single-fold run, each under its fold_<k>/
    recorded = run.fold_config(fold)
    assert recorded.fold == fold and recorded.folds == "0,1"
    assert list(run.tb_dir(fold).iterdir())
    first = _history(workdir, fold)[0]
    assert first["images_per_s"] > 0 and set(first["startup"]) == {"data", "init", "restore", "compile",
                                                                   "first_step"}


@pytest.mark.slow
def test_folds_resume_together_after_a_kill_between_their_saves(tiny_config, together, tmp_path):
  """A kill -9 after fold 0 saved epoch 1 but before fold 1 did: fold 0 keeps its epoch 1 and idles while
  fold 1 redoes it, both train epoch 2, and both end as the uninterrupted run."""
  config = tiny_config(folds="0,1", keep_checkpoints=3)
  workdir = tmp_path / "model_tiny"
  shutil.copytree(together[0], workdir)
  run = rundir.RunDir(workdir)
  for fold, epochs in ((0, ["2"]), (1, ["2", "1"])):
    for epoch in epochs:
      shutil.rmtree(run.checkpoints_dir(fold) / epoch)
    lines = run.history_jsonl(fold).read_text().splitlines()
    run.history_jsonl(fold).write_text("\n".join(lines[:3 - len(epochs)]) + "\n")
  summary = train.train_and_evaluate(config, str(workdir))
  for fold in (0, 1):
    assert [r["epoch"] for r in summary[fold]["history"]] == [0, 1, 2]
    trained_here = [r["epoch"] for r in summary[fold]["history"] if "startup" in r]
    assert trained_here == [0, 2 if fold == 0 else 1]  # the killed run's first, then this process's first
    assert sorted(int(p.name) for p in run.checkpoints_dir(fold).iterdir() if p.name.isdigit()) == [0, 1, 2]
    _assert_same_fold(config, together[0], workdir, fold)


@pytest.mark.slow
def test_a_fold_trained_alone_keeps_its_progress_when_trained_with_a_new_fold(tiny_config, tiny_run,
                                                                              alone_fold_1, tmp_path):
  """Fold 0 trained alone up to epoch 1, then --config.folds=0,1 (fold 1 has no state): fold 0 keeps its
  two epochs and idles while fold 1 catches up (no reset, no deleted checkpoint), then both train epoch
  2; each ends as when trained alone."""
  workdir = tmp_path / "model_tiny"
  shutil.copytree(tiny_run[1], workdir)
  run = rundir.RunDir(workdir)
  shutil.rmtree(run.checkpoints_dir(0) / "2")
  lines = run.history_jsonl(0).read_text().splitlines()
  run.history_jsonl(0).write_text("\n".join(lines[:2]) + "\n")
  kept = {p: p.stat().st_mtime_ns for p in (run.checkpoints_dir(0) / "1").rglob("*") if p.is_file()}
  summary = train.train_and_evaluate(tiny_config(folds="0,1"), str(workdir))
  assert [r["epoch"] for r in summary[0]["history"]] == [0, 1, 2]
  assert [r["epoch"] for r in summary[0]["history"] if "startup" in r] == [0, 2]  # epochs 0, 1 not retrained
  assert {p: p.stat().st_mtime_ns for p in kept} == kept
  _assert_same_fold(tiny_config(), tiny_run[1], workdir, 0)
  _assert_same_fold(tiny_config(), alone_fold_1, workdir, 1)


@pytest.mark.slow
def test_finished_fold_is_skipped_and_the_others_train(tiny_config, tiny_run, alone_fold_1, tmp_path):
  workdir = tmp_path / "model_tiny"
  shutil.copytree(tiny_run[1], workdir)  # fold 0 finished
  mtimes = {p: p.stat().st_mtime_ns for p in rundir.RunDir(workdir).fold_dir(0).rglob("*") if p.is_file()}
  summary = train.train_and_evaluate(tiny_config(folds="0,1"), str(workdir))
  assert [r["epoch"] for r in summary[0]["history"]] == [0, 1, 2]
  assert {p: p.stat().st_mtime_ns for p in mtimes if p.name != "config.json"} == {
      p: t for p, t in mtimes.items() if p.name != "config.json"}
  _assert_same_fold(tiny_config(), alone_fold_1, workdir, 1)


@pytest.mark.slow
def test_two_folds_on_two_devices_equal_each_fold_alone(tiny_config, tiny_run, alone_fold_1, mini_data_dir,
                                                        tmp_path):
  """The command line with --config.folds=0,1 on 2 simulated CPU devices, vmapped: one fold per device
  (mesh folds=2 x data=1). Measured against the one-device runs: losses within 2e-6 relative, fold 1's
  final parameters within 3e-11 and fold 0's within 1.8e-4 (float noise of the other program that the
  Lovasz epochs' sorts amplify over 12 SGD steps; a fold trained on the wrong rows is off by > 1e-2)."""
  config = tiny_config()
  workdir = tmp_path / "model_tiny"
  keys = ("batch_size", "train_subset", "valid_subset", "eval_batch_size", "num_folds", "warmup_epochs",
          "cycle_num", "cycle_len", "eval_start", "eval_every")
  cmd = [sys.executable, "-m", "salt_jax.train", "--config=configs/tiny.py", f"--workdir={workdir}",
         f"--config.data_dir={mini_data_dir}", "--config.folds=0,1", "--config.fold_map=vmap",
         "--config.compilation_cache_dir="] + [f"--config.{k}={config[k]}" for k in keys]
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=TWO_CPU_DEVICES)
  done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "2 fold(s) on 2 devices (mesh {'folds': 2, 'data': 1}, fold_map vmap)" in done.stderr
  _assert_same_fold(config, tiny_run[1], workdir, 0, atol=5e-4)
  _assert_same_fold(config, alone_fold_1, workdir, 1, atol=5e-4)
