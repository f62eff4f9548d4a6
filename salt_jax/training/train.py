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

from salt_jax import configlib, geometry, models, parallel, schedules, weights
from salt_jax.data import pseudo, sources
from salt_jax.inference import tta
from salt_jax.training import epochs, foldgroup, records, steps
from salt_jax.workdir import rundir


def pseudo_data(s, run: rundir.RunDir):
  """(images, masks) of the pseudo-labelled test tiles (the pseudo section's pseudo_split half, or all; at
  most pseudo_tiles of them), or empty arrays without a pseudo CSV. s: the config's sections."""
  p = s.pseudo
  if not p.pseudo_csv:
    empty = np.zeros((0, *geometry.TILE_SHAPE), np.uint8)
    return empty, empty
  test = sources.of(s.source).test()
  split_csv = run.pseudo_split_csv(p)
  half = pseudo.load_or_make_split(split_csv, test.ids, p.pseudo_seed, save=False)
  chosen = np.flatnonzero(half == p.pseudo_split) if p.pseudo_split >= 0 else np.arange(len(half))
  confidence = (pseudo.read_confidence(p.pseudo_confidence_csv, test.ids[chosen])
                if p.pseudo_confidence_csv else None)
  chosen = chosen[pseudo.keep(len(chosen), p.pseudo_tiles, confidence, p.pseudo_seed)]
  masks = pseudo.read_pseudo_masks(p.pseudo_csv, test.ids[chosen])
  if not split_csv.exists():  # saved once the pseudo masks were read: a refused start writes nothing
    pseudo.save_split(split_csv, test.ids, half)
  logging.info("pseudo labels: %d test tiles (split %d) from %s, p=%.2f", len(chosen), p.pseudo_split,
               p.pseudo_csv, p.pseudo_prob)
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
  s, folds, run = configlib.sections(config), configlib.fold_list(config), rundir.RunDir(workdir)
  for k in folds:
    run.check_run(config, k)
  set_compilation_cache(s.runtime.compilation_cache_dir)
  parallel.maybe_initialize_distributed(s.runtime.distributed)
  fold_map = parallel.resolve_fold_map(s.runtime.fold_map, len(folds))
  mesh = parallel.make_mesh(parallel.fold_axis_size(len(folds), jax.device_count(), fold_map))
  eval_mesh = parallel.make_mesh()
  parallel.check_batch_size(s.optim.batch_size, mesh)
  parallel.check_batch_size(s.eval.eval_batch_size, eval_mesh)
  start_weights = weights.load(s)
  with run.lock(jax.process_index()):
    for k in folds:
      run.check_run(config, k)  # again under the lock: another run may have recorded in between
    samples = sources.of(s.source).train()
    return _train(config, run, (mesh, eval_mesh, fold_map), samples, pseudo_data(s, run), start_weights,
                  phases)


def _train(config, run: rundir.RunDir, meshes, samples, pseudo_arrays, start_weights, phases: "_Phases"
           ) -> Dict[int, Dict[str, Any]]:
  """The training loop: set-up, then per epoch run the epoch, end it per fold, write the records."""
  mesh, eval_mesh, fold_map = meshes
  s = configlib.sections(config)
  group = foldgroup.FoldGroup(s, configlib.fold_list(config), run, samples)
  logging.info("%d fold(s) on %d devices (mesh %s, fold_map %s)", len(group.folds), mesh.devices.size,
               dict(mesh.shape), fold_map)
  data = _device_data(samples, pseudo_arrays, mesh)
  phases.done("data")
  model = models.build(**s.model)
  initial, step_key = _initial_state(s, model, mesh, start_weights)
  phases.done("init")
  state = _restored_state(s.optim, group, initial, mesh)
  phases.done("restore")
  if jax.process_index() == 0:  # the folds' config.json, after check_run, under the lock
    for f in group.folds:
      run.record_run(config, f.index)
  if group.todo:
    runner = epochs.EpochRunner(s, group.todo, data, len(pseudo_arrays[0]), step_key, mesh, fold_map,
                                on_compile=lambda: phases.done("compile"))
    predictor = tta.Predictor(model.apply, eval_mesh, s.eval.eval_batch_size, s.data.input_size)
    writer = records.MetricsWriter(run, [f.index for f in group.todo], group.total)
    unstack = _unstacker(len(group.todo), eval_mesh)
    for epoch in tqdm.tqdm(range(group.start_epoch, group.total), desc=_progress_name(group.todo),
                           initial=group.start_epoch, total=group.total, disable=None, unit="epoch"):
      t_epoch, training = time.perf_counter(), group.training(epoch)
      state, metrics = runner.run(state, epoch, training)
      seconds, fold_states = time.perf_counter() - t_epoch, unstack(state)
      for f, on, fold_state, fold_metrics in zip(group.todo, training, fold_states, metrics):
        if on:
          record = _epoch_record(s, f, epoch, fold_metrics, seconds, phases.first_record(f.index))
          validate = _validation(s, epoch, predictor, f)
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


def _initial_state(s, model, mesh, start_weights: Dict[str, Any]):
  """(initial train state, step key), replicated: one compiled initialisation from the seed, then the
  ImageNet encoder (pretrained) or every weight of init_from. s: the config's sections."""
  tx = schedules.make_optimizer(s.optim, steps_per_epoch=1)
  init_key, step_key = jax.random.split(jax.random.key(s.optim.seed))
  state = jax.jit(functools.partial(steps.create_train_state, model, tx, image_size=s.data.input_size,
                                    ema_decay=s.optim.ema_decay),
                  out_shardings=parallel.replicated(mesh),
                  compiler_options=models.init_compiler_options())(parallel.replicate(init_key, mesh))
  state = weights.merge(state, start_weights)
  if state.ema is not None:  # the average starts at the weights training starts from
    state = state.replace(ema=steps.eval_variables(state.replace(ema=None)))
  return parallel.replicate(state, mesh), parallel.replicate(step_key, mesh)


def _restored_state(optim, group: foldgroup.FoldGroup, initial, mesh):
  """The stacked (leading fold axis) state of the folds still to train: each fold's restored state, or
  the initial state with an optimiser (of the optim section) that knows the fold's steps per epoch."""
  repl = parallel.replicated(mesh)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl), initial)
  restored = group.restore(abstract)
  if not group.todo:
    return None
  states = []
  for f, state in zip(group.todo, restored):
    if state is None:
      fold_init = jax.jit(schedules.make_optimizer(optim, f.steps).init, out_shardings=repl)
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


def _epoch_record(s, f: foldgroup.Fold, epoch: int, metrics, seconds: float, startup) -> Dict[str, Any]:
  """A fold's epoch record before validation: the means of its step metrics, where the epoch sits in the
  schedule, throughput, and the start-up phases on the first record this process writes for the fold."""
  optim = s.optim
  record = records.epoch_record(metrics, f.index, epoch, epoch * f.steps)
  record.update(epoch=epoch, cycle=schedules.cycle_of_epoch(epoch, optim.warmup_epochs, optim.cycle_len),
                seg_loss=epochs.seg_loss_of_epoch(optim, s.loss.cycle_loss, epoch), seconds=seconds,
                images_per_s=f.steps * optim.batch_size / seconds)
  if startup is not None:
    record["startup"] = startup
  return record


def _validation(s, epoch: int, predictor: tta.Predictor, f: foldgroup.Fold):
  """variables -> validation metrics of fold f after this epoch, or None when the epoch is not validated."""
  if not schedules.is_eval_epoch(epoch, warmup_epochs=s.optim.warmup_epochs, cycle_len=s.optim.cycle_len,
                                 eval_start=s.eval.eval_start, eval_every=s.eval.eval_every):
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
