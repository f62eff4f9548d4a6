"""The per-bucket breakdown of a validation mAP on hand-made tiles with known scores."""
import numpy as np
import pytest

from salt_jax import metrics
from salt_jax.inference import breakdown


def _tiles():
  """6 tiles: 2 empty (one predicted empty, one with a false positive), a 5% tile predicted exactly,
  a 5% tile missed, a 40% tile at IoU 0.75 (score 0.5) and a full tile predicted exactly."""
  truth = np.zeros((6, 101, 101), np.uint8)
  pred = np.zeros_like(truth)
  pred[1, :10, :10] = 1                  # false positive on an empty tile
  truth[2, :20, :25] = pred[2, :20, :25] = 1   # 500 px = 4.9 %
  truth[3, :20, :25] = 1                 # missed
  truth[4, :40] = 1                      # 4040 px = 39.6 %
  pred[4, :30] = 1                       # IoU 0.75: hits at thresholds 0.5..0.7 (IoU > t) -> 0.5
  truth[5] = pred[5] = 1
  return pred, truth


def test_table_counts_scores_and_lost_points():
  pred, truth = _tiles()
  table = breakdown.coverage_table(pred, truth).set_index("bucket")
  assert list(table.index) == ["empty", "0-10%", "30-40%", "90-100%", "all"]
  assert table.loc["empty", ["tiles", "pred_empty", "pred_salt"]].tolist() == [2, 1, 1]
  assert table.loc["0-10%", ["tiles", "pred_empty", "pred_salt"]].tolist() == [2, 1, 1]
  assert table.loc["empty", "mean_score"] == 0.5 and table.loc["0-10%", "mean_score"] == 0.5
  assert table.loc["30-40%", "mean_score"] == pytest.approx(0.5)
  assert table.loc["90-100%", "mean_score"] == 1.0
  total = metrics.kaggle_map(pred, truth)
  assert table.loc["all", "mean_score"] == pytest.approx(total)
  assert table.drop(index="all")["lost"].sum() == pytest.approx(1 - total)
  assert table.loc["empty", "lost"] == pytest.approx(1 / 6)


def test_summary_and_text():
  pred, truth = _tiles()
  table = breakdown.coverage_table(pred, truth)
  s = breakdown.summary(table)
  counts = (s["empty_tiles"], s["empty_predicted_salt"], s["salt_tiles"], s["salt_predicted_empty"])
  assert counts == (2, 1, 4, 1)
  assert s["found_mean_score"] == pytest.approx((1 + 0.5 + 1) / 3)
  text = breakdown.format_summary(table, "fold 0")
  assert text.startswith("fold 0: mAP 0.5833 on 6 tiles; 1 of 2 empty tiles predicted with salt, "
                         "1 of 4 salt tiles predicted empty")


def test_draw_writes_a_png(tmp_path):
  import cv2
  pred, truth = _tiles()
  path = tmp_path / "b.png"
  breakdown.draw(breakdown.coverage_table(pred, truth), path)
  image = cv2.imread(str(path))
  assert image is not None and image.shape[0] > 200 and image.shape[1] > 400
