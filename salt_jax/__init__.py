"""salt_jax: the 4th-place TGS Salt Identification solution in JAX/Flax.

Layout (each layer imports only the ones above it; tests/test_architecture.py checks it):
  repo, geometry, fileio, metrics, losses, schedules, parallel, viz, configlib, cli, weights
             foundations: the checkout's folders, tile geometry, files, metric and losses, schedules,
             meshes, the config, programs
  data/      Kaggle loading, RLE, k-fold split, on-device augmentation, pseudo-label tiles
  models/    encoders, decoder blocks, the U-Net variants, PyTorch weight import
  workdir/   a run's folder on disk: layout, records, lock (rundir), states and snapshots (checkpoints)
  inference/ flip-TTA prediction (tta), predict, gating, ensemble, breakdown
  training/  the training program (train), epochs, steps, foldgroup, records
  jigsaw/    mosaics of the tiles and the post-processing rules
  seismic/   whole sections and SEG-Y volumes (sections, segy, segment)
  tools/     experiments: bench, section_check
  pipeline   the whole solution, every stage above, in one command
train, predict, ensemble, segment, bench: the command modules (`python -m salt_jax.train`), one block each.
"""

__version__ = "0.1.0"
