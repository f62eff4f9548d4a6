"""gpu_quick: the best model_34 fold one GPU can train in about 8 minutes from the command (bfloat16).

    python -m salt_jax.train --config=configs/gpu_quick.py --workdir=runs/gpu_quick

Sized from the H100 run of 2026-11-25 (`../shared/bench/h100-2026-11-25.md`): model_34 in bfloat16 from
random weights reached a fold-0 validation mAP of 0.817 at epoch 35 with the faithful SGD restarts (10
warm-up epochs, then cosine cycles of 30) at ~6.6 s per epoch with the host-fed loop; the
device-resident loop with the whole epoch in one compiled call is meant to bring an epoch of 3,240 tiles
to ~3-4 s. On top of that basis, this config carries the budget recipe of configs/cpu_small.py
(docs/recipes.md): tiles padded to 104 px, AdamW with one warm-up-then-cosine decay over the whole
run, an EMA of the weights, and BCE+Dice first, then Lovasz: 10 BCE+Dice epochs, then one 90-epoch Lovasz
phase (100 epochs, the same as before), validated after its epochs 50, 60, ..., 90. The per-step values
(lr, weight decay, warm-up, EMA decay) are cpu_small's: the batch, and so the steps per epoch, are the
same. It keeps model_34's full-size heads: cpu_small's half-size heads (model_tiny_s2) buy speed where
narrow full-size layers are memory-bound on a CPU, which is not measured for model_34 on a GPU.
Its 100 epochs are 2.5x cpu_small's 40, so it trains with the warp that let cpu_small's recipe use 2x its
compute on CPU (configlib.WARP; fold 0: 0.8191 against 0.8006 without, docs/recipes.md "The compute curve").
Unmeasured on a GPU and on model_34: all of it (the recipe was measured on model_tiny on CPUs), the
time (target ~8 min) and the mAP (target >= 0.83); BENCHMARKS.md lists the command.
"""
from salt_jax import configlib


def get_config():
  config = configlib.budget_recipe(configlib.base_config())
  config.model = "model_34"
  config.dtype = "bfloat16"
  config.warmup_epochs = 10
  config.cycle_num = 1
  config.cycle_len = 90
  config.eval_start = 50
  config.eval_every = 10
  config.eval_batch_size = 128
  config.steps_per_call = 0       # the whole epoch in one compiled call
  config.update(configlib.WARP)
  return config
