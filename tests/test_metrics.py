"""The Kaggle metric (SPEC 6.1) and the logit threshold sweep (SPEC 6.2)."""
import time

import cv2
import numpy as np
import pytest

from salt_jax import metrics


def _masks(*cells, size=10):
  """(N,size,size) uint8 masks; each entry is a list of flat pixel indices set to 1."""
  out = np.zeros((len(cells), size * size), np.uint8)
  for i, idx in enumerate(cells):
    out[i, list(idx)] = 1
  return out.reshape(-1, size, size)


@pytest.fixture(scope="module")
def real_masks(data_dir):
  """All train masks (3601,101,101) uint8 {0,1} from the 16-bit 0/65535 PNGs."""
  paths = sorted((data_dir / "train" / "masks").glob("*.png"))
  masks = np.stack([cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in paths])
  assert masks.shape == (3601, 101, 101) and set(np.unique(masks)) <= {0, 65535}
  return (masks > 0).astype(np.uint8)


def _noisy_logits(truth, rng, scale=2.0, noise=1.0):
  return (np.where(truth > 0, scale, -scale) + rng.normal(0, noise, truth.shape)).astype(np.float32)


def _loop(logits, truth, thresholds=metrics.SWEEP_THRESHOLDS):
  return np.array([metrics.kaggle_map(logits > t, truth) for t in thresholds])


def test_constants():
  np.testing.assert_allclose(metrics.IOU_THRESHOLDS, 0.5 + 0.05 * np.arange(10), atol=1e-12)
  assert metrics.SWEEP_THRESHOLDS.shape == (80,)
  assert metrics.SWEEP_THRESHOLDS[0] == -0.5 and abs(metrics.SWEEP_THRESHOLDS[-1] - 0.4875) < 1e-12


@pytest.mark.parametrize("truth_idx, pred_idx, score", [
    ([], [], 1.0),                        # both empty
    ([], [5], 0.0),                       # empty truth, non-empty prediction
    ([1, 2], [], 0.0),                    # non-empty truth, empty prediction
    (range(4), range(2), 0.0),            # IoU exactly 0.5: not > 0.5
    (range(4), range(3), 0.5),            # IoU exactly 0.75: hits at 0.50..0.70
    (range(20), range(19), 0.9),          # IoU exactly 0.95: all but the last
    (range(10), list(range(1, 10)) + [50], 0.7),  # IoU 9/11 = 0.818: hits at 0.50..0.80
    (range(10), range(10), 1.0),          # perfect
    (range(10), range(10, 20), 0.0),      # disjoint
])
def test_hand_computed(truth_idx, pred_idx, score):
  truth, pred = _masks(truth_idx), _masks(pred_idx)
  assert metrics.kaggle_scores(pred, truth).tolist() == [score]
  assert metrics.kaggle_scores(pred.astype(bool), truth.astype(bool) * 255).tolist() == [score]
  assert metrics.kaggle_map(pred, truth) == score


def test_scores_and_map_over_a_batch():
  truth = _masks([], [], [1, 2], range(4), range(10))
  pred = _masks([], [5], [], range(3), list(range(1, 10)) + [50])
  np.testing.assert_array_equal(metrics.kaggle_scores(pred, truth), [1.0, 0.0, 0.0, 0.5, 0.7])
  assert metrics.kaggle_map(pred, truth) == pytest.approx(2.2 / 5, abs=1e-15)
  # Probabilities: P = pred > threshold, strictly.
  probs = pred * 0.5
  assert metrics.kaggle_scores(probs, truth).tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]
  assert metrics.kaggle_scores(probs, truth, threshold=0.4).tolist() == [1.0, 0.0, 0.0, 0.5, 0.7]


def _random_case(rng, n=64, size=16, in_range=0.5):
  cover = rng.random((n, 1, 1)) ** 2 * (rng.random((n, 1, 1)) > 0.3)
  truth = (rng.random((n, size, size)) < cover).astype(np.uint8)
  wide = np.where(truth, 2.0, -2.0) + rng.normal(0, 1.0, truth.shape)
  narrow = rng.uniform(-0.6, 0.6, truth.shape) + 0.1 * (truth - 0.5)
  dense = rng.random((n, 1, 1)) < in_range
  logits = np.where(dense, narrow, wide).astype(np.float32)
  # Logits exactly at the thresholds (rounded to float32 and not) and one ulp either side.
  thr32 = metrics.SWEEP_THRESHOLDS.astype(np.float32)[rng.integers(0, 80, 600)]
  flat = logits.reshape(-1)
  flat[:600] = thr32
  flat[600:1200] = np.nextafter(thr32, np.float32(1))
  flat[1200:1800] = np.nextafter(thr32, np.float32(-1))
  flat[1800:1803] = [np.nan, np.inf, -np.inf]
  flat[-3:] = [np.nan, np.inf, -np.inf]
  return logits, truth


@pytest.mark.parametrize("seed", [0, 1])
def test_sweep_equals_loop(seed):
  rng = np.random.default_rng(seed)
  logits, truth = _random_case(rng)
  ref = _loop(logits, truth)
  assert np.ptp(ref) > 0.02
  np.testing.assert_array_equal(metrics.threshold_sweep(logits, truth), ref)
  logits64 = logits.astype(np.float64)
  logits64.reshape(-1)[:100] = metrics.SWEEP_THRESHOLDS[rng.integers(0, 80, 100)]
  np.testing.assert_array_equal(metrics.threshold_sweep(logits64, truth), _loop(logits64, truth))
  # All-dense and all-sparse chunks take different paths.
  for in_range in (0.0, 1.0):
    logits, truth = _random_case(rng, in_range=in_range)
    np.testing.assert_array_equal(metrics.threshold_sweep(logits, truth), _loop(logits, truth))


def test_sweep_other_thresholds():
  rng = np.random.default_rng(2)
  logits, truth = _random_case(rng, n=32)
  for thr in ([0.0], [0.3, -0.2, 0.05, 0.05, -0.5], np.linspace(-1, 1, 7), metrics.SWEEP_THRESHOLDS[::-1]):
    np.testing.assert_array_equal(metrics.threshold_sweep(logits, truth, thr), _loop(logits, truth, thr))


def test_best_threshold_first_argmax():
  rng = np.random.default_rng(3)
  truth = _masks([], range(30), range(40, 60))
  far = np.where(truth > 0, 5.0, -5.0).astype(np.float32)
  best, thr = metrics.best_threshold(far, truth)  # every threshold ties at 1.0
  assert (best, thr) == (1.0, -0.5)
  logits, truth = _random_case(rng)
  maps = _loop(logits, truth)
  best, thr = metrics.best_threshold(logits, truth)
  j = int(np.flatnonzero(maps == maps.max())[0])
  assert best == maps.max() and thr == metrics.SWEEP_THRESHOLDS[j]
  # A plateau: false positives at -0.25 until the threshold reaches -0.25, then perfect up to 0.2.
  truth = _masks(range(50))
  logits = np.full(truth.shape, -0.6, np.float32)
  logits[truth > 0] = 0.2
  logits.reshape(-1)[60:90] = -0.25
  maps = _loop(logits, truth)
  assert maps[19] == 0.3 and np.all(maps[20:57] == 1.0) and maps[57] == 0.0  # float32(0.2) > 0.2
  assert metrics.best_threshold(logits, truth) == (1.0, metrics.SWEEP_THRESHOLDS[20])


def test_sweep_real_masks_timing(real_masks):
  rng = np.random.default_rng(5)
  for name, scale, noise in (("model-like", 2.0, 1.0), ("all near 0", 0.1, 0.1)):
    logits = _noisy_logits(real_masks, rng, scale, noise)
    metrics.threshold_sweep(logits[:100], real_masks[:100])
    start = time.perf_counter()
    maps = metrics.threshold_sweep(logits, real_masks)
    took = time.perf_counter() - start
    print(f"\nthreshold_sweep, {name} logits, {len(real_masks)} real masks: {took:.3f} s; best mAP "
          f"{maps.max():.4f}")
    some = np.arange(0, 80, 16)
    np.testing.assert_array_equal(maps[some], _loop(logits, real_masks, metrics.SWEEP_THRESHOLDS[some]))
