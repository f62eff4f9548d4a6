"""Train one model on one fold: BCE+Dice warm-up, then cosine-restart cycles with the Lovasz hinge.

    python -m salt_jax.train --config=configs/model_50.py --workdir=runs/model_50 --config.fold=3

Validation (flip TTA, 101x101 crop, Lovasz loss, 80-threshold sweep) runs at the configured epochs of
each cycle; the best-mAP and lowest-loss snapshot of every cycle is kept (SPEC 5). The latest state is
saved after every epoch, so re-running the same command after a crash resumes where it stopped and
gives the same result as an uninterrupted run.
"""
import dataclasses
import functools
import json
import math
import os
import sys
import time
from typing import Any, Dict, List

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from absl import app, flags, logging
from ml_collections import config_flags

from salt_jax import (checkpoints, configlib, fileio, geometry, inference, models, parallel, pseudo, rundir,
                      schedules, steps)
from salt_jax.data import sources
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
  test = sources.load_test(config)
  half = pseudo.load_or_make_split(run.pseudo_split_csv(config), test.ids, config.pseudo_seed)
  chosen = np.flatnonzero(half == config.pseudo_split)
  masks = pseudo.read_pseudo_masks(config.pseudo_csv, test.ids[chosen])
  logging.info("pseudo labels: %d test tiles of half %d from %s, p=%.2f", len(chosen), config.pseudo_split,
               config.pseudo_csv, config.pseudo_prob)
  return test.images[chosen], masks


def _mean_metrics(per_call, fold, epoch, first_step, n_steps):
  """Averages the first n_steps per-step metrics of an epoch's calls ({name: (S,)} each); stops the run
  at the first non-finite loss."""
  stacked = {k: np.concatenate([np.asarray(m[k]) for m in per_call])[:n_steps] for k in per_call[0]}
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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[int, Dict[str, Any]]:
  """Runs (or resumes) the folds of `config.folds` (just `config.fold` when empty) together in one compiled
  program; returns {fold: {"history": per-epoch records, "bests": per-cycle best metrics}}.

  Each fold gets what training it alone would give it (its own data order, validation, snapshots and
  records under fold_<k>/). Nothing is written before the config is validated and checked against the
  workdir's records (RunDir.check_run); the workdir is locked for the whole run.
  """
  phases = _Phases()
  configlib.validate(config)
  configs = [configlib.for_fold(config, k) for k in configlib.fold_list(config)]
  run = rundir.RunDir(workdir)
  for c in configs:
    run.check_run(c)
  set_compilation_cache(config.compilation_cache_dir)
  parallel.maybe_initialize_distributed(config.distributed)
  fold_map = parallel.resolve_fold_map(config.fold_map, len(configs))
  mesh = parallel.make_mesh(parallel.fold_axis_size(len(configs), jax.device_count(), fold_map))
  eval_mesh = parallel.make_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  parallel.check_batch_size(config.eval_batch_size, eval_mesh)
  with run.lock(jax.process_index()):
    for c in configs:
      run.check_run(c)  # again under the lock: another run may have recorded in between
    samples = sources.load_train(config)
    pseudo_arrays = pseudo_data(config, run)
    return _train_folds(configs, run, (mesh, eval_mesh, fold_map), samples, pseudo_arrays, phases)


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


def device_rows(config, epoch: int, train_rows: np.ndarray, n_all: int, n_pseudo: int,
                steps_per_epoch: int) -> np.ndarray:
  """(steps_per_epoch, batch_size) int32 rows of one fold's epoch into the device-resident data (the
  whole train set, then the pseudo-labelled tiles): epoch_rows's sample indices mapped through the
  fold's training rows."""
  local = epoch_rows(config, epoch, len(train_rows), n_pseudo, steps_per_epoch)
  return np.concatenate([train_rows, n_all + np.arange(n_pseudo)]).astype(np.int32)[local]


@dataclasses.dataclass
class _Fold:
  """One fold of a (fold-parallel) run: its config, data selection, checkpoints and records."""
  config: ml_collections.ConfigDict
  train_rows: np.ndarray        # (n,) its training samples' rows into the train set
  valid_images: np.ndarray      # (V,101,101) uint8
  valid_masks: np.ndarray
  steps: int                    # steps per epoch
  latest: checkpoints.LatestCheckpoint
  done: int = -1                # last finished epoch (-1: none)
  state: Any = None             # restored train state (None: start from the initial state)
  loop: Dict[str, Any] = dataclasses.field(default_factory=lambda: {"bests": {}})
  history: List[Dict[str, Any]] = dataclasses.field(default_factory=list)

  @property
  def fold(self) -> int:
    return self.config.fold


def _make_fold(config, run: rundir.RunDir, samples) -> _Fold:
  train_idx, valid_idx = run.fold_rows(config, samples.ids, samples.masks)
  steps_per_epoch = len(train_idx) // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"fold {config.fold} has {len(train_idx)} training images, fewer than one batch")
  fold = config.fold
  latest = checkpoints.LatestCheckpoint(run.checkpoints_dir(fold), run.corrupt_checkpoints_dir(fold),
                                        keep=config.keep_checkpoints)
  valid_images, valid_masks = samples.images[valid_idx], samples.masks[valid_idx]
  return _Fold(config, train_idx, valid_images, valid_masks, steps_per_epoch, latest)


def _restore(folds: List[_Fold], run: rundir.RunDir, abstract, total: int) -> List[_Fold]:
  """Loads each fold's latest readable state and history; returns the folds still to train, brought to
  one starting epoch (the earliest): a fold that a kill -9 left an epoch ahead goes back to its previous
  state, one ahead of folds that have no state yet starts again with them."""
  for f in folds:
    restored = f.latest.restore_latest(abstract)
    if restored is not None:
      f.done, f.state, f.loop = restored
  todo = [f for f in folds if f.done < total - 1]
  for f in folds:
    if f not in todo:
      logging.info("fold %d already trained all %d epochs", f.fold, total)
  common = min((f.done for f in todo), default=-1)
  for f in todo:
    if f.done == common:
      continue
    if common >= 0 and common not in f.latest.epochs():
      behind = min(todo, key=lambda g: g.done).fold
      raise rundir.WorkdirError(
          f"folds {', '.join(str(g.fold) for g in todo)} of {run.root} cannot resume together: fold {f.fold} "
          f"is after epoch {f.done}, fold {behind} after epoch {common}; train fold {behind} alone "
          f"(--config.fold={behind}) up to epoch {f.done + 1} first, or train the folds separately")
    if common >= 0:
      f.state, f.loop = f.latest.restore(common, abstract)
    else:
      logging.warning("fold %d starts again from scratch with the folds it trains with (it was after "
                      "epoch %d)", f.fold, f.done)
      f.state, f.loop = None, {"bests": {}}
    f.latest.discard_after(common)
    f.done = common
  for f in folds:
    path = run.history_jsonl(f.fold)
    if f.done >= 0 and path.exists():
      f.history = [r for r in map(json.loads, path.read_text().splitlines()) if r["epoch"] <= f.done]
    if f in todo and f.done >= 0:
      logging.info("resuming fold %d after epoch %d", f.fold, f.done)
  return todo


def _train_folds(configs, run: rundir.RunDir, meshes, samples, pseudo_arrays, phases: _Phases
                 ) -> Dict[int, Dict[str, Any]]:
  """The training loop of the folds of `configs` (one config per fold; see train_and_evaluate)."""
  mesh, eval_mesh, fold_map = meshes
  config = configs[0]  # every key but `fold` is the same in all of them
  dtype = models.compute_dtype(config.dtype)
  pseudo_images, pseudo_masks = pseudo_arrays
  n_all, n_pseudo, batch = len(samples.ids), len(pseudo_images), config.batch_size
  folds = [_make_fold(c, run, samples) for c in configs]
  for f in folds:
    logging.info("fold %d: %d train images (%d steps of %d), %d validation images", f.fold, len(f.train_rows),
                 f.steps, batch, len(f.valid_images))
  logging.info("%d fold(s) on %d devices (mesh %s, fold_map %s)", len(folds), mesh.devices.size,
               dict(mesh.shape), fold_map)
  # Every training sample (and pseudo-labelled test tile) goes to the devices once; epochs send rows.
  device_data = parallel.replicate({"image": np.concatenate([samples.images, pseudo_images]),
                                    "mask": np.concatenate([samples.masks, pseudo_masks])}, mesh)
  phases.done("data")

  model = models.from_config(config)
  repl, by_fold = parallel.replicated(mesh), parallel.fold_sharded(mesh)
  initial, step_key = _initial_state(config, model, mesh)
  phases.done("init")

  total = schedules.total_epochs(config.warmup_epochs, config.cycle_num, config.cycle_len)
  all_folds = folds
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl), initial)
  folds = _restore(all_folds, run, abstract, total)
  if jax.process_index() == 0:
    for c in configs:
      run.record_run(c)
  if not folds:
    _close(all_folds)
    return {f.fold: {"history": f.history, "bests": f.loop["bests"]} for f in all_folds}
  stack = jax.jit(lambda *trees: jax.tree.map(lambda *xs: jnp.stack(xs), *trees), out_shardings=by_fold)
  unstack = jax.jit(lambda tree: [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(len(folds))],
                    out_shardings=parallel.replicated(eval_mesh))
  state = stack(*[initial if f.state is None else parallel.replicate(f.state, mesh) for f in folds])
  del initial
  for f in folds:
    f.state = None
  phases.done("restore")

  max_steps = max(f.steps for f in folds)
  active = None  # folds with fewer steps per epoch than the others idle (unchanged state) at the end
  if any(f.steps < max_steps for f in folds):
    active = np.stack([np.arange(max_steps) < f.steps for f in folds])
  compiled = {}

  def steps_fn(seg_loss: str, n_steps: int):
    if (seg_loss, n_steps) not in compiled:
      t0 = time.perf_counter()
      rows_spec = jax.ShapeDtypeStruct((len(folds), n_steps, batch), jnp.int32, sharding=by_fold)
      active_spec = None if active is None else jax.ShapeDtypeStruct((len(folds), n_steps), jnp.bool_,
                                                                     sharding=by_fold)
      compiled[seg_loss, n_steps] = steps.compile_fold_train_steps(
          state, device_data, rows_spec, step_key, active_spec, mesh=mesh, fold_map=fold_map,
          seg_loss=seg_loss, loss_weights=loss_weights(config), dtype=dtype)
      logging.info("compiled %d %s train steps of %d fold(s) per call in %.1f s", n_steps, seg_loss,
                   len(folds), time.perf_counter() - t0)
      phases.done("compile")
    return compiled[seg_loss, n_steps]

  predictor = inference.Predictor(model.apply, eval_mesh, config.eval_batch_size, dtype)
  writers = {f.fold: _summary_writer(run.tb_dir(f.fold)) for f in folds}
  chunks = _chunks(max_steps, config.steps_per_call)
  start_epoch, startup = folds[0].done + 1, None
  names = ",".join(str(f.fold) for f in folds)
  for epoch in tqdm.tqdm(range(start_epoch, total), desc=f"fold{'s' * (len(folds) > 1)} {names}",
                         initial=start_epoch, total=total, disable=None, unit="epoch"):
    t_epoch = time.perf_counter()
    cycle = schedules.cycle_of_epoch(epoch, config.warmup_epochs, config.cycle_len)
    seg_loss = "bce_dice" if cycle is None else "lovasz"
    lr = schedules.lr_at_epoch(epoch, **schedule_kwargs(config))
    opt_state = schedules.set_learning_rate(state.opt_state, lr)
    state = state.replace(opt_state=parallel.put_global(opt_state, by_fold))
    rows = np.zeros((len(folds), max_steps, batch), np.int32)  # idle steps (see active) read row 0
    for i, f in enumerate(folds):
      rows[i, :f.steps] = device_rows(f.config, epoch, f.train_rows, n_all, n_pseudo, f.steps)
    fns = [steps_fn(seg_loss, n) for _, n in chunks]
    if startup is None:
      startup = phases.summary()
      logging.info("start-up %.1f s: %s", startup["first_step"],
                   ", ".join(f"{k} {v:.1f} s" for k, v in startup.items() if k != "first_step"))
    t0 = time.perf_counter()
    per_call = []
    for fn, (a, n) in zip(fns, chunks):
      chunk = (rows[:, a:a + n],) if active is None else (rows[:, a:a + n], active[:, a:a + n])
      rows_chunk, *active_chunk = parallel.put_global(chunk, by_fold)
      state, m = fn(state, device_data, rows_chunk, step_key, *active_chunk)
      per_call.append(m)
    per_call = jax.device_get(per_call)
    seconds = time.perf_counter() - t0
    fold_states = unstack(state)
    validate = cycle is not None and schedules.is_eval_epoch(
        epoch, warmup_epochs=config.warmup_epochs, cycle_len=config.cycle_len, eval_start=config.eval_start,
        eval_every=config.eval_every)
    for i, f in enumerate(folds):
      record = _mean_metrics([{k: v[i] for k, v in m.items()} for m in per_call], f.fold, epoch,
                             epoch * f.steps, f.steps)
      record.update(epoch=epoch, cycle=cycle, lr=lr, seg_loss=seg_loss, seconds=seconds,
                    images_per_s=f.steps * batch / seconds)
      if epoch == start_epoch:
        record["startup"] = startup
      if validate:
        record.update(_validate(predictor, f, fold_states[i], run, epoch, cycle))
      f.latest.save(epoch, fold_states[i], f.loop)  # asynchronous: the next epoch does not wait for the disk
      record["epoch_seconds"] = time.perf_counter() - t_epoch
      f.history.append(record)
      _log_epoch(f.fold, record, total, writers[f.fold])
      if jax.process_index() == 0:
        fileio.write_jsonl(run.history_jsonl(f.fold), f.history)
    del fold_states

  _close(all_folds)
  for writer in writers.values():
    if writer is not None:
      writer.close()
  return {f.fold: {"history": f.history, "bests": f.loop["bests"]} for f in all_folds}


def _initial_state(config, model, mesh):
  """(initial train state, step key), replicated: one compiled initialisation from config.seed, then
  the ImageNet encoder (config.pretrained) or the original solution's weights (config.init_from)."""
  tx = schedules.make_optimizer(lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
  init_key, step_key = jax.random.split(jax.random.key(config.seed))
  state = jax.jit(functools.partial(steps.create_train_state, model, tx),
                  out_shardings=parallel.replicated(mesh))(parallel.replicate(init_key, mesh))
  if config.pretrained:
    state = load_pretrained(state, model, config.pretrained)
  if config.init_from:
    state = load_original(state, config)
  return parallel.replicate(state, mesh), parallel.replicate(step_key, mesh)


def _validate(predictor, f: _Fold, state, run: rundir.RunDir, epoch: int, cycle: int) -> Dict[str, float]:
  """Validates one fold's state; saves the snapshots of the kinds it improves in this cycle."""
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  result = predictor.validate(variables, f.valid_images, f.valid_masks)
  if not np.isfinite(result["val_loss"]):
    raise FloatingPointError(f"non-finite validation loss after epoch {epoch} (fold {f.fold})")
  for kind in _update_bests(f.loop, cycle, result, epoch):
    if kind == "min_loss" and not f.config.keep_min_loss:
      continue
    meta = dict(result, epoch=epoch, cycle=cycle, fold=f.fold, model=f.config.model, kind=kind)
    checkpoints.save_snapshot(run.snapshot_dir(f.fold, cycle, kind), variables, meta)
  return result


def _close(folds: List[_Fold]) -> None:
  for f in folds:
    f.latest.wait()
    f.latest.close()


def _summary_writer(path):
  if jax.process_index() != 0:
    return None
  from tensorboardX import SummaryWriter
  return SummaryWriter(str(path))


def _log_epoch(fold, record, total, writer) -> None:
  msg = (f"fold {fold} epoch {record['epoch'] + 1}/{total} "
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
