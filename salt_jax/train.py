"""Train one model on one or more folds: BCE+Dice warm-up, then cosine-restart cycles with the Lovasz hinge.

    python -m salt_jax.train --config=configs/model_50.py --workdir=runs/model_50 --config.fold=3

Validation (flip TTA, 101x101 crop, Lovasz loss, 80-threshold sweep) runs at the configured epochs of
each cycle; the best-mAP and lowest-loss snapshot of every cycle is kept (SPEC 5). The latest state is
saved after every epoch, so re-running the same command after a crash resumes where it stopped and
gives the same result as an uninterrupted run.
"""
import functools
import os
import time
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from absl import flags, logging
from ml_collections import config_flags

from salt_jax import (checkpoints, cli, configlib, epochs, foldgroup, geometry, inference, models, parallel, pseudo,
                      records, rundir, schedules, steps)
from salt_jax.data import sources


def load_weights(config) -> Dict[str, Any]:
  """{"pretrained": encoder variables, "init_from": whole-model variables} of the weight files the config
  names, read and checked before anything is written (one ConfigError line for a bad file). A salt_jax
  snapshot folder as init_from fine-tunes that snapshot (its recorded model must be config.model)."""
  weights = {}
  if config.pretrained:
    weights["pretrained"] = _torch_weights(config, "pretrained")
  if config.init_from:
    weights["init_from"] = (_snapshot_weights(config) if os.path.isdir(config.init_from)
                            else _torch_weights(config, "init_from"))
  return weights


def _torch_weights(config, key: str) -> Any:
  from salt_jax.models import convert  # pylint: disable=import-outside-toplevel  (torch: only for .pth)
  return convert.checked_weights(config, key)


def _snapshot_weights(config) -> Dict[str, Any]:
  """{"params", "batch_stats"} of the salt_jax snapshot folder config.init_from."""
  try:
    meta = checkpoints.snapshot_meta(config.init_from)
    if meta.get("model") != config.model:
      raise configlib.ConfigError(f"config.init_from: {config.init_from} is a snapshot of {meta.get('model')}, "
                                  f"not of {config.model}")
    shapes = jax.eval_shape(lambda: models.init_variables(models.from_config(config), jax.random.key(0),
                                                          size=config.input_size))
    variables, _ = checkpoints.load_snapshot(config.init_from, {"params": shapes["params"],
                                                                "batch_stats": shapes.get("batch_stats", {})})
  except rundir.WorkdirError as e:
    raise configlib.ConfigError(f"config.init_from: {e}") from None
  return variables


def with_weights(state, weights: Dict[str, Any]):
  """The state with the ImageNet encoder (pretrained) merged in, then every weight of init_from (the
  original solution's checkpoint or a salt_jax snapshot)."""
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  if "pretrained" in weights:
    from salt_jax.models import convert  # pylint: disable=import-outside-toplevel
    variables = convert.merge_encoder_weights(variables, weights["pretrained"])
    logging.info("loaded ImageNet encoder weights")
  if "init_from" in weights:
    variables = weights["init_from"]
    logging.info("initialised every weight from config.init_from")
  return state.replace(params=variables["params"], batch_stats=variables["batch_stats"])


def pseudo_data(config, run: rundir.RunDir):
  """(images, masks) of the pseudo-labelled test tiles (config.pseudo_split's half, or all; at most
  config.pseudo_tiles of them), or empty arrays without a pseudo CSV."""
  if not config.pseudo_csv:
    empty = np.zeros((0, *geometry.TILE_SHAPE), np.uint8)
    return empty, empty
  test = sources.load_test(config)
  split_csv = run.pseudo_split_csv(config)
  half = pseudo.load_or_make_split(split_csv, test.ids, config.pseudo_seed, save=False)
  chosen = np.flatnonzero(half == config.pseudo_split) if config.pseudo_split >= 0 else np.arange(len(half))
  confidence = (pseudo.read_confidence(config.pseudo_confidence_csv, test.ids[chosen])
                if config.pseudo_confidence_csv else None)
  chosen = chosen[pseudo.keep(len(chosen), config.pseudo_tiles, confidence, config.pseudo_seed)]
  masks = pseudo.read_pseudo_masks(config.pseudo_csv, test.ids[chosen])
  if not split_csv.exists():  # saved once the pseudo masks were read: a refused start writes nothing
    pseudo.save_split(split_csv, test.ids, half)
  logging.info("pseudo labels: %d test tiles (split %d) from %s, p=%.2f", len(chosen), config.pseudo_split,
               config.pseudo_csv, config.pseudo_prob)
  return test.images[chosen], masks


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[int, Dict[str, Any]]:
  """Runs (or resumes) the folds of `config.folds` (just `config.fold` when empty) together in one compiled
  program; returns {fold: {"history": per-epoch records, "bests": per-cycle best metrics}}.

  Each fold gets what training it alone would give it (its own data order, validation, snapshots and
  records under fold_<k>/). Nothing is written before the config is validated and checked against the
  workdir's records (RunDir.check_run); the workdir is locked for the whole run, and a start refused
  while the data is read (a missing data folder or TFDS build, a bad pseudo CSV) leaves a new workdir
  absent and an existing one's records untouched (RunDir.lock).
  """
  phases = _Phases()
  configlib.validate(config)
  folds, run = configlib.fold_list(config), rundir.RunDir(workdir)
  for k in folds:
    run.check_run(config, k)
  set_compilation_cache(config.compilation_cache_dir)
  parallel.maybe_initialize_distributed(config.distributed)
  fold_map = parallel.resolve_fold_map(config.fold_map, len(folds))
  mesh = parallel.make_mesh(parallel.fold_axis_size(len(folds), jax.device_count(), fold_map))
  eval_mesh = parallel.make_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  parallel.check_batch_size(config.eval_batch_size, eval_mesh)
  weights = load_weights(config)
  with run.lock(jax.process_index()):
    for k in folds:
      run.check_run(config, k)  # again under the lock: another run may have recorded in between
    samples = sources.load_train(config)
    return _train(config, run, (mesh, eval_mesh, fold_map), samples, pseudo_data(config, run), weights,
                  phases)


def _train(config, run: rundir.RunDir, meshes, samples, pseudo_arrays, weights, phases: "_Phases"
           ) -> Dict[int, Dict[str, Any]]:
  """The training loop: set-up, then per epoch run the epoch, end it per fold, write the records."""
  mesh, eval_mesh, fold_map = meshes
  group = foldgroup.FoldGroup(config, run, samples)
  logging.info("%d fold(s) on %d devices (mesh %s, fold_map %s)", len(group.folds), mesh.devices.size,
               dict(mesh.shape), fold_map)
  data = _device_data(samples, pseudo_arrays, mesh)
  phases.done("data")
  model = models.from_config(config)
  initial, step_key = _initial_state(config, model, mesh, weights)
  phases.done("init")
  state = _restored_state(config, group, initial, mesh)
  phases.done("restore")
  group.record_configs()
  if group.todo:
    runner = epochs.EpochRunner(config, group.todo, data, len(pseudo_arrays[0]), step_key, mesh, fold_map,
                                on_compile=lambda: phases.done("compile"))
    predictor = inference.Predictor(model.apply, eval_mesh, config.eval_batch_size, config.input_size)
    writer = records.MetricsWriter(run, [f.index for f in group.todo], group.total)
    unstack = _unstacker(len(group.todo), eval_mesh)
    for epoch in tqdm.tqdm(range(group.start_epoch, group.total), desc=_progress_name(group.todo),
                           initial=group.start_epoch, total=group.total, disable=None, unit="epoch"):
      t_epoch, training = time.perf_counter(), group.training(epoch)
      state, metrics = runner.run(state, epoch, training)
      seconds, fold_states = time.perf_counter() - t_epoch, unstack(state)
      for f, on, fold_state, fold_metrics in zip(group.todo, training, fold_states, metrics):
        if on:
          record = _epoch_record(config, f, epoch, fold_metrics, seconds, phases.first_record(f.index))
          validate = _validation(config, epoch, predictor, f)
          group.end_epoch(f, epoch, fold_state, record, validate)
          record["epoch_seconds"] = time.perf_counter() - t_epoch
          writer.write(f.index, f.history)
      del fold_states
    writer.close()
  group.close()
  return group.summary()


class _Phases:
  """Wall time of the start-up phases (data, init, restore, compile), logged once and kept in the first
  history line each fold writes in this process."""

  def __init__(self):
    self.t0 = self._last = time.perf_counter()
    self.seconds: Dict[str, float] = {}
    self._recorded = set()

  def done(self, name: str) -> None:
    now = time.perf_counter()
    self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
    self._last = now

  def summary(self) -> Dict[str, float]:
    return dict(self.seconds, first_step=self._last - self.t0)

  def first_record(self, fold: int) -> Optional[Dict[str, float]]:
    """The summary, for the first record of `fold` in this process (logged with the first); else None."""
    if fold in self._recorded:
      return None
    if not self._recorded:
      startup = self.summary()
      logging.info("start-up %.1f s: %s", startup["first_step"],
                   ", ".join(f"{k} {v:.1f} s" for k, v in startup.items() if k != "first_step"))
    self._recorded.add(fold)
    return self.summary()


def set_compilation_cache(path: str) -> None:
  """Turns on JAX's persistent compilation cache in `path` ("" leaves it off): a second start of the
  same program loads its executables instead of compiling them."""
  if path:
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))


def _device_data(samples, pseudo_arrays, mesh) -> Dict[str, jax.Array]:
  """Every training sample, then the pseudo-labelled test tiles, replicated on the devices once:
  {"image", "mask"} (N,101,101) uint8. Epochs send only rows into them."""
  pseudo_images, pseudo_masks = pseudo_arrays
  return parallel.replicate({"image": np.concatenate([samples.images, pseudo_images]),
                             "mask": np.concatenate([samples.masks, pseudo_masks])}, mesh)


def _initial_state(config, model, mesh, weights: Dict[str, Any]):
  """(initial train state, step key), replicated: one compiled initialisation from config.seed, then
  the ImageNet encoder (config.pretrained) or the original solution's weights (config.init_from)."""
  tx = schedules.make_optimizer(config, steps_per_epoch=1)
  init_key, step_key = jax.random.split(jax.random.key(config.seed))
  state = jax.jit(functools.partial(steps.create_train_state, model, tx, image_size=config.input_size,
                                    ema_decay=config.ema_decay),
                  out_shardings=parallel.replicated(mesh),
                  compiler_options=models.init_compiler_options())(parallel.replicate(init_key, mesh))
  state = with_weights(state, weights)
  if state.ema is not None:  # the average starts at the weights training starts from
    state = state.replace(ema=steps.eval_variables(state.replace(ema=None)))
  return parallel.replicate(state, mesh), parallel.replicate(step_key, mesh)


def _restored_state(config, group: foldgroup.FoldGroup, initial, mesh):
  """The stacked (leading fold axis) state of the folds still to train: each fold's restored state, or
  the initial state with an optimiser that knows the fold's steps per epoch."""
  repl = parallel.replicated(mesh)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl), initial)
  restored = group.restore(abstract)
  if not group.todo:
    return None
  states = []
  for f, state in zip(group.todo, restored):
    if state is None:
      fold_init = jax.jit(schedules.make_optimizer(config, f.steps).init, out_shardings=repl)
      state = initial.replace(opt_state=fold_init(initial.params))
    states.append(parallel.replicate(state, mesh))
  stack = jax.jit(lambda *trees: jax.tree.map(lambda *xs: jnp.stack(xs), *trees),
                  out_shardings=parallel.fold_sharded(mesh))
  return stack(*states)


def _unstacker(n_folds: int, mesh):
  """The stacked state -> a list of each fold's state, replicated on `mesh` (for validation and saving)."""
  return jax.jit(lambda tree: [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(n_folds)],
                 out_shardings=parallel.replicated(mesh))


def _progress_name(folds) -> str:
  return f"fold{'s' * (len(folds) > 1)} {','.join(str(f.index) for f in folds)}"


def _epoch_record(config, f: foldgroup.Fold, epoch: int, metrics, seconds: float, startup) -> Dict[str, Any]:
  """A fold's epoch record before validation: the means of its step metrics, where the epoch sits in the
  schedule, throughput, and the start-up phases on the first record this process writes for the fold."""
  record = records.epoch_record(metrics, f.index, epoch, epoch * f.steps)
  record.update(epoch=epoch, cycle=schedules.cycle_of_epoch(epoch, config.warmup_epochs, config.cycle_len),
                seg_loss=epochs.seg_loss_of_epoch(config, epoch), seconds=seconds,
                images_per_s=f.steps * config.batch_size / seconds)
  if startup is not None:
    record["startup"] = startup
  return record


def _validation(config, epoch: int, predictor: inference.Predictor, f: foldgroup.Fold):
  """variables -> validation metrics of fold f after this epoch, or None when the epoch is not validated."""
  if not schedules.is_eval_epoch(epoch, warmup_epochs=config.warmup_epochs, cycle_len=config.cycle_len,
                                 eval_start=config.eval_start, eval_every=config.eval_every):
    return None
  return functools.partial(predictor.validate, images=f.valid_images, masks=f.valid_masks)


FLAGS = flags.FLAGS


def define_flags() -> None:
  """Command-line flags (defined only when run as a program, so the module stays importable)."""
  config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).", lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory of this model's runs (one subfolder per fold).")
  flags.mark_flags_as_required(["config", "workdir"])


def main(argv) -> Dict[int, Dict[str, Any]]:
  del argv
  return train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  # OSError: a record the disk cannot take (e.g. ENOSPC writing history.jsonl), named in one line.
  cli.run(main, define_flags, prog="salt_jax.train", errors=(OSError,))
