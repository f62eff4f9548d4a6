"""Kaggle mAP of a fold's validation tiles before and after each jigsaw rule (SPEC 8.3), without leakage.

The fold's validation ids are treated as unknown tiles: their masks come from `--predictions` (a submission-
format CSV id,rle_mask holding at least those ids), never from the ground truth, which is used only to score.
The other train tiles are known. Optional `--test_predictions` adds the real test tiles as further unknown
tiles.

  python scripts/jigsaw_rule_effect.py --data_dir=../shared/tgs --mosaics=mosaics.csv --folds=folds.csv \
      --fold=0 --predictions=fold0_valid.csv [--test_predictions=sub.csv] [--max_mosaic_id=158] [--out=x.csv]
"""
import argparse
import sys

import numpy as np
import pandas as pd


def main(argv=None) -> pd.DataFrame:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--mosaics", required=True, help="CSV id,mosaic_id,x,y (jigsaw solve)")
  parser.add_argument("--folds", required=True, help="CSV id,fold (salt_jax.data.folds)")
  parser.add_argument("--fold", type=int, required=True)
  parser.add_argument("--predictions", required=True, help="submission-format CSV with the fold's valid ids")
  parser.add_argument("--test_predictions", default=None, help="optional submission CSV for the test tiles")
  parser.add_argument("--max_mosaic_id", type=int, default=158, help="-1 = all mosaics")
  parser.add_argument("--out", default=None, help="optional CSV of the table")
  args = parser.parse_args(argv)

  from salt_jax.data import folds as folds_lib, kaggle, submission  # pylint: disable=import-outside-toplevel
  from salt_jax.jigsaw import effect, tables  # pylint: disable=import-outside-toplevel

  train = kaggle.load_train(args.data_dir, verify_rle=False)
  ids = train.ids.tolist()
  num_folds = int(pd.read_csv(args.folds)["fold"].max()) + 1
  folds = folds_lib.read_folds(args.folds, ids, num_folds)
  _, valid = folds_lib.fold_split(folds, args.fold)
  valid_ids = [ids[i] for i in valid]
  valid_set = set(valid_ids)
  known = {i: m for i, m in zip(ids, train.masks) if i not in valid_set}
  truth = {i: m for i, m in zip(ids, train.masks) if i in valid_set}
  predicted = tables.read_submission(args.predictions, ids=valid_ids)
  extra = tables.read_submission(args.test_predictions) if args.test_predictions else None
  if extra:
    extra = {i: m for i, m in extra.items() if i not in valid_set and i not in known}
  table = effect.rule_effect(tables.read_mosaics(args.mosaics), known, predicted, truth, extra_unknown=extra,
                             max_mosaic_id=None if args.max_mosaic_id < 0 else args.max_mosaic_id)
  with pd.option_context("display.width", 140, "display.max_columns", 20):
    print(f"fold {args.fold}: {len(valid_ids)} validation tiles, "
          f"{int(np.isin(valid_ids, tables.read_mosaics(args.mosaics)['id']).sum())} of them in mosaics")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
  if args.out:
    submission.write_csv_atomic(table, args.out)
  return table


if __name__ == "__main__":
  main(sys.argv[1:])
