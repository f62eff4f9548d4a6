"""The README's picture: real validation tiles of one fold with the salt outlined, one PNG.

  python scripts/salt_mosaic.py [--workdir=runs/cpu_small] [--fold=0] [--out=docs/salt_mosaic.png]

The tiles are fold `--fold`'s validation tiles (the workdir's folds.csv, or without a workdir the split a
default config makes), `--tiles` of them spread evenly over salt coverage from the least to the most,
two of them empty. The true salt is outlined in green. With `--workdir` every snapshot of that fold votes
on the tiles as `segment` does (each tile one window: `salt_jax.load(...).tiles`), its masks are outlined
in red, each tile is labelled with its competition score, and their mAP is logged.
"""
import pathlib
import sys

import numpy as np
from absl import flags, logging

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import salt_jax  # noqa: E402
from salt_jax import cli, configlib, metrics, viz  # noqa: E402
from salt_jax.data import folds as folds_lib, kaggle  # noqa: E402
from salt_jax.workdir import rundir  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("data_dir", str(REPO.parent / "shared" / "tgs"), "The Kaggle folder.")
  flags.DEFINE_string("cache_dir", None, "Optional npz cache of the decoded tiles.")
  flags.DEFINE_string("workdir", None, "A trained workdir whose fold snapshots vote (default: truth only).")
  flags.DEFINE_integer("fold", 0, "The fold whose validation tiles are drawn.", lower_bound=0)
  flags.DEFINE_integer("tiles", 16, "How many tiles.", lower_bound=3)
  flags.DEFINE_integer("cols", 8, "Tiles per row.", lower_bound=1)
  flags.DEFINE_integer("scale", 1, "Pixels per tile pixel.", lower_bound=1)
  flags.DEFINE_string("out", str(REPO / "docs" / "salt_mosaic.png"), "The PNG written.")


def fold_assignment(train: kaggle.Samples, workdir, fold: int) -> np.ndarray:
  """(N,) fold of each training tile: the workdir's folds.csv, or the split a default config makes."""
  if workdir is not None:
    run = rundir.RunDir(workdir)
    return folds_lib.read_folds(run.folds_csv, train.ids, run.fold_config(fold).num_folds)
  defaults = configlib.base_config()
  return folds_lib.make_folds(train.ids, train.masks, defaults.num_folds, defaults.fold_seed)


def pick_tiles(masks: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
  """n of `rows` (indices into masks (N,101,101)): two empty, the rest evenly over the salt tiles sorted by
  coverage, so the picture runs from a sliver of salt to a tile full of it."""
  coverage = masks[rows].reshape(len(rows), -1).mean(1)
  empty, salt = rows[coverage == 0], rows[coverage > 0]
  salt = salt[np.argsort(coverage[coverage > 0], kind="stable")]
  chosen = salt[np.unique(np.linspace(0, len(salt) - 1, n - 2).round().astype(int))]
  return np.concatenate([empty[:2], chosen])


def main(argv) -> dict:
  del argv
  train = kaggle.load_split(FLAGS.data_dir, "train", cache_dir=FLAGS.cache_dir)
  _, valid = folds_lib.fold_split(fold_assignment(train, FLAGS.workdir, FLAGS.fold), FLAGS.fold)
  rows = pick_tiles(train.masks, valid, FLAGS.tiles)
  images, truth = train.images[rows], train.masks[rows] > 0
  pred = labels = None
  record = {"out": FLAGS.out, "tiles": len(rows), "fold": FLAGS.fold}
  if FLAGS.workdir is not None:
    pred = salt_jax.load([FLAGS.workdir], folds=[FLAGS.fold]).tiles(images).mask
    scores = metrics.kaggle_scores(pred, truth)
    labels = [f"{s:.1f}" for s in scores]
    record.update(workdir=FLAGS.workdir, map=round(float(scores.mean()), 4))
  grid = viz.mask_grid(images, pred, truth, labels, cols=FLAGS.cols, scale=FLAGS.scale)
  viz.save_png(FLAGS.out, grid)
  logging.info("%s: %d validation tiles of fold %d%s", FLAGS.out, len(rows), FLAGS.fold,
               f", mAP {record['map']:.4f} ({FLAGS.workdir})" if pred is not None else ", truth only")
  return record


if __name__ == "__main__":
  cli.run(main, define_flags, prog="scripts/salt_mosaic.py")
