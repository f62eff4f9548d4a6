"""The faithful training configuration every `configs/*.py` starts from (SPEC 5, 11), its validation and
the rules for resuming a run with a changed config.

Each key is a knob a user may override by flag, e.g. `--config.fold=3 --config.batch_size=32`.
`validate` refuses a config that cannot run before anything is written; `resume_conflicts` lists the keys
that a re-run of a fold may not change (RESUME_FIXED_KEYS) and that differ from the recorded config.
"""
import difflib
import math
import pathlib
import sys
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import ml_collections
from absl import app, flags
from ml_collections import config_dict


class ConfigError(ValueError):
  """A config value (or key) that cannot run; the message names the key."""


def base_config() -> ml_collections.ConfigDict:
  """Hyper-parameters of the original solution for one model and one fold."""
  c = ml_collections.ConfigDict()

  # Model (salt_jax.models.MODELS): the variant and its switches (SPEC 3, 10.1).
  c.model = "model_34"
  # Unset (None) options take the variant's default from salt_jax.models (the one place they live):
  # align_corners True (bilinear x2 as torch <= 0.3.1; False = half-pixel), decoder_dropout 0.0 (the
  # original's functional dropouts were no-ops), head_dropout 0.5 for model_101A/101B (real Dropout2d) else 0.
  c.align_corners = config_dict.placeholder(bool)
  c.decoder_dropout = config_dict.placeholder(float)
  c.head_dropout = config_dict.placeholder(float)
  c.dtype = "float32"             # compute dtype: float32 or bfloat16 (params stay float32)
  c.pretrained = ""               # ImageNet encoder weights (.pth/.pth.tar/.safetensors), optional
  c.init_from = ""                # a whole-model checkpoint of the original PyTorch solution (.pth), optional

  # Data and folds (SPEC 1).
  c.data_dir = "../shared/tgs"
  c.cache_dir = ""                # where to cache the decoded data as .npz ("" = no cache)
  c.data_source = "kaggle"        # "kaggle": the folder at data_dir; "tfds": the tgs_salt build (same tiles)
  c.tfds_data_dir = ""            # data_source=tfds: the TFDS data dir holding tgs_salt/ (path or gs:// URL)
  c.fold = 0
  c.folds = ""                    # folds trained together in one program: "0,1,2", "all" ("" = just `fold`)
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
  c.keep_checkpoints = 2          # latest end-of-epoch states kept; a corrupt newest falls back to older
  # Train steps per compiled call on device-resident data: 0 = the whole epoch in one lax.scan (no
  # per-step dispatch; to be measured on GPUs), 1 = one step per call (XLA:CPU runs scanned steps ~10x
  # slower than single steps, so 1 is the default until the accelerator figures are in).
  c.steps_per_call = 1
  # How several folds share one compiled step: "vmap" (one batched program; folds spread over the devices),
  # "loop" (the folds' steps side by side in one program; XLA:CPU runs vmapped convolutions ~2.5x slower),
  # "auto" (loop on CPU, vmap on GPU and TPU).
  c.fold_map = "auto"
  c.compilation_cache_dir = "~/.cache/salt_jax/jax"  # JAX's persistent compilation cache ("" = off)
  c.seed = 0
  c.distributed = False           # call jax.distributed.initialize() (also when JAX_COORDINATOR_ADDRESS is set)
  return c


# Keys a re-run or resume of a fold may change: they do not change the data, the model or the schedule of
# the epochs already trained (cycle_num only moves where the run stops).
RESUME_SAFE_KEYS = frozenset({"data_dir", "cache_dir", "data_source", "tfds_data_dir", "eval_batch_size",
                              "distributed", "cycle_num", "keep_checkpoints", "steps_per_call",
                              "compilation_cache_dir", "folds", "fold_map"})
# Keys that must equal the fold's recorded config (data, model, schedule, losses, seeds, snapshots).
RESUME_FIXED_KEYS = frozenset({
    "model", "align_corners", "decoder_dropout", "head_dropout", "dtype", "pretrained", "init_from",
    "fold", "num_folds", "fold_seed", "train_subset", "valid_subset",
    "pseudo_csv", "pseudo_split", "pseudo_prob", "pseudo_split_file", "pseudo_seed", "pseudo_predict_other_half",
    "batch_size", "lr", "eta_min", "momentum", "weight_decay", "warmup_epochs", "cycle_len", "eval_start",
    "eval_every", "class_weight", "no_empty_weight", "dice_weight", "bce_weight", "keep_min_loss", "seed"})

_POSITIVE_INTS = ("batch_size", "eval_batch_size", "cycle_num", "cycle_len", "eval_every")
_NON_NEGATIVE_INTS = ("warmup_epochs", "eval_start", "train_subset", "valid_subset", "steps_per_call", "seed",
                      "fold_seed", "pseudo_seed", "fold")
_NON_NEGATIVE_FLOATS = ("lr", "eta_min", "momentum", "weight_decay", "class_weight", "no_empty_weight",
                        "dice_weight", "bce_weight")
_FILES = ("pretrained", "init_from", "pseudo_csv")


FOLD_MAPS = ("auto", "vmap", "loop")


def fold_list(config) -> List[int]:
  """The folds a training run trains together: config.folds ("0,2,5", "all") or, when empty, [config.fold]."""
  spec = config.folds
  if not isinstance(spec, str):
    raise ConfigError(f"config.folds must be a string such as '0,1,2', 'all' or '', got {spec!r}")
  spec = spec.strip()
  if not spec:
    return [config.fold]
  if spec == "all":
    return list(range(config.num_folds))
  try:
    folds = [int(part) for part in spec.split(",")]
  except ValueError:
    raise ConfigError(
        f"config.folds must be comma-separated fold numbers, 'all' or '', got {spec!r}") from None
  bad = [k for k in folds if not 0 <= k < config.num_folds]
  if bad:
    raise ConfigError(f"config.folds={spec!r}: fold {bad[0]} is outside 0..{config.num_folds - 1}")
  repeated = sorted({k for k in folds if folds.count(k) > 1})
  if repeated:
    raise ConfigError(f"config.folds={spec!r} lists fold {repeated[0]} more than once")
  return folds


def for_fold(config, fold: int) -> ml_collections.ConfigDict:
  """The config of one fold of a (fold-parallel) run: `fold` set, everything else as given."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.fold = fold
  return config


def closest_keys(key: str, known: Sequence[str], n: int = 3) -> List[str]:
  """Known keys that look like `key` (for "did you mean" messages)."""
  return difflib.get_close_matches(key, list(known), n=n, cutoff=0.5)


def _unknown_key_message(key: str, known: Sequence[str]) -> str:
  near = closest_keys(key, known)
  hint = f"closest known keys: {', '.join(near)}" if near else f"known keys: {', '.join(sorted(known))}"
  return f"unknown config key {key!r}; {hint}"


def _number(config, key: str, kind) -> Any:
  value = config[key]
  if isinstance(value, bool) or not isinstance(value, kind):
    raise ConfigError(f"config.{key} must be a{'n integer' if kind is int else ' number'}, got {value!r}")
  return value


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for any key or value of a training config that cannot run. Pure: reads only
  the config (and checks that the files it names exist), so a refused command changes nothing on disk."""
  from salt_jax import models, schedules  # pylint: disable=import-outside-toplevel
  from salt_jax.data import sources  # pylint: disable=import-outside-toplevel
  known = base_config()
  for key in sorted(set(config.keys()) - set(known.keys())):
    raise ConfigError(_unknown_key_message(key, list(known.keys())))
  if config.model not in models.MODELS:
    raise ConfigError(f"config.model {config.model!r} is not a registered model; valid: {', '.join(models.MODELS)}")
  if config.dtype not in models.DTYPES:
    raise ConfigError(f"config.dtype must be one of {sorted(models.DTYPES)}, got {config.dtype!r}")
  for key in _POSITIVE_INTS:
    if _number(config, key, int) <= 0:
      raise ConfigError(f"config.{key} must be > 0, got {config[key]}")
  for key in _NON_NEGATIVE_INTS:
    if _number(config, key, int) < 0:
      raise ConfigError(f"config.{key} must be >= 0, got {config[key]}")
  if _number(config, "keep_checkpoints", int) < 2:
    raise ConfigError(f"config.keep_checkpoints must be >= 2 (a corrupt newest state falls back to an "
                      f"older one), got {config.keep_checkpoints}")
  if _number(config, "num_folds", int) < 2:
    raise ConfigError(f"config.num_folds must be >= 2, got {config.num_folds}")
  if config.fold >= config.num_folds:
    raise ConfigError(f"config.fold={config.fold} is outside 0..{config.num_folds - 1}")
  fold_list(config)
  if config.data_source not in sources.SOURCES:
    raise ConfigError(f"config.data_source must be one of {', '.join(sources.SOURCES)}, "
                      f"got {config.data_source!r}")
  if config.data_source == "tfds" and not config.tfds_data_dir:
    raise ConfigError("config.data_source='tfds' needs config.tfds_data_dir (a TFDS data dir with tgs_salt/)")
  if config.fold_map not in FOLD_MAPS:
    raise ConfigError(f"config.fold_map must be one of {', '.join(FOLD_MAPS)}, got {config.fold_map!r}")
  for key in _NON_NEGATIVE_FLOATS:
    value = _number(config, key, (int, float))
    if not math.isfinite(value) or value < 0:
      raise ConfigError(f"config.{key} must be a finite number >= 0, got {value}")
  for key in ("pseudo_prob", "decoder_dropout", "head_dropout"):
    value = config[key]
    if value is not None and not (isinstance(value, (int, float)) and 0 <= value <= 1):
      raise ConfigError(f"config.{key} must be in [0, 1], got {value!r}")
  if config.pseudo_split not in (0, 1):
    raise ConfigError(f"config.pseudo_split must be 0 or 1, got {config.pseudo_split!r}")
  if not any(schedules.is_eval_epoch(config.warmup_epochs + e, warmup_epochs=config.warmup_epochs,
                                     cycle_len=config.cycle_len, eval_start=config.eval_start,
                                     eval_every=config.eval_every) for e in range(config.cycle_len)):
    raise ConfigError(f"no validation epoch in a cycle: eval_start={config.eval_start}, "
                      f"eval_every={config.eval_every}, cycle_len={config.cycle_len} (no snapshot would be kept)")
  for key in _FILES:
    if config[key] and not pathlib.Path(config[key]).is_file():
      raise ConfigError(f"config.{key}: file {config[key]} does not exist")


def _resolved(config: Mapping[str, Any]) -> Dict[str, Any]:
  """Fixed keys of a config, model options filled with the variant's defaults; absent keys are base defaults."""
  from salt_jax import models  # pylint: disable=import-outside-toplevel
  base = base_config()
  out = {k: (config[k] if k in config else base.get(k)) for k in RESUME_FIXED_KEYS}
  if out["model"] in models.MODELS:
    out.update(models.config_options(ml_collections.ConfigDict(out)))
  return out


def resume_conflicts(recorded: Mapping[str, Any], config: Mapping[str, Any]) -> List[Tuple[str, Any, Any]]:
  """[(key, recorded value, new value)] of the RESUME_FIXED_KEYS whose values differ, sorted by key."""
  old, new = _resolved(recorded), _resolved(config)
  return [(k, old[k], new[k]) for k in sorted(RESUME_FIXED_KEYS) if old[k] != new[k]]


def parse_flags(argv: Sequence[str]) -> List[str]:
  """absl's flag parsing for `app.run(main, flags_parser=configlib.parse_flags)`: an unknown
  `--config.key` is a one-line usage error naming the closest known keys, not a traceback."""
  try:
    return app.parse_flags_with_usage(list(argv))
  except AttributeError:  # ml_collections: an override of a key the config does not have
    unknown = _unknown_override(argv)
    if unknown is None:
      raise
    arg, key, known = unknown
    sys.exit(f"FATAL Flags parsing error: {arg}: {_unknown_key_message(key, known)}")


def _unknown_override(argv: Sequence[str]):
  """(argument, dotted key, known keys at that level) of the first `--config.a.b=v` whose key the
  config file given by `--config=path` lacks; None if there is none."""
  path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if path is None:
    return None
  config = load_config_file(path.split(":", 1)[0])
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    parts = arg[len("--config."):].split("=", 1)[0].split(".")
    node = config
    for i, part in enumerate(parts):
      if not isinstance(node, ml_collections.ConfigDict):
        break
      if part not in node:
        prefix = ".".join(parts[:i])
        return arg, ".".join(parts[:i + 1]), [f"{prefix}.{k}" if prefix else k for k in node.keys()]
      node = node[part]
  return None


def load_config_file(path) -> ml_collections.ConfigDict:
  """`get_config()` of a config file given by path (what `--config=<path>` does, for scripts/tests)."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"config file {path} does not exist")
  spec = importlib.util.spec_from_file_location(f"_salt_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()
