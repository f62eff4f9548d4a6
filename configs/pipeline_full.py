"""The faithful two-stage pipeline of the original (GPU/TPU sized; SPEC 0, 7.2, 9).

Stage 1: the six-model cycle-voting ensemble over 10 folds x 7 cycles, then jigsaw post-processing.
Stage 2: model_34, model_50A_slim and model_101A retrained with pseudo labels (part 0: test half 0 on
fold 0; part 1: test half 1 on fold 1), all six pseudo models vote, post-processing -> final submission.
"""
import ml_collections

from salt_jax import configlib

STAGE1 = ("model_50A", "model_50A_slim", "model_101A", "model_101B", "model_152", "model_154")
STAGE2 = ("model_34", "model_50A_slim", "model_101A")


def get_config():
  c = ml_collections.ConfigDict()
  c.data_dir = "../shared/tgs"
  c.train_overrides = configlib.overrides_dict(cache_dir="")  # any KEYS key; cache_dir "": <outdir>/cache
  c.stage1 = ml_collections.ConfigDict()
  c.stage1.models = [dict(name=m, config=f"configs/{m}.py", overrides={}) for m in STAGE1]
  c.stage1.folds = tuple(range(10))
  c.stage2 = ml_collections.ConfigDict()
  c.stage2.models = [dict(name=m, config=f"configs/{m}.py", overrides={}) for m in STAGE2]
  c.stage2.part_folds = (0, 1)
  c.stage2.pseudo_prob = 0.5
  c.stage2.pseudo_seed = 0
  c.stage2.predict_other_half = False  # the original: every pseudo model predicts all test tiles
  return c
