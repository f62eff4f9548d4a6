"""The faithful two-stage pipeline, shortened to run on a 2-core laptop (the tests' pipeline; the budget one
is configs/pipeline_cpu.py).

Stage 1: configs/tiny.py (`model_tiny` on the faithful recipe) on folds 0 and 1 with a short schedule
(1 warm-up epoch and one 3-epoch cosine cycle, validated after cycle epochs 2 and 3), flip-TTA
prediction of all 18,399 test tiles, fold voting, jigsaw post-processing. Stage 2: the same model trained
twice with pseudo labels (part k: test half k on fold k, p=0.5), each part predicting only the other
test half (the seed README's protocol; it also halves the prediction time), voting, post-processing ->
final submission.
Most of the time goes to the three full-test-size predictions (~10 min each at ~30 images/s).
"""
import ml_collections

from salt_jax import configlib

SHORT_SCHEDULE = dict(warmup_epochs=1, cycle_num=1, cycle_len=3, eval_start=2, eval_every=1)


def get_config():
  c = ml_collections.ConfigDict()
  c.data_dir = "../shared/tgs"
  # Any training key (configlib.KEYS) may be set here or by flag; cache_dir "": <outdir>/cache.
  c.train_overrides = configlib.overrides_dict(cache_dir="", **SHORT_SCHEDULE)
  c.stage1 = ml_collections.ConfigDict()
  c.stage1.models = [dict(name="tiny", config="configs/tiny.py", overrides=dict(seed=0))]
  c.stage1.folds = (0, 1)
  c.stage2 = ml_collections.ConfigDict()
  c.stage2.models = [dict(name="tiny", config="configs/tiny.py", overrides=dict(seed=1))]
  c.stage2.part_folds = (0, 1)     # part k: pseudo labels of test half k, trained on fold part_folds[k]
  c.stage2.pseudo_prob = 0.5
  c.stage2.pseudo_seed = 0
  c.stage2.predict_other_half = True
  return c
