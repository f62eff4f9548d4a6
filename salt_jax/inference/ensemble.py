"""Cycle-voting ensembles, out-of-fold evaluation and Kaggle submissions (SPEC 7.2, 7.4).

    python -m salt_jax.ensemble --workdirs=runs/model_50,runs/model_101A --out=submission.csv

Per model, every snapshot's binary test mask votes (the mean over all its folds and cycles); the models'
vote fractions are averaged with equal weight and binarised at >= 0.5. `--mode=prob` averages
sigmoid(logit - threshold) instead (needs `predict --save_logits`). The same voting over each fold's
validation predictions gives the out-of-fold mAP of every model and of the ensemble.
"""
import pathlib
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from absl import flags, logging

from salt_jax import errors, fileio, geometry, metrics, viz
from salt_jax.data import kaggle, sources, submission
from salt_jax.data.submission import Submission
from salt_jax.inference import breakdown, predict
from salt_jax.workdir import rundir

MODES = ("vote", "prob")
SALT_AT = 0.5  # the vote fraction from which a pixel is salt (ties are salt)


def is_salt(fraction: np.ndarray) -> np.ndarray:
  """The ensemble's decision on vote fractions of any shape: salt where at least half the vote says so."""
  return fraction >= SALT_AT


class Vote:
  """The ensemble's vote over arrays of one shape (the pixels of sections, or tiles): each model's mean
  over its snapshots' scores (binary masks, or probabilities), then the equal-weight mean over models.
  NaN scores (pixels a snapshot did not compute) stay NaN. Holds one model's sum and the total."""

  def __init__(self):
    self._total: Optional[np.ndarray] = None
    self._model: Optional[np.ndarray] = None
    self._models = self._snapshots = 0

  def add_snapshot(self, scores: np.ndarray) -> None:
    """Adds one snapshot's (...) scores to the model being voted."""
    if self._model is None:
      self._model = scores.astype(np.float32)
    else:
      self._model += scores  # float32, whatever the scores' type
    self._snapshots += 1

  def end_model(self) -> None:
    """Closes the model being voted: its snapshots' mean joins the models' equal-weight mean."""
    if not self._snapshots:
      raise ValueError("a model votes with at least one snapshot")
    mean = self._model / np.float32(self._snapshots)
    if self._total is None:
      self._total = mean
    else:
      self._total += mean
    self._models += 1
    self._model, self._snapshots = None, 0

  def add_model(self, snapshot_scores: Iterable[np.ndarray]) -> None:
    """One model's vote, its snapshots' scores given one at a time."""
    for scores in snapshot_scores:
      self.add_snapshot(scores)
    self.end_model()

  def fraction(self) -> np.ndarray:
    """(...) float32: the equal-weight mean over the models of their snapshot means."""
    return self._total / np.float32(self._models)


class Voter(NamedTuple):
  """One snapshot that votes: its workdir, fold, cycle and snapshot folder."""
  workdir: str
  fold: int
  cycle: int
  path: pathlib.Path


def voters(workdirs: Sequence[str], kind: str = "max_map", folds: Optional[Sequence[int]] = None
           ) -> List[List[Voter]]:
  """Per workdir (one model each), its `kind` snapshots of the listed folds (None: all), sorted by (fold,
  cycle): who votes, for `segment` and for the predictions `ensemble` reads. WorkdirError for a workdir
  without one; errors.BadInput for a workdir listed twice."""
  resolved = [pathlib.Path(wd).resolve() for wd in workdirs]
  twice = [wd for k, wd in enumerate(workdirs) if resolved[k] in resolved[:k]]
  if twice:
    raise errors.BadInput(f"--workdirs lists {twice[0]} twice (each workdir is one model's vote)")
  found = []
  for wd in workdirs:
    run = rundir.RunDir(wd)
    mine = [Voter(str(wd), f, c, p) for f, c, p in run.snapshots(kind) if folds is None or f in folds]
    if not mine:
      which = f" of folds {list(folds)}" if folds is not None else ""
      raise rundir.WorkdirError(f"no {kind} snapshots{which} in {wd}; train a fold first")
    found.append(mine)
  return found


def prediction_files(workdir, kind: str = "max_map") -> List[pathlib.Path]:
  """Every snapshot prediction of a workdir; an absent set is an error (rundir.RunDir.prediction_files)."""
  return rundir.RunDir(workdir).prediction_files(kind)


def snapshot_scores(pred: Dict, mode: str, split: str = "test") -> np.ndarray:
  """One snapshot's votes on its test (or "valid") tiles: binary masks (vote) or sigmoid(logit - thr)
  (prob), float32 (N,101,101)."""
  if mode == "vote":
    return pred[f"{split}_masks"].astype(np.float32)
  if f"{split}_logits" not in pred:
    raise errors.BadInput("probability averaging needs logits: run predict with --save_logits")
  z = pred[f"{split}_logits"].astype(np.float32) - pred["meta"]["threshold"]
  return 1.0 / (1.0 + np.exp(-z))


class Votes:
  """Running sum of per-tile scores and how many snapshots scored each tile, over a growing id list.

  Snapshots usually all predict the whole test set; with the README's pseudo-label protocol a model
  predicts only the other test half, so a tile's mean is over the snapshots that predicted it.
  """

  def __init__(self):
    self.ids = np.zeros((0,), dtype=object)
    self.total = np.zeros((0, *geometry.TILE_SHAPE), np.float32)
    self.count = np.zeros((0,), np.int64)
    self._index: Dict[str, int] = {}

  def add(self, ids: np.ndarray, scores: np.ndarray) -> None:
    new = [i for i in ids if i not in self._index]
    if new:
      self._index.update({i: len(self.ids) + k for k, i in enumerate(new)})
      self.ids = np.concatenate([self.ids, np.asarray(new, dtype=object)])
      self.total = np.concatenate([self.total, np.zeros((len(new), *geometry.TILE_SHAPE), np.float32)])
      self.count = np.concatenate([self.count, np.zeros(len(new), np.int64)])
    rows = np.fromiter((self._index[i] for i in ids), np.int64, len(ids))
    self.total[rows] += scores
    self.count[rows] += 1

  def mean(self) -> np.ndarray:
    """(N,101,101) mean score per tile over the snapshots that predicted it."""
    return self.total / self.count[:, None, None]


def model_vote(files: Sequence[pathlib.Path], mode: str = "vote") -> Tuple[np.ndarray, np.ndarray]:
  """(test ids (N,), mean vote of the model's snapshots (N,101,101) float32) for one model."""
  votes = Votes()
  for path in files:
    pred = predict.load_prediction(path)
    votes.add(pred["test_ids"], snapshot_scores(pred, mode))
  return votes.ids, votes.mean()


def combine_models(model_votes: Sequence[Tuple[np.ndarray, np.ndarray]]) -> Submission:
  """Equal-weight mean over models of their vote fractions ((ids (N,), votes (N,101,101)) per model; per
  tile, over the models that predicted it), binarised at >= 0.5 (ties are salt)."""
  votes = Votes()
  for ids, vote in model_votes:
    votes.add(ids, vote)
  return Submission(votes.ids, is_salt(votes.mean()))


def oof_votes(files: Sequence[pathlib.Path], mode: str = "vote") -> Dict[int, Dict]:
  """Per fold: validation ids, vote fraction (or mean probability) over that fold's cycles (Votes), and
  per-snapshot mAPs. Every cycle of a fold validates the same tiles."""
  by_fold: Dict[int, Tuple[Votes, List[float]]] = {}
  for path in files:
    pred = predict.load_prediction(path)
    fold = int(pred["meta"]["fold"])
    votes, maps = by_fold.setdefault(fold, (Votes(), []))
    if maps and not np.array_equal(votes.ids, pred["valid_ids"]):
      raise rundir.WorkdirError(f"{path}: validation ids differ between cycles of fold {fold}")
    votes.add(pred["valid_ids"], snapshot_scores(pred, mode, "valid"))
    maps.append(pred["meta"]["val_map"])
  return {fold: {"ids": votes.ids, "vote": votes.mean(), "maps": maps}
          for fold, (votes, maps) in by_fold.items()}


class FoldVote(NamedTuple):
  """One fold's vote over every model's snapshots of that fold: validation and test masks (>= 0.5 of the
  votes), and the test tiles' mean confidence over the snapshots that recorded one (predict.confidence;
  NaN where none did)."""
  valid: Submission
  test: Submission
  test_confidence: np.ndarray


def fold_votes(workdirs: Sequence[str], kind: str = "max_map") -> Dict[int, FoldVote]:
  """{fold: FoldVote}: per fold, the snapshots of that fold in all `workdirs` vote. Each fold's models saw
  none of its validation tiles, so these votes (and rules applied to them with the fold's tiles unknown)
  are out of fold, and the test votes are free of the fold's validation labels."""
  by_fold: Dict[int, List[pathlib.Path]] = {}
  for wd in workdirs:
    for path in prediction_files(wd, kind):
      by_fold.setdefault(int(predict.prediction_meta(path)["fold"]), []).append(path)
  out = {}
  for fold, paths in sorted(by_fold.items()):  # one fold's predictions in memory at a time
    valid, test = Votes(), Votes()
    conf_sum: Dict[str, float] = {}
    conf_n: Dict[str, int] = {}
    for path in paths:
      pred = predict.load_prediction(path)
      valid.add(pred["valid_ids"], snapshot_scores(pred, "vote", "valid"))
      test.add(pred["test_ids"], snapshot_scores(pred, "vote"))
      for i, c in zip(pred["test_ids"], pred.get("test_confidence", ())):
        conf_sum[i] = conf_sum.get(i, 0.0) + float(c)
        conf_n[i] = conf_n.get(i, 0) + 1
    confidence = np.array([conf_sum[i] / conf_n[i] if i in conf_n else np.nan for i in test.ids], np.float32)
    out[fold] = FoldVote(Submission(valid.ids, is_salt(valid.mean())),
                         Submission(test.ids, is_salt(test.mean())),
                         confidence)
  return out


def model_oof(workdir, kind: str = "max_map", mode: str = "vote"
              ) -> Tuple[Dict[int, Dict], np.ndarray, np.ndarray]:
  """One model's out-of-fold cycle votes: (per-fold entries of oof_votes, ids (N,), votes (N,101,101))."""
  folds = oof_votes(prediction_files(workdir, kind), mode)
  return (folds, np.concatenate([folds[f]["ids"] for f in sorted(folds)]),
          np.concatenate([folds[f]["vote"] for f in sorted(folds)]))


def oof_masks(workdirs: Sequence[str], kind: str = "max_map", mode: str = "vote") -> Submission:
  """Out-of-fold ensemble masks of the validation tiles: per model the cycle vote of each fold's
  validation tiles, then the equal-weight model vote over the models that validated each tile, as for the
  test set."""
  return combine_models([model_oof(wd, kind, mode)[1:] for wd in workdirs])


def oof_table(workdirs: Sequence[str], truth_by_id: Dict[str, np.ndarray], kind: str = "max_map",
              mode: str = "vote") -> pd.DataFrame:
  """Out-of-fold mAP of each model's cycle vote (mode "prob": mean probability) per fold and pooled, and
  of the equal-weight ensemble (oof_masks: with pseudo-label parts validated on different folds, over
  their union)."""
  truth = lambda ids: np.stack([truth_by_id[i] for i in ids])
  rows, model_votes = [], []
  for wd in workdirs:
    folds, ids, vote = model_oof(wd, kind, mode)
    model_votes.append((ids, vote))
    row = {"model": pathlib.Path(wd).name, "snapshots": sum(len(v["maps"]) for v in folds.values()),
           "mean snapshot mAP": float(np.mean([m for v in folds.values() for m in v["maps"]]))}
    for f in sorted(folds):
      row[f"fold {f}"] = metrics.kaggle_map(is_salt(folds[f]["vote"]), truth(folds[f]["ids"]))
    row["OOF mAP"] = metrics.kaggle_map(is_salt(vote), truth(ids))
    row["images"] = len(ids)
    rows.append(row)
  if len(workdirs) > 1:
    sub = combine_models(model_votes)
    rows.append({"model": "ensemble", "snapshots": sum(r["snapshots"] for r in rows),
                 "OOF mAP": metrics.kaggle_map(sub.masks, truth(sub.ids)), "images": len(sub)})
  return pd.DataFrame(rows)


def ensemble(workdirs: Sequence[str], out: str, source: sources.Source, *, mode: str = "vote",
             kind: str = "max_map", save_png: Optional[str] = None, oof: bool = True,
             oof_csv: Optional[str] = None, report_png: Optional[str] = None) -> Optional[pd.DataFrame]:
  """Votes the models' test predictions into the submission `out` and returns the out-of-fold table (its
  attrs["breakdown"]: the out-of-fold ensemble's table by coverage bucket).

  `source` gives sample_submission.csv's ids (checked before any vote), the train masks that score the
  out-of-fold votes and the test images of `save_png`. With `oof`, the out-of-fold ensemble's breakdown by
  coverage bucket is printed too (salt_jax.breakdown), and drawn to `report_png` when given.
  """
  if mode not in MODES:
    raise errors.BadInput(f"mode must be one of {MODES}, got {mode!r}")
  for what, path in (("--out", out), ("--oof_csv", oof_csv), ("--save_png", save_png), ("--report", report_png)):
    if path:
      fileio.check_writable(path, what)  # before the voting, not after it
  sample = source.test_ids().tolist()  # fail before voting: missing, empty or unreadable
  model_votes = []
  for wd in workdirs:
    files = prediction_files(wd, kind)
    model_votes.append(model_vote(files, mode))
    logging.info("%s: %d snapshots vote", wd, len(files))
  sub = combine_models(model_votes)
  submission.write_submission(out, sub, sample)
  logging.info("wrote %s (%d ids, %d with salt)", out, len(sub), int(sub.masks.any(axis=(1, 2)).sum()))
  table = None
  if oof:
    train = source.train()
    truth = dict(zip(train.ids, train.masks))
    table = oof_table(workdirs, truth, kind, mode)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    table.attrs["breakdown"] = report(oof_masks(workdirs, kind, mode), truth, report_png)
  if oof_csv:
    oof_sub = oof_masks(workdirs, kind, mode)
    submission.write_submission(oof_csv, oof_sub)
    logging.info("wrote the out-of-fold masks of %d validation tiles to %s", len(oof_sub), oof_csv)
  if save_png:
    save_grid(save_png, sub, source.test())
  return table


def report(oof: Submission, truth_by_id, png: Optional[str] = None) -> pd.DataFrame:
  """Prints (and draws to `png`) where the out-of-fold ensemble's points go; returns the bucket table."""
  table = breakdown.coverage_table(oof.masks, np.stack([truth_by_id[i] for i in oof.ids]))
  print(breakdown.format_summary(table, "out-of-fold ensemble"))
  if png:
    breakdown.draw(table, png)
    logging.info("wrote %s", png)
  return table


def save_grid(path: str, sub: Submission, test: kaggle.Samples, n: int = 32) -> None:
  """A PNG grid of `n` seeded random test tiles of the submission with their masks."""
  pick = np.random.default_rng(0).choice(len(sub), size=min(n, len(sub)), replace=False)
  ids = sub.ids[pick]
  lookup = dict(zip(test.ids, test.images))
  grid = viz.mask_grid(np.stack([lookup[i] for i in ids]), pred_masks=sub.masks[pick], labels=ids)
  viz.save_png(path, grid)
  logging.info("wrote %s", path)


FLAGS = flags.FLAGS


def define_flags() -> None:
  """Command-line flags (defined only when run as a program, so the module stays importable)."""
  flags.DEFINE_list("workdirs", None, "One workdir per model; all its folds and cycles vote.")
  flags.DEFINE_string("out", None, "Submission CSV to write.")
  flags.DEFINE_string("data_dir", "../shared/tgs", "Kaggle data folder (sample_submission.csv, train masks).")
  flags.DEFINE_string("cache_dir", None, "Cache of the decoded data (salt_jax.data.kaggle; default: none).")
  flags.DEFINE_enum("mode", "vote", list(MODES), "vote: cycle voting of binary masks; prob: mean "
                    "probability.")
  flags.DEFINE_enum("kind", "max_map", list(rundir.SNAPSHOT_KINDS), "Which snapshots' predictions.")
  flags.DEFINE_string("save_png", None, "Also draw a grid of test tiles with their predicted masks.")
  flags.DEFINE_bool("oof", True, "Print the out-of-fold mAP table.")
  flags.DEFINE_string("oof_csv", None, "Also write the out-of-fold ensemble masks (validation ids) as a CSV.")
  flags.DEFINE_string("report", None, "Also draw the out-of-fold breakdown by coverage bucket to this PNG.")
  flags.mark_flags_as_required(["workdirs", "out"])


def main(argv) -> Optional[pd.DataFrame]:
  del argv
  return ensemble(FLAGS.workdirs, FLAGS.out, kaggle.DataSource(FLAGS.data_dir, FLAGS.cache_dir),
                  mode=FLAGS.mode, kind=FLAGS.kind, save_png=FLAGS.save_png, oof=FLAGS.oof,
                  oof_csv=FLAGS.oof_csv, report_png=FLAGS.report)
