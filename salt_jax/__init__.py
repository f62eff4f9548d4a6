"""salt_jax: the 4th-place TGS Salt Identification solution in JAX/Flax, and salt segmentation of seismic
sections and volumes with its models.

The public Python API (docs/api.md), imported on first use so that `import salt_jax` stays light:

  load(workdirs, **options) -> Segmenter    trained workdirs voting on tiles, sections and volumes
  Segmenter, Prediction                      its class and its result (probs, mask)
  build_model(model, dtype="float32", **options) -> flax.linen.Module   a U-Net variant by name
  load_config(path) -> ml_collections.ConfigDict                        a config file's get_config()
  train_and_evaluate(config, workdir) -> {fold: {"history", "bests"}}   what `python -m salt_jax.train` runs

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
  seismic/   whole sections and SEG-Y volumes (sections, segy, segment), the Segmenter of the API
  tools/     experiments: bench, section_check, accelerator_check
  pipeline   the whole solution, every stage above, in one command
train, predict, ensemble, segment, bench, accelerator_check: the command modules (`python -m salt_jax.train`),
one block each.
"""
import importlib

__version__ = "0.1.0"

# name -> (module, attribute): what the public names are, imported when first asked for.
_PUBLIC = {
    "load": ("salt_jax.seismic.segmenter", "load"),
    "Segmenter": ("salt_jax.seismic.segmenter", "Segmenter"),
    "Prediction": ("salt_jax.seismic.segmenter", "Prediction"),
    "build_model": ("salt_jax.models", "build"),
    "load_config": ("salt_jax.configlib", "load_config_file"),
    "train_and_evaluate": ("salt_jax.training.train", "train_and_evaluate"),
}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str):
  if name not in _PUBLIC:
    raise AttributeError(f"module 'salt_jax' has no attribute {name!r}")
  module, attribute = _PUBLIC[name]
  value = getattr(importlib.import_module(module), attribute)
  globals()[name] = value
  return value


def __dir__():
  return sorted(set(globals()) | set(_PUBLIC))
