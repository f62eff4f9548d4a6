"""Where the points of a validation mAP go: per-tile competition scores by coverage bucket (the folds'
stratification classes, `folds.coverage_class`: 0 = empty, k = coverage in ((k-1)/10, k/10]).

    table = coverage_table(pred_masks, true_masks)        # one row per bucket, plus "all"
    print(format_summary(table)); draw(table, "breakdown.png")

A tile's score is the mean over the IoU thresholds 0.5..0.95 of a hit (metrics.kaggle_scores); an empty
tile scores 1 only when predicted empty. "lost" is the bucket's share of the mAP given away: sum(1 -
score) / all tiles, so the "lost" column adds up to 1 - mAP.
"""
from typing import Optional

import numpy as np
import pandas as pd

from salt_jax import metrics
from salt_jax.data.folds import coverage_class

BUCKET_NAMES = ["empty"] + [f"{10 * (k - 1)}-{10 * k}%" for k in range(1, 11)]


def coverage_table(pred_masks: np.ndarray, true_masks: np.ndarray) -> pd.DataFrame:
  """(N,101,101) predicted {0,1}/bool masks and true masks -> one row per non-empty bucket and "all":
  tiles, predicted empty, predicted salt, mean score, lost (share of the mAP lost in the bucket)."""
  pred = np.asarray(pred_masks).astype(bool)
  scores = metrics.kaggle_scores(pred, true_masks)
  buckets = coverage_class(np.asarray(true_masks))
  pred_empty = ~pred.reshape(len(pred), -1).any(axis=1)
  rows = []
  for k, name in enumerate(BUCKET_NAMES):
    sel = buckets == k
    if sel.any():
      rows.append(_row(name, sel, pred_empty, scores, len(scores)))
  rows.append(_row("all", np.ones(len(scores), bool), pred_empty, scores, len(scores)))
  return pd.DataFrame(rows)


def _row(name: str, sel: np.ndarray, pred_empty: np.ndarray, scores: np.ndarray, n_all: int) -> dict:
  return {"bucket": name, "tiles": int(sel.sum()), "pred_empty": int(pred_empty[sel].sum()),
          "pred_salt": int((~pred_empty[sel]).sum()), "mean_score": float(scores[sel].mean()),
          "lost": float((1.0 - scores[sel]).sum() / n_all)}


def summary(table: pd.DataFrame) -> dict:
  """The headline numbers: mAP, empty tiles predicted non-empty, salt tiles predicted empty, the mean
  score of the salt tiles that were found."""
  rows = table.set_index("bucket")
  salt = rows.drop(index=["empty", "all"], errors="ignore")
  found = salt["pred_salt"].sum()
  found_score = (salt["mean_score"] * salt["tiles"]).sum() / max(found, 1)  # a missed salt tile scores 0
  empty = rows.loc["empty"] if "empty" in rows.index else None
  return {"mAP": float(rows.loc["all", "mean_score"]), "tiles": int(rows.loc["all", "tiles"]),
          "empty_tiles": 0 if empty is None else int(empty["tiles"]),
          "empty_predicted_salt": 0 if empty is None else int(empty["pred_salt"]),
          "salt_tiles": int(salt["tiles"].sum()), "salt_predicted_empty": int(salt["pred_empty"].sum()),
          "found_mean_score": float(found_score) if found else float("nan")}


def format_summary(table: pd.DataFrame, title: str = "") -> str:
  """The table and its summary as text, for the console and the pipeline's summary."""
  s = summary(table)
  head = (f"{title + ': ' if title else ''}mAP {s['mAP']:.4f} on {s['tiles']} tiles; "
          f"{s['empty_predicted_salt']} of {s['empty_tiles']} empty tiles predicted with salt, "
          f"{s['salt_predicted_empty']} of {s['salt_tiles']} salt tiles predicted empty, "
          f"found salt tiles score {s['found_mean_score']:.3f}")
  shown = table.assign(mean_score=table["mean_score"].map("{:.3f}".format),
                       lost=table["lost"].map("{:.4f}".format))
  return head + "\n" + shown.to_string(index=False)


def draw(table: pd.DataFrame, path, title: Optional[str] = None) -> None:
  """A PNG of the table: per bucket, the mean score (bars) and the share of the mAP lost (line), with the
  tiles predicted empty in each bucket written above its bar."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  rows = table[table["bucket"] != "all"]
  fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
  x = np.arange(len(rows))
  ax.bar(x, rows["mean_score"], color="#4c72b0", label="mean score")
  for xi, (_, r) in zip(x, rows.iterrows()):
    ax.text(xi, r["mean_score"] + 0.02, f"{r['pred_empty']}/{r['tiles']}\nempty", ha="center", fontsize=7)
  ax.set_xticks(x, rows["bucket"], rotation=30, fontsize=8)
  ax.set_ylim(0, 1.15)
  ax.set_ylabel("mean tile score")
  lost = ax.twinx()
  lost.plot(x, rows["lost"], "o-", color="#c44e52", label="share of mAP lost")
  lost.set_ylabel("share of mAP lost", color="#c44e52")
  lost.set_ylim(0, max(0.05, float(rows["lost"].max()) * 1.3))
  s = summary(table)
  ax.set_title(title or f"mAP {s['mAP']:.4f} on {s['tiles']} validation tiles", fontsize=10)
  fig.tight_layout()
  fig.savefig(str(path))
  plt.close(fig)
