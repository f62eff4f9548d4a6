"""Kaggle mAP of a fold's validation tiles before and after each jigsaw rule (SPEC 8.3), without leakage.

The fold's validation ids are treated as unknown tiles: their masks come from `--predictions` (a submission-
format CSV id,rle_mask holding at least those ids), never from the ground truth, which is used only to score.
The other train tiles are known. Optional `--test_predictions` adds the real test tiles as further unknown
tiles.

  python scripts/jigsaw_rule_effect.py --data_dir=../shared/tgs --mosaics=mosaics.csv --folds=folds.csv \
      --fold=0 --predictions=fold0_valid.csv [--test_predictions=sub.csv] [--max_mosaic_id=158] [--out=x.csv]
"""
import pandas as pd
from absl import flags

from salt_jax import cli
from salt_jax.data import kaggle, submission
from salt_jax.jigsaw import effect

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("data_dir", None, "Kaggle data folder.")
  flags.DEFINE_string("cache_dir", None, "Optional npz cache of the decoded PNGs.")
  flags.DEFINE_string("mosaics", None, "CSV id,mosaic_id,x,y (jigsaw solve).")
  flags.DEFINE_string("folds", None, "CSV id,fold (salt_jax.data.folds).")
  flags.DEFINE_integer("fold", None, "The validation fold to measure on.")
  flags.DEFINE_string("predictions", None, "Submission-format CSV with the fold's validation ids.")
  flags.DEFINE_string("test_predictions", None, "Optional submission CSV for the test tiles.")
  flags.DEFINE_integer("max_mosaic_id", 158, "-1 = all mosaics.")
  flags.DEFINE_string("out", None, "Optional CSV of the table.")
  flags.mark_flags_as_required(["data_dir", "mosaics", "folds", "fold", "predictions"])


def main(argv) -> pd.DataFrame:
  """Prints (and with --out writes) the before/after table of fold_rule_effect; returns it."""
  del argv
  table, in_mosaics = effect.fold_rule_effect(
      kaggle.DataSource(FLAGS.data_dir, FLAGS.cache_dir), FLAGS.mosaics, FLAGS.folds, FLAGS.fold,
      FLAGS.predictions, test_predictions=FLAGS.test_predictions,
      max_mosaic_id=None if FLAGS.max_mosaic_id < 0 else FLAGS.max_mosaic_id)
  with pd.option_context("display.width", 140, "display.max_columns", 20):
    print(f"fold {FLAGS.fold}: {table['n_tiles'].iloc[0]} validation tiles, {in_mosaics} of them in mosaics")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
  if FLAGS.out:
    submission.write_csv_atomic(table, FLAGS.out)
  return table


if __name__ == "__main__":
  cli.run(main, define_flags, prog="scripts/jigsaw_rule_effect.py")
