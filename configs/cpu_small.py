"""cpu_small: the quick start on a 2-core laptop, fold 0 from random weights in ~20-35 minutes.

    python -m salt_jax.train --config=configs/cpu_small.py --workdir=runs/cpu_small --config.fold=0

The budget recipe of docs/recipes.md on model_tiny_s2 (model_tiny with its hypercolumn and heads at half
the input size, 1.8x the training speed on CPU): the tiles padded to 104 px (not 128: 0.66x the pixels,
the same random placement), AdamW with one warm-up-then-cosine decay over the whole run (in steps, so the
short run still anneals), an exponential moving average of the weights (validated, snapshotted and
predicted), 20 BCE+Dice epochs then one 20-epoch Lovasz cycle (40 epochs, 129,600 image-steps),
validated after its epochs 14, 16, 18 and 20, with XLA:CPU's Eigen convolutions and YNNPACK reductions
for the train step (`cpu_ynn_fusion=reduce`; other backends ignore the key). Measured (docs/recipes.md,
r10): fold-0 validation mAP 0.8008 (best snapshot; 0.7989 at the end) in 20.7 min on 2 idle cores of an
AVX-512 AMD EPYC (Zen 5), cold start included; r9 (16 + 16 epochs, the old kernels) scored 0.8058 in
33.9 min on an AVX2 EPYC that runs the step at about half that speed; the faithful recipe's SGD and two
short cosine restarts (configs/tiny.py) scored 0.6834 in about 40 min.
"""
from salt_jax import configlib


def get_config():
  config = configlib.budget_recipe(configlib.base_config())
  config.model = "model_tiny_s2"
  config.batch_size = 16
  config.warmup_epochs = 20
  config.cycle_num = 1
  config.cycle_len = 20
  config.eval_start = 14
  config.eval_every = 2
  config.eval_batch_size = 64
  config.cpu_ynn_fusion = "reduce"
  return config
