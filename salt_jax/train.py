"""Train one model on one fold: BCE+Dice warm-up, then cosine-restart cycles with the Lovasz hinge.

    python -m salt_jax.train --config=configs/model_50.py --workdir=runs/model_50 --config.fold=3

Validation (flip TTA, 101x101 crop, Lovasz loss, 80-threshold sweep) runs at the configured epochs of
each cycle; the best-mAP and lowest-loss snapshot of every cycle is kept (SPEC 5). The latest state is
saved after every epoch, so re-running the same command after a crash resumes where it stopped and
gives the same result as an uninterrupted run.
"""
import json
import math
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


def _mean_metrics(per_step, fold, epoch, first_step):
  """Averages per-step device metrics; stops the run at the first non-finite loss."""
  stacked = jax.device_get({k: jnp.stack([m[k] for m in per_step]) for k in per_step[0]})
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
  configlib.validate(config)
  run = rundir.RunDir(workdir)
  run.check_run(config)
  parallel.maybe_initialize_distributed(config.distributed)
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  parallel.check_batch_size(config.eval_batch_size, mesh)
  with run.lock(jax.process_index()):
    run.check_run(config)  # again under the lock: another run may have recorded in between
    data = fold_data(config, run)
    pseudo_arrays = pseudo_data(config, run)
    return _train_fold(config, run, mesh, data, pseudo_arrays)


def _train_fold(config, run: rundir.RunDir, mesh, data, pseudo_arrays) -> Dict[str, Any]:
  """The training loop of one fold on its data (see train_and_evaluate)."""
  dtype = models.compute_dtype(config.dtype)
  repl, batch_sharding = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  train_images, train_masks, valid_images, valid_masks, _ = data
  n_real = len(train_images)
  pseudo_images, pseudo_masks = pseudo_arrays
  if len(pseudo_images):
    train_images = np.concatenate([train_images, pseudo_images])
    train_masks = np.concatenate([train_masks, pseudo_masks])
  steps_per_epoch = n_real // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"fold {config.fold} has {len(train_images)} training images, fewer than one batch")
  logging.info("fold %d: %d train images (%d steps of %d), %d validation images, %d devices",
               config.fold, n_real, steps_per_epoch, config.batch_size, len(valid_images),
               mesh.devices.size)

  model = models.from_config(config)
  tx = schedules.make_optimizer(lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
  init_key, step_key = jax.random.split(jax.random.key(config.seed))
  state = steps.create_train_state(model, tx, init_key)
  if config.pretrained:
    state = load_pretrained(state, model, config.pretrained)
  if config.init_from:
    state = load_original(state, config)
  state = state.replace(opt_state=schedules.set_learning_rate(state.opt_state, config.lr))
  state = parallel.replicate(state, mesh)
  step_key = parallel.replicate(step_key, mesh)

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

  total = schedules.total_epochs(config.warmup_epochs, config.cycle_num, config.cycle_len)
  batch_spec = {k: jax.ShapeDtypeStruct((config.batch_size, *geometry.TILE_SHAPE), jnp.uint8,
                                        sharding=batch_sharding) for k in ("image", "mask")}
  compiled = {}

  def step_fn(seg_loss):
    if seg_loss not in compiled:
      t0 = time.perf_counter()
      compiled[seg_loss] = steps.compile_train_step(
          state, batch_spec, step_key, mesh_shardings=(repl, batch_sharding), seg_loss=seg_loss,
          loss_weights=loss_weights(config), dtype=dtype)
      logging.info("compiled the %s train step in %.1f s", seg_loss, time.perf_counter() - t0)
    return compiled[seg_loss]

  predictor = inference.Predictor(model.apply, mesh, config.eval_batch_size, dtype)
  writer = _summary_writer(run.tb_dir(config.fold))
  host_rows = parallel.host_slice(config.batch_size)
  for epoch in range(start_epoch, total):
    cycle = schedules.cycle_of_epoch(epoch, config.warmup_epochs, config.cycle_len)
    seg_loss = "bce_dice" if cycle is None else "lovasz"
    lr = schedules.lr_at_epoch(epoch, **schedule_kwargs(config))
    state = state.replace(opt_state=parallel.replicate(schedules.set_learning_rate(state.opt_state, lr), mesh))
    fn = step_fn(seg_loss)
    epoch_rng = np.random.default_rng([config.seed, config.fold, epoch])
    order = epoch_rng.permutation(n_real)
    if len(train_images) > n_real:
      order = pseudo.mix_epoch(epoch_rng, order, n_real, len(train_images) - n_real, config.pseudo_prob)
    first_step = int(state.step)
    per_step = []
    t0 = time.perf_counter()
    bar = tqdm.tqdm(range(steps_per_epoch), desc=f"fold {config.fold} epoch {epoch + 1}/{total}",
                    leave=False, disable=None, unit="step")
    for i in bar:
      rows = order[i * config.batch_size:(i + 1) * config.batch_size][host_rows]
      batch = parallel.to_global({"image": train_images[rows], "mask": train_masks[rows]}, batch_sharding)
      state, m = fn(state, batch, step_key)
      per_step.append(m)
      if config.log_every and (i + 1) % config.log_every == 0:
        bar.set_postfix(loss=f"{float(m['loss']):.4f}")
    record = _mean_metrics(per_step, config.fold, epoch, first_step)
    seconds = time.perf_counter() - t0
    record.update(epoch=epoch, cycle=cycle, lr=lr, seg_loss=seg_loss, seconds=seconds,
                  images_per_s=steps_per_epoch * config.batch_size / seconds)

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
    history.append(record)
    _log_epoch(record, total, writer)
    if jax.process_index() == 0:
      fileio.write_jsonl(history_path, history)
    latest.save(epoch, state, loop)
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
