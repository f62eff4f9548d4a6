"""The jitted train step on real tiles: it learns, it can overfit one batch, and data-parallel runs (two
devices, two processes) compute the same step as one device."""
import os
import pathlib
import socket
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from salt_jax import configlib, models
from salt_jax.data import augment, kaggle
from salt_jax.inference import tta
from salt_jax.training import steps
import optim
from conftest import FAST_COMPILE, TWO_CPU_DEVICES

WORKER = pathlib.Path(__file__).with_name("dp_worker.py")
WEIGHTS = configlib.loss_weights(configlib.section(configlib.base_config(), "loss"))  # the faithful ones (SPEC 4)


@pytest.fixture(scope="module")
def real_tiles(mini_data_dir):
  train = kaggle.load_train(str(mini_data_dir))
  salty = np.flatnonzero(train.masks.reshape(len(train.masks), -1).max(1) > 0)
  order = np.concatenate([salty, np.setdiff1d(np.arange(len(train.ids)), salty)])  # salt first
  return train.images[order], train.masks[order]


def _state_and_step(seg_loss, lr):
  model = models.get_model("model_tiny")
  state = steps.create_train_state(model, optim.constant_sgd(lr), jax.random.key(0), image_size=128)
  fn = jax.jit(lambda s, b, k: steps.train_step(s, b, k, seg_loss=seg_loss, loss_weights=WEIGHTS, canvas=128))
  return state, fn


def test_a_few_steps_on_real_tiles_lower_the_loss(real_tiles):
  images, masks = real_tiles
  state, step = _state_and_step("bce_dice", 0.01)
  batches = [{"image": jnp.asarray(images[i:i + 16]), "mask": jnp.asarray(masks[i:i + 16])} for i in (0, 16, 32)]
  epoch_losses = []
  for _ in range(3):
    losses = []
    for batch in batches:
      state, metrics = step(state, batch, jax.random.key(1))
      losses.append(float(metrics["loss"]))
    epoch_losses.append(np.mean(losses))
  assert epoch_losses[2] < epoch_losses[0], epoch_losses


@pytest.mark.parametrize("canvas,ema_decay", [(112, 0.0), (104, 0.9)])
def test_steps_on_smaller_canvases_with_an_average(real_tiles, canvas, ema_decay):
  """A 112 or 104 px canvas trains (finite loss, the blend loss) and validates on the 101 px crop; with
  ema_decay the average moves towards the weights: after the first step (d = min(0.9, 1/10)) it is
  0.1 * init + 0.9 * new, and what validation uses."""
  images, masks = real_tiles
  model = models.get_model("model_tiny")
  state = steps.create_train_state(model, optim.constant_sgd(0.01), jax.random.key(0), image_size=canvas,
                                   ema_decay=ema_decay)
  init = state.params
  step = jax.jit(lambda s, b, k: steps.train_step(s, b, k, seg_loss="blend", loss_weights=WEIGHTS,
                                                  canvas=canvas))
  batch = {"image": jnp.asarray(images[:8]), "mask": jnp.asarray(masks[:8])}
  state, metrics = step(state, batch, jax.random.key(1))
  assert np.isfinite(float(metrics["loss"])) and float(metrics["lr"]) == pytest.approx(0.01)
  logits = tta.tta_logits(model.apply, steps.eval_variables(state), jnp.asarray(images[:2]), canvas)
  assert logits.shape == (2, 101, 101)
  if ema_decay:
    want = jax.tree.map(lambda a, b: 0.1 * a + 0.9 * b, init, state.params)
    for a, b in zip(jax.tree.leaves(state.ema["params"]), jax.tree.leaves(want)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
  else:
    assert state.ema is None and steps.eval_variables(state)["params"] is state.params


@pytest.mark.parametrize("seg_loss", ["bce_dice"])
@pytest.mark.slow
def test_device_resident_scanned_steps_equal_the_step_at_a_time_loop(real_tiles, seg_loss):
  """train_steps (data on device, rows per step, lax.scan) = train_step on host-gathered batches.

  Same samples, keys and arithmetic; XLA fuses the scanned step differently, so float32 rounding differs.
  The per-step losses agree to 1e-5; the parameters after 3 SGD steps differed by up to 1.4e-5 absolute
  (4 of 2,352 kernel elements, 2026-11-25), as rounding grows ~30x per step (see the 2-device test).
  The Lovasz step, measured with this test on 2026-11-26 (~60 s more on 2 cores, so not in CI): third
  loss 1.05e-5 relative apart, parameters up to 2.9e-4 (its gradient follows the sorted order of the
  errors, so rounding that swaps near-equal errors changes whole gradient entries).
  """
  images, masks = real_tiles
  rows = np.random.default_rng(0).permutation(len(images))[:24].reshape(3, 8).astype(np.int32)
  state, step = _state_and_step(seg_loss, 0.01)
  key = jax.random.key(7)
  with jax.default_matmul_precision("highest"):
    loop_state, loop_losses = state, []
    for r in rows:
      loop_state, m = step(loop_state, {"image": jnp.asarray(images[r]), "mask": jnp.asarray(masks[r])}, key)
      loop_losses.append(float(m["loss"]))
    scan = jax.jit(lambda s, d, r, k: steps.train_steps(s, d, r, k, seg_loss=seg_loss, loss_weights=WEIGHTS,
                                                        canvas=128))
    scan_state, metrics = scan(state, {"image": jnp.asarray(images), "mask": jnp.asarray(masks)},
                               jnp.asarray(rows), key)
  assert metrics["loss"].shape == (3,) and int(scan_state.step) == int(loop_state.step) == 3
  np.testing.assert_allclose(np.asarray(metrics["loss"]), loop_losses, rtol=1e-5)
  for a, b in zip(jax.tree.leaves((scan_state.params, scan_state.batch_stats)),
                  jax.tree.leaves((loop_state.params, loop_state.batch_stats))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=5e-5)


def test_one_batch_can_be_overfit(real_tiles):
  images, masks = real_tiles
  batch = {"image": jnp.asarray(images[:8]), "mask": jnp.asarray(masks[:8])}
  state, step = _state_and_step("bce_dice", 0.05)
  losses = []
  for _ in range(40):
    state, metrics = step(state, batch, jax.random.key(1))
    losses.append(float(metrics["loss"]))
  assert np.isfinite(losses).all()
  assert min(losses[-5:]) < 0.5 * losses[0], losses


LEVERS = dict(lovasz_symmetric=True, loss_on_tile=True, aug_scale=0.15, aug_rotate=10.0, aug_shear=8.0,
              aug_warp_prob=0.75, aug_brightness=0.08, aug_contrast=0.15, aug_gamma=0.2, aug_cutout=0.5,
              aug_cutout_size=25, aug_cutout_holes=2)


def test_a_step_with_every_lever_on_real_tiles(real_tiles):
  """The symmetric Lovasz, the loss on the tile and the whole jitter in one jitted step (the blend loss:
  Lovasz and BCE+Dice): finite, and not the step with the keys off (they reach the step)."""
  images, masks = real_tiles
  config = configlib.base_config()
  config.update(LEVERS)
  s = configlib.sections(config)
  model = models.get_model("model_tiny")
  state = steps.create_train_state(model, optim.constant_sgd(0.01), jax.random.key(0), image_size=104)
  batch = {"image": jnp.asarray(images[:8]), "mask": jnp.asarray(masks[:8])}
  levers = jax.jit(lambda st, b, k: steps.train_step(
      st, b, k, seg_loss="blend", loss_weights=configlib.loss_weights(s.loss), canvas=104,
      loss_on_tile=s.loss.loss_on_tile, jitter=augment.Jitter.of(s.augment)))
  plain = jax.jit(lambda st, b, k: steps.train_step(st, b, k, seg_loss="blend", loss_weights=WEIGHTS,
                                                    canvas=104))
  new, metrics = levers(state, batch, jax.random.key(1))
  _, metrics_off = plain(state, batch, jax.random.key(1))
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert float(metrics["final_loss"]) != float(metrics_off["final_loss"])
  assert int(new.step) == 1


@pytest.mark.slow
def test_a_short_real_data_run_with_every_lever(tiny_config, tmp_path):
  """configs/tiny.py on the mini data (48 tiles, one BCE+Dice epoch and a 2-epoch Lovasz cycle) with every
  new key on trains, validates and records the keys."""
  import json
  from salt_jax.training import train
  config = tiny_config(**LEVERS)
  summary = train.train_and_evaluate(config, str(tmp_path / "levers"))[0]
  history = summary["history"]
  assert [r["epoch"] for r in history] == [0, 1, 2]
  assert all(np.isfinite(r["loss"]) for r in history)
  assert all(np.isfinite(r["val_loss"]) and 0 <= r["val_map"] <= 1 for r in history[1:])
  recorded = json.loads((tmp_path / "levers" / "fold_0" / "config.json").read_text())
  assert {k: recorded[k] for k in LEVERS} == LEVERS


def _run_worker(batch_npz, out, *args, env_extra=None, wait=True):
  env = dict(os.environ, **(env_extra or {}))
  env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()
  proc = subprocess.Popen([sys.executable, str(WORKER), str(batch_npz), str(out), *args], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  if not wait:
    return proc
  log, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, log[-3000:]
  return np.load(out)


@pytest.fixture(scope="module")
def batch_npz(real_tiles, tmp_path_factory):
  images, masks = real_tiles
  path = tmp_path_factory.mktemp("dp") / "batch.npz"
  np.savez(path, image=images[:8], mask=masks[:8])
  return path


@pytest.fixture(scope="module")
def one_device(batch_npz):
  return _run_worker(batch_npz, batch_npz.with_name("one.npz"), "--devices=1")


def _assert_same_step(a, b, atol):
  keys = [k for k in a.files if k.startswith("step1:")]
  assert len(keys) > 100
  for k in keys:
    np.testing.assert_allclose(a[k], b[k], rtol=0, atol=atol, err_msg=k)


def test_one_device_equals_two_simulated_devices(batch_npz, one_device):
  """Same global batch, 1 vs 2 devices: the first step's parameters and BN statistics agree to float
  rounding (the global-batch BN and the gradient all-reduce only change the summation order); the
  losses of three steps in lock-step agree to 1e-4 (rounding differences grow by ~30x per step here:
  6e-8 after one step, 4e-6 after two)."""
  two = _run_worker(batch_npz, batch_npz.with_name("two.npz"), "--devices=2",
                    env_extra={"XLA_FLAGS": TWO_CPU_DEVICES})
  assert int(one_device["n_devices"]) == 1 and int(two["n_devices"]) == 2
  _assert_same_step(one_device, two, atol=1e-6)
  np.testing.assert_allclose(two["losses"], one_device["losses"], rtol=1e-4)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_run_in_lock_step(batch_npz, one_device):
  """jax.distributed on localhost, one CPU device per process, each feeding its half of the global
  batch: both processes end with bit-identical parameters, and their first step equals one device's."""
  coordinator = f"localhost:{_free_port()}"
  outs = [batch_npz.with_name(f"proc{i}.npz") for i in range(2)]
  procs = [_run_worker(batch_npz, outs[i], f"--coordinator={coordinator}", f"--process_id={i}",
                       "--num_processes=2", wait=False) for i in range(2)]
  for proc in procs:
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-3000:]
  p0, p1 = (np.load(o) for o in outs)
  assert int(p0["n_devices"]) == 2
  for k in p0.files:
    np.testing.assert_array_equal(p0[k], p1[k], err_msg=k)
  _assert_same_step(one_device, p0, atol=1e-6)
  np.testing.assert_allclose(p0["losses"], one_device["losses"], rtol=1e-4)


def test_ynn_kernels_are_accepted_and_compute_the_same_gradients():
  """config.cpu_ynn_fusion's options compile (XLA takes its enum names), choose the kernels they name ('none':
  no YNNPACK fusion; 'reduce': the reductions only) and change no result beyond float32 rounding: the
  gradient of a small conv net against XLA:CPU's default kernels."""
  assert steps.train_compiler_options("") is None
  on_cpu = jax.default_backend() == "cpu"
  for value, names in (("none", ""), ("reduce", "LIBRARY_FUSION_TYPE_REDUCE"),
                       ("dot,eltwise,reduce", "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE,"
                                              "LIBRARY_FUSION_TYPE_REDUCE")):
    expected = {"xla_cpu_experimental_ynn_fusion_type": names} if on_cpu else None
    assert steps.train_compiler_options(value) == expected
  model = nn.Sequential([nn.Conv(8, (3, 3)), nn.relu, nn.Conv(4, (3, 3)), lambda y: jnp.mean(y, (1, 2)),
                         nn.Dense(2)])
  x = jax.random.normal(jax.random.key(0), (4, 24, 24, 3))
  params = model.init(jax.random.key(1), x)
  grad = jax.jit(jax.grad(lambda p: jnp.sum(model.apply(p, x) ** 2))).lower(params)
  plain = jax.tree.leaves(grad.compile()(params))
  for value in ("none", "reduce", "dot,eltwise,reduce", "individual_convolution"):
    compiled = grad.compile(steps.train_compiler_options(value))
    if on_cpu:
      fused = compiled.as_text().count('"kind":"__ynn_fusion"')
      if value == "none":
        assert fused == 0
      elif value != "individual_convolution":  # YNNPACK declines this net's 3-channel convolutions
        assert fused > 0, value
    for a, b in zip(plain, jax.tree.leaves(compiled(params))):
      np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-5)