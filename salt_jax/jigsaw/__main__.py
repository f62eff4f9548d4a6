"""Command line: `python -m salt_jax.jigsaw {solve,postprocess,render} ...` (SPEC 8).

  solve        --data_dir=DIR --out=mosaics.csv [--mutual] [--check_collisions] [--all_mosaics] [--mark_seed]
               [--knn=brute|kdtree]
  postprocess  --data_dir=DIR --submission=sub.csv --mosaics=mosaics.csv --out=sub_pp.csv
               [--keep_intermediate] [--steps=vertical,empty,smooth] [--max_mosaic_id=158|-1]
  render       --data_dir=DIR --mosaics=mosaics.csv [--submission=sub.csv] --out_dir=DIR [--top=3] [--grid]

Every output CSV is written atomically (temporary file, then os.replace). `--cache_dir` (all commands) keeps
the decoded PNGs in an npz cache (salt_jax.data.kaggle). A submission must hold exactly the ids of
DIR/sample_submission.csv; bad input files exit with status 1 and a message naming the file and a few ids,
before anything is written. The steps themselves are library functions in salt_jax.jigsaw.tasks.
"""
from __future__ import annotations

import argparse
import sys


def _solve(args) -> None:
  from salt_jax.jigsaw import tasks  # pylint: disable=import-outside-toplevel
  res = tasks.solve(args.data_dir, args.out, cache_dir=args.cache_dir, knn=args.knn, mutual=args.mutual,
                    check_collisions=args.check_collisions, all_mosaics=args.all_mosaics,
                    mark_seed=args.mark_seed)
  print(" ".join(f"{k}={v}" for k, v in res["stats"].items()))
  print(f"load {res['seconds']['load']:.1f}s solve {res['seconds']['solve']:.1f}s -> {args.out}")


def _postprocess(args) -> None:
  from salt_jax.jigsaw import tasks  # pylint: disable=import-outside-toplevel
  max_id = None if args.max_mosaic_id < 0 else args.max_mosaic_id
  res = tasks.postprocess(args.data_dir, args.submission, args.mosaics, args.out, cache_dir=args.cache_dir,
                          steps=args.steps, max_mosaic_id=max_id, keep_intermediate=args.keep_intermediate)
  for step, r in res["steps"].items():
    print(f"{step}: {r['changed']} tiles changed {r['by_rule']}")
  print(f"-> {res['out']}")


def _render(args) -> None:
  from salt_jax.jigsaw import tasks  # pylint: disable=import-outside-toplevel
  for path in tasks.render(args.data_dir, args.mosaics, args.out_dir, submission=args.submission,
                           cache_dir=args.cache_dir, top=args.top, grid=args.grid):
    print(path)


def _steps(text: str) -> tuple:
  """--steps=vertical,empty,smooth -> ("vertical", "empty", "smooth"); an unknown step is a usage error."""
  from salt_jax.jigsaw import tasks  # pylint: disable=import-outside-toplevel
  try:
    return tasks.check_steps(s for s in text.split(",") if s)
  except ValueError as e:
    raise argparse.ArgumentTypeError(str(e)) from e


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
  p.add_argument("--steps", default="vertical,empty,smooth", type=_steps)
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
  """Runs one command; bad input data (DataError: the message names the file and ids) exits with status 1
  before anything is written."""
  from salt_jax.data.errors import DataError  # pylint: disable=import-outside-toplevel
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    args.func(args)
  except DataError as e:
    parser.exit(1, f"{parser.prog} {args.command}: error: {e}\n")


if __name__ == "__main__":
  main(sys.argv[1:])
