"""Predict every trained snapshot of a workdir: its fold's validation tiles and all test tiles.

    python -m salt_jax.predict --workdir=runs/model_50 [--kind=max_map] [--save_logits]
    python -m salt_jax.predict --workdir=runs/original_34 --config=configs/model_34.py \
        --config.init_from=fold_0/Cycle_0_Lsoftmax_maxMap_G.pth --config.fold=0 [--cycle=0]

For each fold and cycle snapshot (SPEC 7.1): flip-TTA logits on the fold's validation tiles re-derive
the best logit threshold (and report the mAP), then the test tiles are binarised at that threshold
(logit > thr, as in validation; the original used >= for test, SPEC 10.7). One compact `.npz` per
snapshot under <workdir>/predictions/<kind>/: bit-packed masks, ids, the threshold and metrics, and
optionally float16 logits. Finished snapshots are skipped unless --overwrite.

With `--config` and `--config.init_from=<file.pth>`, a checkpoint of the original PyTorch solution
(models.convert.load_original) is predicted instead, as snapshot (config.fold, --cycle) of the workdir: the
config is recorded there like a training run's, so `ensemble` votes it with the workdir's other snapshots.
"""
import contextlib
import json
import time
import zipfile
import zlib
from typing import Any, Dict, Iterator, List, Optional, Tuple

import jax
import numpy as np
from absl import flags, logging
from ml_collections import config_flags

from salt_jax import configlib, errors, fileio, models, parallel, weights
from salt_jax.data import kaggle, pseudo, rle, sources
from salt_jax.inference import gating, tta
from salt_jax.workdir import checkpoints, rundir


def confidence(logits: np.ndarray, threshold: float) -> np.ndarray:
  """(N,) float32 per-tile confidence of (N,101,101) logits: the pixels' mean |2 sigmoid(logit - thr) - 1|
  (1: every pixel certain, 0: every pixel on the threshold)."""
  z = np.asarray(logits, np.float32) - np.float32(threshold)
  return np.abs(np.tanh(z / 2)).mean(axis=(1, 2))  # 2 sigmoid(z) - 1 = tanh(z / 2)


def save_prediction(path, *, meta: Dict[str, Any], valid_ids, valid_masks, test_ids, test_masks,
                    valid_logits=None, test_logits=None, valid_confidence=None, test_confidence=None) -> None:
  """Writes one snapshot's predictions atomically (temporary file + rename)."""
  arrays = dict(meta=np.asarray(json.dumps(meta)), valid_ids=np.asarray(valid_ids),
                valid_masks=rle.pack_masks(valid_masks), test_ids=np.asarray(test_ids),
                test_masks=rle.pack_masks(test_masks))
  for name, values in (("valid_confidence", valid_confidence), ("test_confidence", test_confidence)):
    if values is not None:
      arrays[name] = np.asarray(values, np.float32)
  if valid_logits is not None:
    arrays["valid_logits"] = valid_logits.astype(np.float16)
  if test_logits is not None:
    arrays["test_logits"] = test_logits.astype(np.float16)
  with fileio.atomic_path(path) as tmp:
    np.savez_compressed(tmp, **arrays)


# What reading a damaged prediction file raises: truncated (BadZipFile, EOFError), a damaged member
# (zlib.error, BadZipFile's CRC check), a missing member (KeyError) or metadata (ValueError for bad JSON).
_UNREADABLE = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error)


@contextlib.contextmanager
def _prediction_npz(path) -> Iterator[Any]:
  """The open `.npz` of a prediction file, the one way every reader opens one: a file that cannot be read
  (truncated, damaged, not an npz) is a WorkdirError naming it, also when the block fails reading it."""
  try:
    with np.load(path, allow_pickle=False) as z:
      yield z
  except _UNREADABLE as e:
    raise rundir.WorkdirError(f"cannot read prediction file {path} ({errors.one_line(e)}); run "
                              "salt_jax.predict with --overwrite to write it again") from e


def load_prediction(path) -> Dict[str, Any]:
  """{'meta', 'valid_ids', 'valid_masks' (N,101,101), 'test_ids', 'test_masks', optional logits and
  per-tile confidences (N,)}."""
  with _prediction_npz(path) as z:
    out = {k: z[k] for k in z.files}
    out["meta"] = json.loads(str(out["meta"]))
    out["valid_masks"] = rle.unpack_masks(out["valid_masks"])
    out["test_masks"] = rle.unpack_masks(out["test_masks"])
  return out


def has_logits(path) -> bool:
  """Whether a prediction file keeps its logits (predict --save_logits)."""
  with _prediction_npz(path) as z:
    return "test_logits" in z.files


def test_rows(pseudo_section, run: rundir.RunDir, test_ids) -> np.ndarray:
  """Which test tiles a snapshot predicts: all (the original), or, for a pseudo-label model with
  `pseudo_predict_other_half` (the fold config's pseudo section), only the half it was not trained on (the
  README's protocol, SPEC 9)."""
  p = pseudo_section
  if not (p.pseudo_csv and p.pseudo_predict_other_half):
    return np.arange(len(test_ids))
  half = pseudo.load_or_make_split(run.pseudo_split_csv(p), test_ids, p.pseudo_seed)
  return np.flatnonzero(half != p.pseudo_split)


def load_fold_snapshot(s, snap, mesh) -> Tuple[Any, Dict[str, Any]]:
  """(variables, metadata) of a snapshot of the network of a fold config's sections `s` (model,
  data.input_size), replicated over `mesh` (whatever devices wrote it: a fold trained on 2 GPUs predicts
  on 1)."""
  return checkpoints.load_model_snapshot(snap, s.model, s.data.input_size, parallel.replicated(mesh))


def predictor_key(s) -> Tuple:
  """What makes two folds' compiled predictors the same: the model section (options resolved) and canvas."""
  return (json.dumps(models.resolved_options(s.model), sort_keys=True), s.model.model, s.model.dtype,
          s.data.input_size)


def make_predictor(s, mesh, batch_size: Optional[int] = None) -> tta.Predictor:
  """The flip-TTA predictor of the network of sections `s` on the canvas it was trained on (batch: the
  eval section's eval_batch_size unless given)."""
  return tta.Predictor(models.build(**s.model).apply, mesh, batch_size or s.eval.eval_batch_size,
                       s.data.input_size)


class Predictors:
  """The flip-TTA predictors of the model configurations met, one per predictor_key on one mesh, so the
  snapshots (and workdirs) of one configuration share its compiled programs."""

  def __init__(self, mesh, batch_size: Optional[int] = None):
    self.mesh, self.batch_size = mesh, batch_size
    self._made: Dict[Tuple, tta.Predictor] = {}

  def __call__(self, s) -> tta.Predictor:
    """The predictor of the network of a fold config's sections `s` (make_predictor, made once)."""
    key = predictor_key(s)
    if key not in self._made:
      self._made[key] = make_predictor(s, self.mesh, self.batch_size)
    return self._made[key]


def prediction_meta(path) -> Dict[str, Any]:
  """The metadata of a prediction file (threshold, gate, val_map, ...) without unpacking its masks."""
  with _prediction_npz(path) as z:
    return json.loads(str(z["meta"]))


def predict_workdir(workdir, *, kind: str = "max_map", folds: Optional[List[int]] = None,
                    source: Optional[sources.Source] = None, batch_size: Optional[int] = None,
                    save_logits: bool = False, overwrite: bool = False) -> List[Dict[str, Any]]:
  """Predicts every snapshot of `kind` in the workdir (or of the listed folds); returns their metadata.

  Reads the data of `source` (default: each fold's config.data_dir and config.cache_dir). Holds the
  workdir's lock, so it never reads a snapshot that a training run is writing.
  """
  run = rundir.RunDir(workdir)
  snapshots = run.snapshots(kind)
  if folds is not None:
    snapshots = [s for s in snapshots if s[0] in folds]
    missing = sorted(set(folds) - {s[0] for s in snapshots})
    if missing:
      raise rundir.WorkdirError(f"no {kind} snapshots for folds {missing} in {workdir}")
  if not snapshots:
    raise rundir.WorkdirError(f"no {kind} snapshots in {workdir}; train a fold first")
  with run.lock(jax.process_index()):
    writer = _PredictionWriter(run, kind, source, batch_size, save_logits)
    return [writer(fold, cycle, snap, overwrite) for fold, cycle, snap in snapshots]


def predict_original(workdir, config, *, cycle: int = 0, kind: str = "max_map",
                     source: Optional[sources.Source] = None, batch_size: Optional[int] = None,
                     save_logits: bool = False) -> Dict[str, Any]:
  """Predicts a whole-model checkpoint of the original solution (config.init_from) as the `kind` snapshot
  (config.fold, cycle) of `workdir`; records the config there (as training would) and returns the metadata.

  Always predicts (the checkpoint file has no snapshot time to compare with).
  """
  if not config.init_from:
    raise configlib.ConfigError("predicting an original checkpoint needs --config.init_from=<file.pth>")
  configlib.validate(config)
  run = rundir.RunDir(workdir)
  run.check_run(config)
  variables = weights.torch_weights("init_from", config.init_from, config.model)  # before anything is written
  with run.lock(jax.process_index()):
    run.check_run(config)
    if jax.process_index() == 0:
      run.record_run(config)
    writer = _PredictionWriter(run, kind, source, batch_size, save_logits)
    meta = dict(fold=config.fold, cycle=cycle, model=config.model, kind=kind, init_from=str(config.init_from))
    return writer.predict(configlib.sections(config), cycle, variables, meta, str(config.init_from))


def tune_gate(eval_section, valid: tta.Outputs, truth: np.ndarray) -> Tuple[float, gating.Gate]:
  """(validation mAP, Gate) of a snapshot: the pixel threshold swept (SPEC 6.2) jointly with the empty
  handling candidates the fold config's eval section names (gate_*; none: the plain threshold)."""
  e = eval_section
  return gating.sweep(valid.logits, truth, valid.p_empty,
                      min_areas=gating.parse_candidates(e.gate_min_areas, int),
                      empty_aboves=gating.parse_candidates(e.gate_empty_above),
                      salt_belows=gating.parse_candidates(e.gate_salt_below))


class _PredictionWriter:
  """Writes the prediction files of one workdir's snapshots (Predictors: one tta.Predictor per model
  configuration), loading each data source once."""

  def __init__(self, run: rundir.RunDir, kind: str, source: Optional[sources.Source],
               batch_size: Optional[int], save_logits: bool):
    self.run, self.kind, self.source, self.batch_size, self.save_logits = (run, kind, source, batch_size,
                                                                           save_logits)
    fileio.check_writable(run.prediction_file(kind, 0, 0), "predictions")  # before predicting, not after
    self.predictors = Predictors(parallel.make_mesh(), batch_size)
    self.mesh = self.predictors.mesh
    self._data = {}

  def _load(self, source_section):
    """(train set, test set) of the source, or of the folder and cache the fold was trained with."""
    source = self.source or sources.of(source_section)
    if source not in self._data:
      self._data[source] = (source.train(), source.test())
    return self._data[source]

  def __call__(self, fold: int, cycle: int, snap, overwrite: bool) -> Dict[str, Any]:
    """Predicts one snapshot (or reads its finished predictions); returns its metadata."""
    out_path = self.run.current_prediction(self.kind, fold, cycle)
    if out_path is not None and not overwrite and (not self.save_logits or has_logits(out_path)):
      logging.info("fold %d cycle %d: already predicted (%s)", fold, cycle, out_path)
      return load_prediction(out_path)["meta"]
    s = configlib.sections(self.run.fold_config(fold))
    variables, meta = load_fold_snapshot(s, snap, self.mesh)
    return self.predict(s, cycle, variables, meta, str(snap))

  def predict(self, s, cycle: int, variables, meta: Dict[str, Any], source: str) -> Dict[str, Any]:
    """Predicts one set of variables of the network of a fold config's sections `s` as snapshot
    (s.data.fold, cycle); writes and returns the metadata (`meta` plus the re-derived threshold and
    metrics; source names the weights)."""
    fold = s.data.fold
    out_path = self.run.prediction_file(self.kind, fold, cycle)
    train_set, test = self._load(s.source)
    _, valid_idx = self.run.fold_rows(s.data, fold, train_set.ids, train_set.masks, s.optim.seed)
    predictor = self.predictors(s)
    variables = parallel.replicate(variables, self.mesh)
    t0 = time.perf_counter()
    v_images, v_masks = train_set.images[valid_idx], train_set.masks[valid_idx]
    valid = predictor.outputs(variables, v_images, v_masks, desc=f"fold {fold} cycle {cycle} valid")
    val_map, gate = tune_gate(s.eval, valid, v_masks)
    test_idx = test_rows(s.pseudo, self.run, test.ids)
    tested = predictor.outputs(variables, test.images[test_idx], desc=f"fold {fold} cycle {cycle} test")
    thr = gate.threshold
    meta = dict(meta, snapshot=source, snapshot_val_map=meta.get("val_map"),
                snapshot_threshold=meta.get("val_threshold"), threshold=float(thr), val_map=float(val_map),
                gate=gate.as_dict(), val_loss=float(np.mean(valid.losses)), seconds=time.perf_counter() - t0,
                n_valid=int(len(valid_idx)), n_test=int(len(test_idx)))
    if jax.process_index() == 0:
      save_prediction(out_path, meta=meta, valid_ids=train_set.ids[valid_idx],
                      valid_masks=gate.apply(valid.logits, valid.p_empty), test_ids=test.ids[test_idx],
                      test_masks=gate.apply(tested.logits, tested.p_empty),
                      valid_logits=valid.logits if self.save_logits else None,
                      test_logits=tested.logits if self.save_logits else None,
                      valid_confidence=confidence(valid.logits, thr), test_confidence=confidence(tested.logits, thr))
    logging.info("fold %d cycle %d (%s): validation mAP %.4f at logit threshold %+.4f (at training: %s at "
                 "%s); %d test tiles in %.1f s", fold, cycle, source, val_map, thr, meta["snapshot_val_map"],
                 meta["snapshot_threshold"], len(test_idx), meta["seconds"])
    return meta


FLAGS = flags.FLAGS


def define_flags() -> None:
  """Command-line flags (defined only when run as a program, so the module stays importable)."""
  flags.DEFINE_string("workdir", None, "A model's workdir (as given to salt_jax.train).")
  flags.DEFINE_enum("kind", "max_map", list(rundir.SNAPSHOT_KINDS), "Which per-cycle snapshots to use.")
  flags.DEFINE_list("folds", None, "Folds to predict (default: every trained fold).")
  flags.DEFINE_string("data_dir", None, "Kaggle data folder (default: the one the fold was trained on).")
  flags.DEFINE_string("cache_dir", None, "With --data_dir: cache of its decoded data (default: the fold's "
                      "data folder and cache, as trained).")
  flags.DEFINE_integer("batch_size", None, "Inference batch (default: the config's eval_batch_size).")
  flags.DEFINE_bool("save_logits", False, "Also keep float16 logits (needed for probability averaging).")
  flags.DEFINE_bool("overwrite", False, "Predict again even if a snapshot's predictions exist.")
  config_flags.DEFINE_config_file(
      "config", None, "With --config.init_from=<file.pth>: predict that checkpoint of the original solution "
      "as snapshot (config.fold, --cycle).", lock_config=True)
  flags.DEFINE_integer("cycle", 0, "The cycle a --config.init_from checkpoint is recorded as.")
  flags.mark_flags_as_required(["workdir"])


def main(argv) -> List[Dict[str, Any]]:
  """Predicts as the flags say; prints one JSON line (fold, cycle, val_map, threshold) per snapshot."""
  del argv
  common = dict(kind=FLAGS.kind, batch_size=FLAGS.batch_size, save_logits=FLAGS.save_logits,
                source=kaggle.DataSource(FLAGS.data_dir, FLAGS.cache_dir) if FLAGS.data_dir else None)
  if FLAGS.config is not None:
    results = [predict_original(FLAGS.workdir, FLAGS.config, cycle=FLAGS.cycle, **common)]
  else:
    results = predict_workdir(FLAGS.workdir, folds=[int(f) for f in FLAGS.folds] if FLAGS.folds else None,
                              overwrite=FLAGS.overwrite, **common)
  for r in results:
    print(json.dumps({k: r[k] for k in ("fold", "cycle", "val_map", "threshold") if k in r}))
  return results
