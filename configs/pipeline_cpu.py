"""The two-stage pipeline sized for a 2-core laptop (about an hour on the real data).

Stage 1: two cpu_small models (different seeds) x folds 0 and 1, then voting and jigsaw post-processing;
stage 2: one pseudo-label model trained twice (test half 0 on fold 0, half 1 on fold 1).
"""
import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.data_dir = "../shared/tgs"
  c.train_overrides = ml_collections.ConfigDict(dict(cache_dir=""))
  c.stage1 = ml_collections.ConfigDict()
  c.stage1.models = [
      dict(name="tiny_a", config="configs/cpu_small.py", overrides=dict(seed=0)),
      dict(name="tiny_b", config="configs/cpu_small.py", overrides=dict(seed=1)),
  ]
  c.stage1.folds = [0, 1]
  c.stage2 = ml_collections.ConfigDict()
  c.stage2.models = [dict(name="tiny", config="configs/cpu_small.py", overrides=dict(seed=2))]
  c.stage2.part_folds = [0, 1]     # part k: pseudo labels of test half k, trained on fold part_folds[k]
  c.stage2.pseudo_prob = 0.5
  c.stage2.pseudo_seed = 0
  return c
