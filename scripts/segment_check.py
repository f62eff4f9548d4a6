"""Kaggle mAP of a fold's validation tiles segmented inside their whole jigsaw mosaics vs one by one.

Only the fold's snapshots segment; train tiles of the fold and test tiles are context and are never scored
(salt_jax.tools.section_check). Needs `python -m salt_jax.predict` run on the workdir first (the per-tile
masks).

  python scripts/segment_check.py --workdir=runs/model_34 --fold=0 --mosaics=mosaics.csv \
      --data_dir=../shared/tgs [--strides=101,50] [--phases=0,50] [--batch_size=16] [--out=table.csv] \
      [--tiles_out=tiles.csv]
"""
import json

import pandas as pd
from absl import app, flags

from salt_jax import cli, fileio
from salt_jax.data import kaggle, submission
from salt_jax.tools import section_check
from salt_jax.workdir import rundir

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("workdir", None, "The model's workdir (its fold's snapshots and predictions).")
  flags.DEFINE_integer("fold", None, "The validation fold to score.")
  flags.DEFINE_string("mosaics", None, "CSV id,mosaic_id,x,y (jigsaw solve).")
  flags.DEFINE_string("data_dir", None, "Kaggle data folder (tiles, masks).")
  flags.DEFINE_string("cache_dir", None, "Optional npz cache of the decoded PNGs.")
  flags.DEFINE_list("strides", ["101", "50"], "Window strides to segment the mosaics at.")
  flags.DEFINE_list("phases", ["0"], "Window phases: every window shifted back by this many pixels (each "
                    "stride runs the phases below it; 50 at stride 101: windows across the tile borders, "
                    "none overlapping).")
  flags.DEFINE_enum("kind", "max_map", list(rundir.SNAPSHOT_KINDS), "Which snapshots.")
  flags.DEFINE_integer("batch_size", None, "Windows per device call (default: the config's).")
  flags.DEFINE_string("out", None, "Optional CSV of the table.")
  flags.DEFINE_string("tiles_out", None, "Optional CSV of every scored tile's scores.")
  flags.mark_flags_as_required(["workdir", "fold", "mosaics", "data_dir"])


def main(argv) -> pd.DataFrame:
  """Prints the table (and the windows per second of each stride); with --out writes it as CSV."""
  del argv
  for what in ("out", "tiles_out"):
    if FLAGS[what].value:
      fileio.check_writable(FLAGS[what].value, f"--{what}")
  phases = [int(p) for p in FLAGS.phases]
  if min(phases) < 0:
    raise app.UsageError(f"--phases must be >= 0, got {min(phases)}")
  source = kaggle.DataSource(FLAGS.data_dir, FLAGS.cache_dir)
  table = section_check.fold_check(FLAGS.workdir, FLAGS.fold, source, FLAGS.mosaics,
                                   [int(s) for s in FLAGS.strides], FLAGS.kind, FLAGS.batch_size,
                                   phases)
  print(f"fold {FLAGS.fold}: validation tiles in {table.attrs['mosaics']} mosaics")
  print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
  print(json.dumps({"speed": table.attrs["speed"]}))
  if FLAGS.out:
    submission.write_csv_atomic(table, FLAGS.out)
  if FLAGS.tiles_out:
    submission.write_csv_atomic(table.attrs["tiles"], FLAGS.tiles_out)
  return table


if __name__ == "__main__":
  cli.run(main, define_flags, prog="scripts/segment_check.py")
