"""salt_jax: the 4th-place TGS Salt Identification solution in JAX/Flax.

Layout (data flows top to bottom):
  data/      Kaggle loading, RLE, k-fold split, on-device augmentation
  models/    encoders, decoder blocks, the seven U-Net variants, weight import
  losses.py, metrics.py
  train.py, predict.py
  ensemble.py, jigsaw/, pseudo.py   post-processing
"""

__version__ = "0.1.0"
