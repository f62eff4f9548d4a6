"""The two-stage pipeline on the budget recipe, for 2 CPU cores (the whole solution from random weights).

    python -m salt_jax.pipeline --config=configs/pipeline_cpu.py --outdir=runs/pipeline_cpu

Stage 1: configs/cpu_small.py (the quick start's recipe, at r9's 16 + 16 epochs) twice, seeds 0 and 1, on
folds 0-2 (each model's folds trained together); flip-TTA predictions of every fold's validation and test
tiles; per fold the two models vote (with two voters, a pixel is salt when either says so); the folds vote
on the test tiles; the jigsaw rules vertical and empty -> submission (smooth, measured as "not applied" in
the stage table, lost one tile of fold 0 in both full runs: -0.0009 each time). The stage table
(<outdir>/stages.csv) gives every step's out-of-fold mAP on the 3 folds' validation tiles.

Stage 2 is off (stage2.models empty). Measured in the full run of 2026-12-04 (docs/recipes.md, "The full
run"; 2 idle Zen 5 EPYC cores): stage 1 0.8054 out of fold in 108 min; stage 2 (each stage-1 model
fine-tuned for 6 Lovasz epochs at peak lr 5e-4 on every test tile pseudo-labelled by its fold's own models,
p = 0.25: the keys below) added +0.0001 for 31 min. Set stage2.models (as configs/pipeline_gpu.py does) to
run it. A third stage-1 seed (small_c, seed 2; docs/recipes.md) measured 0.8075 after vertical + empty
against this config's 0.8063, for about 56 minutes more (stage 1 ~2 h 42 min); not taken. One wide model
(model_small_s2) in place of the two seeds measured 0.8038 in 89 min (docs/recipes.md); not taken.
"""
import ml_collections

from salt_jax import configlib

# r9's 16 BCE+Dice + 16 Lovasz epochs (fold 0: 0.8058; cpu_small's 20 + 20: 0.8008, 25 + 25: 0.7972, all
# within one fold's noise): 20 % less training than cpu_small, so the whole run fits 3 hours with room.
R9_EPOCHS = dict(warmup_epochs=16, cycle_len=16, eval_start=10, eval_every=2)


def get_config():
  c = ml_collections.ConfigDict()
  c.data_dir = "../shared/tgs"
  c.train_overrides = configlib.overrides_dict(cache_dir="")  # any KEYS key; cache_dir "": <outdir>/cache
  c.jigsaw_steps = ["vertical", "empty"]  # smooth lost the same fold-0 tile in both full runs (-0.0009)
  c.stage1 = ml_collections.ConfigDict()
  c.stage1.models = [dict(name="small", config="configs/cpu_small.py", overrides=dict(seed=0, **R9_EPOCHS)),
                     dict(name="small_b", config="configs/cpu_small.py", overrides=dict(seed=1, **R9_EPOCHS))]
  c.stage1.folds = [0, 1, 2]
  c.stage2 = ml_collections.ConfigDict()
  c.stage2.models = []  # off: +0.0001 for 31 min (the docstring); the measured models were
  # dict(name="small", config="configs/cpu_small.py", overrides=dict(seed=2)) and "small_b" with seed 3
  c.stage2.overrides = ml_collections.ConfigDict(dict(warmup_epochs=0, cycle_len=6, eval_start=2, eval_every=2,
                                                      lr=5e-4))
  c.stage2.part_folds = [0, 1, 2]
  c.stage2.labels = "fold"       # 'ensemble' (the original): the stage-1 vote of every fold
  c.stage2.halves = False        # True (the original): part k uses test half k
  c.stage2.init = "stage1"       # 'random' (the original): train from scratch
  c.stage2.pseudo_prob = 0.25
  c.stage2.pseudo_tiles = 0      # 0: every chosen test tile; N: the N most confident
  c.stage2.pseudo_seed = 0
  c.stage2.predict_other_half = False
  return c
