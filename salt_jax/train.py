"""Train one model on one fold: BCE+Dice warm-up, then cosine-restart cycles with the Lovasz hinge.

    python -m salt_jax.train --config=configs/model_50.py --workdir=runs/model_50 --config.fold=3

Validation (flip TTA, 101x101 crop, Lovasz loss, 80-threshold sweep) runs at the configured epochs of
each cycle; the best-mAP and lowest-loss snapshot of every cycle is kept (SPEC 5). The latest state is
saved after every epoch, so re-running the same command after a crash resumes where it stopped and
gives the same result as an uninterrupted run.
"""
import functools
import json
import math
import os
import sys
import time
from typing import Any, Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from absl import app, flags, logging
from ml_collections import config_flags

from salt_jax import (checkpoints, configlib, fileio, geometry, inference, models, parallel, pseudo, rundir,
                      schedules, steps)
from salt_jax.data import kaggle
from salt_jax.data.errors import DataError


def loss_weights(config) -> Dict[str, float]:
  return dict(class_weight=config.class_weight, no_empty_weight=config.no_empty_weight,
              dice_weight=config.dice_weight, bce_weight=config.bce_weight)


def schedule_kwargs(config) -> Dict[str, Any]:
  return dict(lr=config.lr, eta_min=config.eta_min, warmup_epochs=config.warmup_epochs,
              cycle_len=config.cycle_len)


def load_pretrained(state, model, path: str):
  """Puts ImageNet encoder weights from a downloaded PyTorch file into the state."""
  from salt_jax.models import convert  # torch is only needed for .pth files
  encoder_vars = convert.torch_to_flax(model.encoder, convert.load_torch_state_dict(path))
  variables = convert.merge_encoder_weights({"params": state.params, "batch_stats": state.batch_stats},
                                            encoder_vars)
  logging.info("loaded ImageNet encoder weights from %s", path)
  return state.replace(params=variables["params"], batch_stats=variables["batch_stats"])


def load_original(state, config):
  """Starts from a whole-model checkpoint of the original PyTorch solution (config.init_from)."""
  from salt_jax.models import convert  # torch is only needed for .pth files
  variables = convert.load_original(config.init_from, config.model)
  logging.info("initialised every %s weight from %s", config.model, config.init_from)
  return state.replace(params=variables["params"], batch_stats=variables["batch_stats"])


def pseudo_data(config, run: rundir.RunDir):
  """(images, masks) of the pseudo-labelled test half, or empty arrays without a pseudo CSV."""
  if not config.pseudo_csv:
    empty = np.zeros((0, *geometry.TILE_SHAPE), np.uint8)
    return empty, empty
  test = kaggle.load_test(config.data_dir, cache_dir=config.cache_dir or None)
  half = pseudo.load_or_make_split(run.pseudo_split_csv(config), test.ids, config.pseudo_seed)
  chosen = np.flatnonzero(half == config.pseudo_split)
  masks = pseudo.read_pseudo_masks(config.pseudo_csv, test.ids[chosen])
  logging.info("pseudo labels: %d test tiles of half %d from %s, p=%.2f", len(chosen), config.pseudo_split,
               config.pseudo_csv, config.pseudo_prob)
  return test.images[chosen], masks


def fold_data(config, run: rundir.RunDir):
  """(train images, train masks, valid images, valid masks, valid ids) of the configured fold."""
  samples = kaggle.load_train(config.data_dir, cache_dir=config.cache_dir or None)
  train_idx, valid_idx = run.fold_rows(config, samples.ids, samples.masks)
  return (samples.images[train_idx], samples.masks[train_idx], samples.images[valid_idx],
          samples.masks[valid_idx], samples.ids[valid_idx])


def _mean_metrics(per_call, fold, epoch, first_step):
  """Averages the per-step device metrics of an epoch's calls ({name: (S,)} each); stops the run at the
  first non-finite loss."""
  stacked = {k: np.concatenate([np.asarray(m[k]) for m in per_call]) for k in per_call[0]}
  bad = np.flatnonzero(~np.isfinite(stacked["loss"]))
  if bad.size:
    raise FloatingPointError(
        f"non-finite training loss ({stacked['loss'][bad[0]]}) at step {first_step + int(bad[0])} "
        f"(fold {fold}, epoch {epoch}, batch {int(bad[0])}); the last saved checkpoint precedes it")
  return {k: float(np.mean(v)) for k, v in stacked.items()}


def _update_bests(loop, cycle, result, epoch):
  """Which snapshot kinds this evaluation improves (strictly; the first of a cycle always does)."""
  key = str(cycle)
  bests = loop["bests"].setdefault(key, {"max_map": -math.inf, "min_loss": math.inf})
  kinds = []
  if result["val_map"] > bests["max_map"]:
    bests["max_map"] = result["val_map"]
    kinds.append("max_map")
  if result["val_loss"] < bests["min_loss"]:
    bests["min_loss"] = result["val_loss"]
    kinds.append("min_loss")
  return kinds


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Runs (or resumes) one fold; returns the per-cycle snapshot metadata and the epoch history.

  Nothing is written before the config is validated and checked against the workdir's records
  (RunDir.check_run); the workdir is locked for the whole run.
  """
  phases = _Phases()
  configlib.validate(config)
  run = rundir.RunDir(workdir)
  run.check_run(config)
  set_compilation_cache(config.compilation_cache_dir)
  parallel.maybe_initialize_distributed(config.distributed)
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  parallel.check_batch_size(config.eval_batch_size, mesh)
  with run.lock(jax.process_index()):
    run.check_run(config)  # again under the lock: another run may have recorded in between
    data = fold_data(config, run)
    pseudo_arrays = pseudo_data(config, run)
    return _train_fold(config, run, mesh, data, pseudo_arrays, phases)


class _Phases:
  """Wall time of the start-up phases (data, init, restore, compile), logged and kept in the history."""

  def __init__(self):
    self.t0 = self._last = time.perf_counter()
    self.seconds: Dict[str, float] = {}

  def done(self, name: str) -> None:
    now = time.perf_counter()
    self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
    self._last = now

  def summary(self) -> Dict[str, float]:
    return dict(self.seconds, first_step=self._last - self.t0)


def set_compilation_cache(path: str) -> None:
  """Turns on JAX's persistent compilation cache in `path` ("" leaves it off): a second start of the
  same program loads its executables instead of compiling them."""
  if path:
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))


def epoch_rows(config, epoch: int, n_real: int, n_pseudo: int, steps_per_epoch: int) -> np.ndarray:
  """(steps_per_epoch, batch_size) int32 sample indices of an epoch: a seeded permutation of the real
  samples, each slot replaced by a pseudo-labelled one with probability pseudo_prob (SPEC 9)."""
  epoch_rng = np.random.default_rng([config.seed, config.fold, epoch])
  order = epoch_rng.permutation(n_real)
  if n_pseudo:
    order = pseudo.mix_epoch(epoch_rng, order, n_real, n_pseudo, config.pseudo_prob)
  return order[:steps_per_epoch * config.batch_size].reshape(steps_per_epoch, config.batch_size).astype(np.int32)


def _chunks(steps_per_epoch: int, steps_per_call: int):
  """[(first step, number of steps)] of one epoch's compiled calls (steps_per_call 0 = whole epoch)."""
  size = steps_per_call or steps_per_epoch
  return [(a, min(size, steps_per_epoch - a)) for a in range(0, steps_per_epoch, size)]


def _train_fold(config, run: rundir.RunDir, mesh, data, pseudo_arrays, phases: _Phases) -> Dict[str, Any]:
  """The training loop of one fold on its data (see train_and_evaluate)."""
  dtype = models.compute_dtype(config.dtype)
  repl, batch_sharding = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  train_images, train_masks, valid_images, valid_masks, _ = data
  n_real = len(train_images)
  pseudo_images, pseudo_masks = pseudo_arrays
  steps_per_epoch = n_real // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"fold {config.fold} has {n_real} training images, fewer than one batch")
  logging.info("fold %d: %d train images (%d steps of %d), %d validation images, %d devices",
               config.fold, n_real, steps_per_epoch, config.batch_size, len(valid_images),
               mesh.devices.size)
  # Every training sample (and pseudo-labelled test tile) goes to the devices once; epochs send rows.
  device_data = parallel.replicate({"image": np.concatenate([train_images, pseudo_images]),
                                    "mask": np.concatenate([train_masks, pseudo_masks])}, mesh)
  phases.done("data")

  model = models.from_config(config)
  tx = schedules.make_optimizer(lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
  init_key, step_key = jax.random.split(jax.random.key(config.seed))
  init = jax.jit(functools.partial(steps.create_train_state, model, tx), out_shardings=repl)
  state = init(parallel.replicate(init_key, mesh))
  if config.pretrained:
    state = load_pretrained(state, model, config.pretrained)
  if config.init_from:
    state = load_original(state, config)
  state = parallel.replicate(state, mesh)
  step_key = parallel.replicate(step_key, mesh)
  phases.done("init")

  latest = checkpoints.LatestCheckpoint(run.checkpoints_dir(config.fold), run.corrupt_checkpoints_dir(config.fold),
                                        keep=config.keep_checkpoints)
  loop = {"bests": {}}
  history_path = run.history_jsonl(config.fold)
  history = []
  start_epoch = 0
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl), state)
  restored = latest.restore_latest(abstract)
  if jax.process_index() == 0:
    run.record_run(config)
  if restored is not None:
    done, state, loop = restored
    start_epoch = done + 1
    if history_path.exists():
      history = [r for r in map(json.loads, history_path.read_text().splitlines()) if r["epoch"] <= done]
    logging.info("resuming fold %d after epoch %d", config.fold, done)
  phases.done("restore")

  total = schedules.total_epochs(config.warmup_epochs, config.cycle_num, config.cycle_len)
  compiled = {}

  def steps_fn(seg_loss: str, n_steps: int):
    if (seg_loss, n_steps) not in compiled:
      t0 = time.perf_counter()
      rows_spec = jax.ShapeDtypeStruct((n_steps, config.batch_size), jnp.int32, sharding=repl)
      compiled[seg_loss, n_steps] = steps.compile_train_steps(
          state, device_data, rows_spec, step_key, mesh_shardings=(repl, batch_sharding), seg_loss=seg_loss,
          loss_weights=loss_weights(config), dtype=dtype)
      logging.info("compiled %d %s train steps per call in %.1f s", n_steps, seg_loss, time.perf_counter() - t0)
      phases.done("compile")
    return compiled[seg_loss, n_steps]

  predictor = inference.Predictor(model.apply, mesh, config.eval_batch_size, dtype)
  writer = _summary_writer(run.tb_dir(config.fold))
  chunks = _chunks(steps_per_epoch, config.steps_per_call)
  startup = None
  for epoch in tqdm.tqdm(range(start_epoch, total), desc=f"fold {config.fold}", initial=start_epoch, total=total,
                         disable=None, unit="epoch"):
    t_epoch = time.perf_counter()
    cycle = schedules.cycle_of_epoch(epoch, config.warmup_epochs, config.cycle_len)
    seg_loss = "bce_dice" if cycle is None else "lovasz"
    lr = schedules.lr_at_epoch(epoch, **schedule_kwargs(config))
    state = state.replace(opt_state=parallel.replicate(schedules.set_learning_rate(state.opt_state, lr), mesh))
    rows = epoch_rows(config, epoch, n_real, len(pseudo_images), steps_per_epoch)
    first_step = int(state.step)
    per_call = []
    fns = [steps_fn(seg_loss, n) for _, n in chunks]
    if startup is None:
      startup = phases.summary()
      logging.info("start-up %.1f s: %s", startup["first_step"],
                   ", ".join(f"{k} {v:.1f} s" for k, v in startup.items() if k != "first_step"))
    t0 = time.perf_counter()
    for fn, (a, n) in zip(fns, chunks):
      state, m = fn(state, device_data, parallel.replicate(rows[a:a + n], mesh), step_key)
      per_call.append(m)
    record = _mean_metrics(per_call, config.fold, epoch, first_step)
    seconds = time.perf_counter() - t0
    record.update(epoch=epoch, cycle=cycle, lr=lr, seg_loss=seg_loss, seconds=seconds,
                  images_per_s=steps_per_epoch * config.batch_size / seconds)
    if epoch == start_epoch:
      record["startup"] = startup

    if cycle is not None and schedules.is_eval_epoch(
        epoch, warmup_epochs=config.warmup_epochs, cycle_len=config.cycle_len,
        eval_start=config.eval_start, eval_every=config.eval_every):
      variables = {"params": state.params, "batch_stats": state.batch_stats}
      result = predictor.validate(variables, valid_images, valid_masks)
      if not np.isfinite(result["val_loss"]):
        raise FloatingPointError(f"non-finite validation loss after epoch {epoch} (fold {config.fold})")
      record.update(result)
      for kind in _update_bests(loop, cycle, result, epoch):
        if kind == "min_loss" and not config.keep_min_loss:
          continue
        meta = dict(result, epoch=epoch, cycle=cycle, fold=config.fold, model=config.model, kind=kind)
        checkpoints.save_snapshot(run.snapshot_dir(config.fold, cycle, kind), variables, meta)
    latest.save(epoch, state, loop)  # asynchronous: the next epoch does not wait for the disk
    record["epoch_seconds"] = time.perf_counter() - t_epoch
    history.append(record)
    _log_epoch(record, total, writer)
    if jax.process_index() == 0:
      fileio.write_jsonl(history_path, history)

  latest.wait()
  latest.close()
  if writer is not None:
    writer.close()
  return {"history": history, "bests": loop["bests"]}


def _summary_writer(path):
  if jax.process_index() != 0:
    return None
  from tensorboardX import SummaryWriter
  return SummaryWriter(str(path))


def _log_epoch(record, total, writer) -> None:
  msg = (f"epoch {record['epoch'] + 1}/{total} "
         f"{'warm-up' if record['cycle'] is None else 'cycle ' + str(record['cycle'])} "
         f"loss {record['loss']:.4f} lr {record['lr']:.6f} {record['images_per_s']:.1f} img/s")
  if "val_map" in record:
    msg += (f" | val loss {record['val_loss']:.4f} mAP {record['val_map']:.4f} "
            f"@ {record['val_threshold']:+.4f}")
  logging.info(msg)
  if writer is not None:
    for k, v in record.items():
      if isinstance(v, float):
        writer.add_scalar(k, v, record["epoch"])
    writer.flush()


FLAGS = flags.FLAGS


def define_flags() -> None:
  """Command-line flags (defined only when run as a program, so the module stays importable)."""
  config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).", lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory of this model's runs (one subfolder per fold).")
  flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  try:
    train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (configlib.ConfigError, rundir.WorkdirError, DataError) as e:
    sys.exit(f"salt_jax.train: {e}")


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=configlib.parse_flags)
