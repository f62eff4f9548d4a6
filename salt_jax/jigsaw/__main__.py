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
from typing import Any, Dict

from absl import app, flags

from salt_jax import cli
from salt_jax.data import kaggle
from salt_jax.jigsaw import rules, tasks

FLAGS = flags.FLAGS
COMMANDS = ("solve", "postprocess", "render")
REQUIRED = {"solve": ("data_dir", "out"), "postprocess": ("data_dir", "submission", "mosaics", "out"),
            "render": ("data_dir", "mosaics", "out_dir")}


def define_flags() -> None:
  """The flags of all three commands (each command says which it needs in REQUIRED)."""
  flags.DEFINE_string("data_dir", None, "Kaggle data folder.")
  flags.DEFINE_string("cache_dir", None, "Optional npz cache of the decoded PNGs.")
  flags.DEFINE_string("out", None, "solve: the mosaic CSV id,mosaic_id,x,y; postprocess: the new submission.")
  flags.DEFINE_string("mosaics", None, "postprocess, render: the mosaic CSV that solve wrote.")
  flags.DEFINE_string("submission", None, "postprocess: the submission to change; render: masks to draw.")
  flags.DEFINE_enum("knn", "brute", ["brute", "kdtree"], "solve: nearest-neighbour search.")
  flags.DEFINE_bool("mutual", False, "solve, repair: require mutual nearest neighbours.")
  flags.DEFINE_bool("check_collisions", False, "solve, repair: never place two tiles in one cell.")
  flags.DEFINE_bool("all_mosaics", False, "solve, repair: every component with >= 2 tiles instead of the "
                    "hard-coded 514.")
  flags.DEFINE_bool("mark_seed", False, "solve, repair: mark strip seeds as visited.")
  flags.DEFINE_bool("keep_intermediate", False, "postprocess: also write <out>.vertical.csv and "
                    "<out>.vertical-empty.csv.")
  flags.DEFINE_list("steps", list(rules.STEPS), "postprocess: the rule steps, in order.")
  flags.DEFINE_integer("max_mosaic_id", rules.MAX_MOSAIC_ID, "postprocess: the empty and smooth rules touch "
                       "mosaics 0..max_mosaic_id only; -1 = all mosaics.")
  flags.DEFINE_string("out_dir", None, "render: folder of the mosaic PNGs.")
  flags.DEFINE_integer("top", 3, "render: how many of the largest mosaics.")
  flags.DEFINE_bool("grid", False, "render: darken tile borders.")


def _solve(source: kaggle.DataSource) -> Dict[str, Any]:
  res = tasks.solve(source, FLAGS.out, knn=FLAGS.knn, mutual=FLAGS.mutual,
                    check_collisions=FLAGS.check_collisions, all_mosaics=FLAGS.all_mosaics,
                    mark_seed=FLAGS.mark_seed)
  print(" ".join(f"{k}={v}" for k, v in res["stats"].items()))
  print(f"load {res['seconds']['load']:.1f}s solve {res['seconds']['solve']:.1f}s -> {FLAGS.out}")
  return res


def _postprocess(source: kaggle.DataSource) -> Dict[str, Any]:
  try:
    steps = tasks.check_steps(FLAGS.steps)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  res = tasks.postprocess(source, FLAGS.submission, FLAGS.mosaics, FLAGS.out, steps=steps,
                          max_mosaic_id=None if FLAGS.max_mosaic_id < 0 else FLAGS.max_mosaic_id,
                          keep_intermediate=FLAGS.keep_intermediate)
  for step, r in res["steps"].items():
    print(f"{step}: {r['changed']} tiles changed {r['by_rule']}")
  print(f"-> {res['out']}")
  return res


def _render(source: kaggle.DataSource) -> list:
  paths = tasks.render(source, FLAGS.mosaics, FLAGS.out_dir, submission=FLAGS.submission, top=FLAGS.top,
                       grid=FLAGS.grid)
  for path in paths:
    print(path)
  return paths


def main(argv):
  """Runs the command argv[1] with its flags; returns what its task returned."""
  command = argv[1]
  missing = [f"--{name}" for name in REQUIRED[command] if FLAGS[name].value is None]
  if missing:
    raise app.UsageError(f"{command} needs {', '.join(missing)}")
  source = kaggle.DataSource(FLAGS.data_dir, FLAGS.cache_dir)
  return {"solve": _solve, "postprocess": _postprocess, "render": _render}[command](source)


if __name__ == "__main__":
  cli.run(main, define_flags, prog="salt_jax.jigsaw", commands=COMMANDS)
