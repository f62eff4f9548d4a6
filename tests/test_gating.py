"""Empty handling at inference: a gate removes a known false positive, keeps a known faint mask, and the
sweep picks the known best combination on hand-made tiles; its scores equal the gated masks' mAP."""
import numpy as np
import pytest

from salt_jax import metrics
from salt_jax.inference import gating


def _case():
  """4 tiles of logits: 0 empty with a small confident blob (a false positive, p(empty) 0.95), 1 empty and
  clean, 2 with salt whose logits are faint (max 0.1 < the 0.2 threshold; p(empty) 0.05), 3 with salt
  predicted well."""
  truth = np.zeros((4, 101, 101), np.uint8)
  logits = np.full((4, 101, 101), -2.0, np.float32)
  logits[0, 10:14, 10:14] = 1.0                       # 16 px false positive
  truth[2, 30:70, 30:70] = 1
  logits[2, 30:70, 30:70] = 0.1
  truth[3, :50] = 1
  logits[3, :50] = 2.0
  p_empty = np.array([0.95, 0.9, 0.05, 0.01])
  return logits, truth, p_empty


def test_min_area_removes_the_false_positive():
  logits, truth, p_empty = _case()
  plain = gating.Gate(0.2).apply(logits, p_empty)
  assert plain[0].sum() == 16 and metrics.kaggle_scores(plain, truth)[0] == 0.0
  gated = gating.Gate(0.2, min_area=20).apply(logits, p_empty)
  assert not gated[0].any() and (gated[3] == plain[3]).all()
  assert metrics.kaggle_scores(gated, truth)[0] == 1.0


def test_classifier_forces_empty_and_keeps_a_faint_mask():
  logits, truth, p_empty = _case()
  gate = gating.Gate(0.2, empty_above=0.8, salt_below=0.1, fallback=0.0)
  masks = gate.apply(logits, p_empty)
  assert not masks[0].any()                                        # p(empty) 0.95 > 0.8
  assert (masks[2] == (truth[2] > 0)).all()                        # redrawn at the fallback threshold
  assert (masks[3] == (truth[3] > 0)).all()
  assert metrics.kaggle_map(masks, truth) == 1.0


def test_sweep_picks_the_known_best_pair_and_scores_it_exactly():
  """Thresholds 0.2 and 0.5 both score 0.5 (tile 0's false positive and tile 2's faint salt lost); min area
  20 (not 10: the blob has 16 px) at 0.2 gives 0.75; the classifier rules on top give 1."""
  logits, truth, p_empty = _case()
  thresholds = np.array([0.2, 0.5])
  plain_map, plain = gating.sweep(logits, truth, p_empty, thresholds=thresholds)
  assert (plain_map, plain) == (0.5, gating.Gate(0.2))  # ties go to the first threshold, as SPEC 6.2
  best_map, best = gating.sweep(logits, truth, p_empty, min_areas=(10, 20), thresholds=thresholds)
  assert (best_map, best) == (0.75, gating.Gate(0.2, min_area=20))
  assert best_map == metrics.kaggle_map(best.apply(logits, p_empty), truth)
  full_map, full = gating.sweep(logits, truth, p_empty, min_areas=(20,), empty_aboves=(0.8,),
                                salt_belows=(0.1,), thresholds=thresholds, fallbacks=np.array([0.5, 0.0]))
  assert full_map == 1.0 and (full.salt_below, full.fallback) == (0.1, 0.0)
  assert metrics.kaggle_map(full.apply(logits, p_empty), truth) == 1.0


def test_sweep_equals_the_gated_masks_map_on_random_cases():
  rng = np.random.default_rng(0)
  logits = rng.normal(-0.3, 0.4, (12, 101, 101)).astype(np.float32)
  truth = (rng.random((12, 101, 101)) < np.linspace(0, 0.6, 12)[:, None, None]).astype(np.uint8)
  p_empty = rng.random(12)
  for kwargs in (dict(min_areas=(5000,)), dict(empty_aboves=(0.5,)), dict(salt_belows=(0.7,))):
    value, gate = gating.sweep(logits, truth, p_empty, fallbacks=np.array([-1.0]), **kwargs)
    assert value == pytest.approx(metrics.kaggle_map(gate.apply(logits, p_empty), truth))


def test_parse_candidates():
  assert gating.parse_candidates("10, 25,50", int) == (10, 25, 50)
  assert gating.parse_candidates("") == ()
