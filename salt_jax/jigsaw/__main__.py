"""Command line: `python -m salt_jax.jigsaw {solve,postprocess,render} ...` (SPEC 8).

  solve        --data_dir=DIR --out=mosaics.csv [--mutual] [--check_collisions] [--all_mosaics] [--mark_seed]
               [--knn=brute|kdtree]
  postprocess  --data_dir=DIR --submission=sub.csv --mosaics=mosaics.csv --out=sub_pp.csv
               [--keep_intermediate] [--steps=vertical,empty,smooth] [--max_mosaic_id=158|-1]
  render       --data_dir=DIR --mosaics=mosaics.csv [--submission=sub.csv] --out_dir=DIR [--top=3] [--grid]

Every output CSV is written atomically (temporary file, then os.replace). `--cache_dir` (all commands) keeps
the decoded PNGs in an npz cache (salt_jax.data.kaggle).
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time


def _solve(args) -> None:
  from salt_jax.data import submission  # pylint: disable=import-outside-toplevel
  from salt_jax.jigsaw import edges, solver  # pylint: disable=import-outside-toplevel
  t0 = time.perf_counter()
  tiles = edges.load_tile_set(args.data_dir, args.cache_dir)
  t1 = time.perf_counter()
  sol = solver.solve(tiles, knn=args.knn, mutual=args.mutual, check_collisions=args.check_collisions,
                     n_mosaics=None if args.all_mosaics else solver.N_MOSAICS, mark_seed=args.mark_seed)
  t2 = time.perf_counter()
  submission.write_csv_atomic(sol.table, args.out)
  print(" ".join(f"{k}={v}" for k, v in sol.stats.items()))
  print(f"load {t1 - t0:.1f}s solve {t2 - t1:.1f}s -> {args.out}")


def _postprocess(args) -> None:
  from salt_jax.data import kaggle  # pylint: disable=import-outside-toplevel
  from salt_jax.jigsaw import rules, tables  # pylint: disable=import-outside-toplevel
  train = kaggle.load_train(args.data_dir, cache_dir=args.cache_dir, verify_rle=False)
  known = dict(zip(train.ids.tolist(), train.masks))
  sub = tables.read_submission(args.submission)
  mosaics = tables.read_mosaics(args.mosaics)
  steps = tuple(s for s in args.steps.split(",") if s)
  max_id = None if args.max_mosaic_id < 0 else args.max_mosaic_id
  res = rules.apply_rules(mosaics, known, sub, steps, max_id)
  out = pathlib.Path(args.out)
  if args.keep_intermediate:
    for j, step in enumerate(steps[:-1]):
      name = "-".join(steps[:j + 1])
      tables.write_submission(res.stages[step], out.with_name(f"{out.stem}.{name}{out.suffix}"))
  tables.write_submission(res.stages[steps[-1]] if steps else sub, out)
  for step in steps:
    counts = {}
    for rule in res.changed[step].values():
      counts[rule] = counts.get(rule, 0) + 1
    print(f"{step}: {len(res.changed[step])} tiles changed {dict(sorted(counts.items()))}")
  print(f"-> {out}")


def _render(args) -> None:
  from salt_jax.data import kaggle  # pylint: disable=import-outside-toplevel
  from salt_jax.jigsaw import render, tables  # pylint: disable=import-outside-toplevel
  mosaics = tables.read_mosaics(args.mosaics)
  train = kaggle.load_train(args.data_dir, cache_dir=args.cache_dir, verify_rle=False)
  test = kaggle.load_test(args.data_dir, cache_dir=args.cache_dir)
  images = dict(zip(train.ids.tolist(), train.images))
  images.update(zip(test.ids.tolist(), test.images))
  known = dict(zip(train.ids.tolist(), train.masks))
  pred = tables.read_submission(args.submission) if args.submission else None
  for path in render.render_top(mosaics, images, args.out_dir, args.top, known, pred, grid=args.grid):
    print(path)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m salt_jax.jigsaw", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  p = sub.add_parser("solve", help="assemble mosaics from all train+test tiles")
  p.add_argument("--data_dir", required=True)
  p.add_argument("--cache_dir", default=None, help="optional npz cache of the decoded PNGs")
  p.add_argument("--out", required=True, help="CSV id,mosaic_id,x,y")
  p.add_argument("--knn", default="brute", choices=["brute", "kdtree"])
  p.add_argument("--mutual", action="store_true", help="repair: require mutual nearest neighbours")
  p.add_argument("--check_collisions", action="store_true", help="repair: never place two tiles in one cell")
  p.add_argument("--all_mosaics", action="store_true",
                 help="repair: every component with >= 2 tiles instead of the hard-coded 514")
  p.add_argument("--mark_seed", action="store_true", help="repair: mark strip seeds as visited")
  p.set_defaults(func=_solve)

  p = sub.add_parser("postprocess", help="apply the SPEC 8.3 rules to a submission")
  p.add_argument("--data_dir", required=True)
  p.add_argument("--cache_dir", default=None, help="optional npz cache of the decoded PNGs")
  p.add_argument("--submission", required=True)
  p.add_argument("--mosaics", required=True)
  p.add_argument("--out", required=True)
  p.add_argument("--keep_intermediate", action="store_true",
                 help="also write <out>.vertical.csv and <out>.vertical-empty.csv")
  p.add_argument("--steps", default="vertical,empty,smooth")
  p.add_argument("--max_mosaic_id", type=int, default=158, help="empty/smooth rules only; -1 = all mosaics")
  p.set_defaults(func=_postprocess)

  p = sub.add_parser("render", help="PNGs of the largest mosaics")
  p.add_argument("--data_dir", required=True)
  p.add_argument("--cache_dir", default=None, help="optional npz cache of the decoded PNGs")
  p.add_argument("--mosaics", required=True)
  p.add_argument("--submission", default=None)
  p.add_argument("--out_dir", required=True)
  p.add_argument("--top", type=int, default=3)
  p.add_argument("--grid", action="store_true")
  p.set_defaults(func=_render)
  return parser


def main(argv=None) -> None:
  args = build_parser().parse_args(argv)
  args.func(args)


if __name__ == "__main__":
  main(sys.argv[1:])
