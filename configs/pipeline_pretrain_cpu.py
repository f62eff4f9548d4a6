"""Pseudo-label pretraining as the first place did it, on fold 0 for 2 CPU cores (issue 41's experiment).

    python -m salt_jax.pipeline --config=configs/pipeline_pretrain_cpu.py --outdir=runs/pretrain_f0

Stage 1, the teacher: configs/cpu_small.py (the quick start, seed 0) on fold 0; flip-TTA predictions of its
validation and test tiles; the jigsaw rules vertical and empty with fold 0's labels hidden (held_out), which
label every test tile (stage1/held_out/fold_0.csv). The teacher never saw fold 0's validation tiles.

Stage 2, the student (stage2.init='pretrain'): cpu_small with the warp that let 2x training use its compute
(configlib.WARP, docs/recipes.md "The compute curve"), trained first from random weights on the 18,399
pseudo-labelled test tiles alone for cpu_small's 40 epochs (129,280 image-steps), then fine-tuned from that
on fold 0's training tiles for another 40 (no pseudo labels). Its equal-compute control is the same recipe trained from
random weights for 80 epochs on the training tiles (`curve_2x_geo_s0` in docs/recipes.md: the command there).
The stage table (<outdir>/stages.csv) has the student before fine-tuning, after it, and against the teacher.
"""
import ml_collections

from salt_jax import configlib


def get_config():
  c = ml_collections.ConfigDict()
  c.data_dir = "../shared/tgs"
  c.train_overrides = configlib.overrides_dict(cache_dir="")  # cache_dir "": <outdir>/cache
  c.jigsaw_steps = ("vertical", "empty")
  c.stage1 = ml_collections.ConfigDict()
  c.stage1.models = [dict(name="small", config="configs/cpu_small.py", overrides=dict(seed=0))]
  c.stage1.folds = (0,)
  c.stage2 = ml_collections.ConfigDict()
  c.stage2.models = [dict(name="small", config="configs/cpu_small.py", overrides=dict(seed=0))]
  c.stage2.overrides = ml_collections.ConfigDict(configlib.WARP)  # both phases
  c.stage2.pretrain_overrides = ml_collections.ConfigDict()  # the first phase: cpu_small's 40 epochs
  c.stage2.part_folds = (0,)
  c.stage2.labels = "fold"       # fold 0's own stage-1 model labels the test tiles
  c.stage2.halves = False        # every test tile
  c.stage2.init = "pretrain"
  c.stage2.pseudo_prob = 1.0     # (the first phase is pseudo labels only whatever this says)
  c.stage2.pseudo_tiles = 0      # every test tile
  c.stage2.pseudo_seed = 0
  c.stage2.predict_other_half = False
  return c
