"""The faithful training configuration every `configs/*.py` starts from (SPEC 5, 11).

Each key is a knob a user may override by flag, e.g. `--config.fold=3 --config.batch_size=32`.
"""
import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """Hyper-parameters of the original solution for one model and one fold."""
  c = ml_collections.ConfigDict()

  # Model (salt_jax.models.MODELS): the variant and its switches (SPEC 3, 10.1).
  c.model = "model_34"
  c.align_corners = True          # bilinear x2 as torch <= 0.3.1; False = half-pixel resize
  c.decoder_dropout = 0.0         # the original's functional dropouts were no-ops
  c.head_dropout = 0.0            # real Dropout2d(0.5) only in model_101A/101B heads
  c.dtype = "float32"             # compute dtype: float32 or bfloat16 (params stay float32)
  c.pretrained = ""               # ImageNet encoder weights (.pth/.pth.tar/.safetensors), optional

  # Data and folds (SPEC 1).
  c.data_dir = "../shared/tgs"
  c.cache_dir = ""                # where to cache the decoded data as .npz ("" = no cache)
  c.fold = 0
  c.num_folds = 10
  c.fold_seed = 0                 # folds are written to <workdir>/folds.csv and reused
  c.train_subset = 0              # >0: train on the first N shuffled ids of the fold (smoke runs)
  c.valid_subset = 0              # >0: validate on the first N ids of the fold

  # Pseudo-labels (SPEC 9).
  c.pseudo_csv = ""               # submission CSV whose masks label the test images
  c.pseudo_split = 0              # which half of the test set (0 or 1)
  c.pseudo_prob = 0.5             # probability a sample is replaced by a pseudo-labelled one
  c.pseudo_split_file = ""        # CSV id,half of the test split ("" = <workdir>/pseudo_split.csv)
  c.pseudo_seed = 0
  c.pseudo_predict_other_half = False  # README protocol: predict only the other half (original: all)

  # Optimiser and schedule (SPEC 5).
  c.batch_size = 16               # global batch over all devices and hosts
  c.lr = 0.01
  c.eta_min = 0.001
  c.momentum = 0.9
  c.weight_decay = 2e-4
  c.warmup_epochs = 10            # BCE+Dice epochs at constant lr
  c.cycle_num = 7
  c.cycle_len = 50
  c.eval_start = 20               # validate after epoch e of a cycle when e >= eval_start ...
  c.eval_every = 5                # ... and e % eval_every == 0 (epochs counted from 1)

  # Losses (SPEC 4).
  c.class_weight = 0.05
  c.no_empty_weight = 0.5
  c.dice_weight = 0.5
  c.bce_weight = 0.9

  # Evaluation, logging, runtime.
  c.eval_batch_size = 32
  c.keep_min_loss = True          # also keep the lowest-validation-loss snapshot per cycle
  c.log_every = 20                # progress-bar refresh (steps); one log line per epoch regardless
  c.seed = 0
  c.distributed = False           # call jax.distributed.initialize() (also when JAX_COORDINATOR_ADDRESS is set)
  return c


def load_config_file(path) -> ml_collections.ConfigDict:
  """`get_config()` of a config file given by path (what `--config=<path>` does, for scripts/tests)."""
  import importlib.util
  import pathlib
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"config file {path} does not exist")
  spec = importlib.util.spec_from_file_location(f"_salt_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()
