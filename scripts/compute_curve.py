"""Validation mAP and losses against training compute (image-steps) for finished or running training runs.

One image-step is one training image through one step: an epoch of a fold costs (train images // batch) x
batch image-steps. Each run is given as LABEL=WORKDIR; runs sharing a label are seeds of one recipe (their
spread is drawn as a band). Writes a PNG of two panels (validation mAP; train and validation loss, each
against image-steps) and prints, per run, the table that docs/recipes.md carries.

  python scripts/compute_curve.py --fold=0 --out=docs/compute_curve.png \
      --runs="today=runs/curve_1x_s0,today=runs/curve_2x_s0,regularised=runs/curve_2x_pc_s0"

Workdirs do not outlive the machine that trained them; --save_csv keeps the histories drawn (one row per
epoch: label, run and the history's columns), and --from_csv draws them again beside new runs:

  python scripts/compute_curve.py --from_csv=docs/compute_curve.csv --save_csv=docs/compute_curve.csv \
      --out=docs/compute_curve.png --runs="4x + warp=runs/curve_4x_geo_s0"

--labels=A,B tables and draws only those recipes (the CSV keeps them all).
"""
import collections
import json
import pathlib
from typing import Dict, List, Tuple

import matplotlib
import numpy as np
import pandas as pd
from absl import app, flags

from salt_jax import cli, fileio
from salt_jax.workdir import rundir

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("runs", None, "Comma-separated LABEL=WORKDIR (one label per recipe; repeated for seeds).")
  flags.DEFINE_integer("fold", 0, "The fold whose history is read.")
  flags.DEFINE_string("out", None, "PNG to write (optional).")
  flags.DEFINE_bool("breakdown", False, "Also segment the fold's validation tiles with each run's max_map "
                    "snapshots (salt_jax.load, flip TTA) and add the mean score on the empty tiles, on the "
                    "salt tiles and on the small bodies (under 10 % salt), and the mAP each gives away.")
  flags.DEFINE_string("from_csv", None, "A --save_csv file whose runs are drawn and tabled too (before --runs; a "
                      "run of the same label and name in --runs replaces its rows).")
  flags.DEFINE_string("save_csv", None, "CSV to write with every run's history drawn (those of --from_csv too).")
  flags.DEFINE_list("labels", None, "Only these labels are tabled and drawn (default: all); --save_csv still "
                    "keeps every run.")


def epoch_image_steps(workdir: pathlib.Path, fold: int) -> int:
  """Image-steps of one epoch of `fold`: (its training images // batch) x batch, from the run's own
  folds.csv and recorded config (a train_subset caps the images)."""
  config = json.loads((workdir / f"fold_{fold}" / "config.json").read_text())
  split = pd.read_csv(workdir / "folds.csv", dtype={"id": str})
  n_train = int((split["fold"] != fold).sum())
  if config.get("train_subset"):
    n_train = min(n_train, int(config["train_subset"]))
  batch = int(config["batch_size"])
  return n_train // batch * batch


def run_history(workdir, fold: int) -> pd.DataFrame:
  """One row per finished epoch of the run's fold: epoch, image_steps (cumulative), loss, seg_loss, and
  val_map / val_loss where it was validated."""
  workdir = pathlib.Path(workdir)
  path = rundir.RunDir(workdir).history_jsonl(fold)
  if not path.exists():
    raise rundir.WorkdirError(f"{path} not found: no epoch of fold {fold} has finished in {workdir}")
  frame = pd.DataFrame([json.loads(line) for line in path.read_text().splitlines()])
  frame["image_steps"] = (frame["epoch"] + 1) * epoch_image_steps(workdir, fold)
  for key in ("val_map", "val_loss"):
    if key not in frame:
      frame[key] = np.nan
  return frame


def summary(label: str, run: str, history: pd.DataFrame) -> Dict:
  """The table row of one run: its compute, best and last validation, last losses of each phase."""
  validated = history.dropna(subset=["val_map"])
  last = history.iloc[-1]
  lovasz = history[history["seg_loss"] == "lovasz"]
  return {"recipe": label, "run": run, "epochs": int(last["epoch"]) + 1,
          "image_steps": int(last["image_steps"]),
          "best_val_map": validated["val_map"].max() if len(validated) else np.nan,
          "last_val_map": validated["val_map"].iloc[-1] if len(validated) else np.nan,
          "last_val_loss": validated["val_loss"].iloc[-1] if len(validated) else np.nan,
          "last_train_loss_lovasz": lovasz["loss"].iloc[-1] if len(lovasz) else np.nan}


def empty_and_salt(workdir, fold: int) -> Dict:
  """The run's vote on its fold's validation tiles, split by the truth: mean score and the mAP given away
  ("lost", breakdown.coverage_table's: the two add up to 1 - mAP) on the empty tiles and on the salt tiles,
  the same and the tiles left empty ("missed") among the small bodies (salt tiles of the 0-10 % coverage
  bucket, part of the salt tiles), and the mAP of the vote (its max_map snapshots at their own thresholds,
  as salt_jax.load votes)."""
  import salt_jax  # pylint: disable=import-outside-toplevel  # JAX only for --breakdown
  from salt_jax.data import kaggle  # pylint: disable=import-outside-toplevel
  from salt_jax.inference import breakdown  # pylint: disable=import-outside-toplevel
  workdir = pathlib.Path(workdir)
  config = json.loads((workdir / f"fold_{fold}" / "config.json").read_text())
  split = pd.read_csv(workdir / "folds.csv", dtype={"id": str})
  train = kaggle.DataSource(config["data_dir"]).train()
  rows = np.flatnonzero(np.isin(train.ids, split["id"][split["fold"] == fold].to_numpy()))
  pred = salt_jax.load([str(workdir)], folds=[fold]).tiles(train.images[rows])
  table = breakdown.coverage_table(pred.mask, train.masks[rows]).set_index("bucket")
  empty, all_ = table.loc["empty"], table.loc["all"]
  salt_tiles = all_["tiles"] - empty["tiles"]
  salt_score = (all_["mean_score"] * all_["tiles"] - empty["mean_score"] * empty["tiles"]) / salt_tiles
  small_bucket = breakdown.BUCKET_NAMES[1]  # 0-10 %
  small = table.loc[small_bucket] if small_bucket in table.index else pd.Series({"tiles": 0, "pred_empty": 0})
  return {"vote_map": all_["mean_score"], "empty_tiles": int(empty["tiles"]), "empty_score": empty["mean_score"],
          "empty_lost": empty["lost"], "salt_tiles": int(salt_tiles), "salt_score": salt_score,
          "salt_lost": all_["lost"] - empty["lost"], "small_tiles": int(small["tiles"]),
          "small_score": small.get("mean_score", np.nan), "small_lost": small.get("lost", 0.0),
          "small_missed": int(small["pred_empty"])}


def plot(histories: Dict[str, List[pd.DataFrame]], out) -> None:
  """Two panels against image-steps: validation mAP of every validated epoch (one line per run, the
  recipe's seeds in one colour, the min-max band of their best snapshots at each run's compute), and the
  train (solid) and validation (dashed) losses."""
  fig, (ax_map, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.5))
  colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for i, (label, runs) in enumerate(histories.items()):
    colour = colours[i % len(colours)]
    by_compute = collections.defaultdict(list)
    for j, h in enumerate(runs):
      v = h.dropna(subset=["val_map"])
      ax_map.plot(v["image_steps"], v["val_map"], "o-", color=colour, alpha=0.8, ms=4,
                  label=label if j == 0 else None)
      by_compute[int(h["image_steps"].iloc[-1])].append(v["val_map"].max())
      ax_loss.plot(h["image_steps"], h["loss"], "-", color=colour, alpha=0.6,
                   label=f"{label} train" if j == 0 else None)
      ax_loss.plot(v["image_steps"], v["val_loss"], "o--", color=colour, ms=3,
                   label=f"{label} validation" if j == 0 else None)
    for x, bests in by_compute.items():
      if len(bests) > 1:
        ax_map.vlines(x, min(bests), max(bests), color=colour, lw=6, alpha=0.3)
  ax_map.set(xlabel="image-steps", ylabel="validation mAP (fold's 361 tiles)", title="validation mAP")
  ax_loss.set(xlabel="image-steps", ylabel="loss", title="train (solid) and validation (dashed) loss")
  for ax in (ax_map, ax_loss):
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  with fileio.atomic_path(out) as tmp:
    fig.savefig(tmp, format="png", dpi=100)
  plt.close(fig)


HISTORY_COLUMNS = ["label", "run", "epoch", "image_steps", "loss", "seg_loss", "val_map", "val_loss"]


def saved_histories(path) -> List[Tuple[str, str, pd.DataFrame]]:
  """The (label, run, history) of each run a --save_csv file holds, the history as run_history returns it."""
  try:
    frame = pd.read_csv(path, dtype={"label": str, "run": str}, float_precision="round_trip")
  except (OSError, ValueError) as e:
    raise rundir.WorkdirError(f"cannot read {path} ({type(e).__name__}: {e})") from None
  if missing := sorted(set(HISTORY_COLUMNS) - set(frame.columns)):
    raise rundir.WorkdirError(f"{path} is not a compute_curve.py --save_csv file (no column {missing[0]!r})")
  return [(label, run, group.drop(columns=["label", "run"]).reset_index(drop=True))
          for (label, run), group in frame.groupby(["label", "run"], sort=False)]


def save_histories(runs: List[Tuple[str, str, pd.DataFrame]], path) -> None:
  """Writes every run's history as one CSV (HISTORY_COLUMNS), whole or not at all."""
  frame = pd.concat([h.assign(label=label, run=run) for label, run, h in runs], ignore_index=True)
  with fileio.atomic_path(path) as tmp:
    frame[HISTORY_COLUMNS].to_csv(tmp, index=False)


def main(argv) -> pd.DataFrame:
  """Reads every run's history (--from_csv's, then --runs'), prints the table of those --labels keeps, writes
  their PNG with --out and every history with --save_csv; returns the table."""
  del argv
  if not FLAGS.runs and not FLAGS.from_csv:
    raise app.UsageError("give --runs, --from_csv or both")
  saved = saved_histories(FLAGS.from_csv) if FLAGS.from_csv else []
  given_items = FLAGS.runs.split(",") if FLAGS.runs else []
  if bad := [item for item in given_items if "=" not in item]:
    raise app.UsageError(f"--runs items are LABEL=WORKDIR, got {bad[0]!r}")
  items = [item.partition("=") for item in given_items]
  if unknown := sorted(set(FLAGS.labels or ()) - {r[0] for r in saved} - {i[0] for i in items}):
    raise app.UsageError(f"--labels: no run is labelled {unknown[0]!r}")
  given, breakdowns = [], {}
  for label, _, workdir in items:
    run = pathlib.Path(workdir).name
    given.append((label, run, run_history(workdir, FLAGS.fold)))
    if FLAGS.breakdown and (FLAGS.labels is None or label in FLAGS.labels):
      breakdowns[label, run] = empty_and_salt(workdir, FLAGS.fold)
  runs = [r for r in saved if r[:2] not in {g[:2] for g in given}] + given
  shown = [r for r in runs if FLAGS.labels is None or r[0] in FLAGS.labels]
  histories: Dict[str, List[pd.DataFrame]] = collections.defaultdict(list)
  rows = []
  for label, run, history in shown:
    histories[label].append(history)
    rows.append({**summary(label, run, history), **breakdowns.get((label, run), {})})
  table = pd.DataFrame(rows)
  with pd.option_context("display.width", 250, "display.max_columns", 30):
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
  if FLAGS.out:
    plot(histories, FLAGS.out)
  if FLAGS.save_csv:
    save_histories(runs, FLAGS.save_csv)
  return table


if __name__ == "__main__":
  cli.run(main, define_flags, prog="scripts/compute_curve.py")
