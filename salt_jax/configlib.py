"""The training config's keys, declared once (KEYS), and what follows from them: the faithful defaults
every `configs/*.py` starts from (SPEC 5, 11), the config's sections, validation, and the rules for
resuming a changed config.

Each key is a knob a user may override by flag, e.g. `--config.fold=3 --config.batch_size=32`: the config
a user writes and a run records is flat. Its declaration says which section it belongs to, how a value is
checked and whether a resumed run may change it. The components each receive their section, not the
whole config (`section(config, "optim")` for the optimiser, `models.build(**section(config, "model"))`):

    s = configlib.sections(config)
    model = models.build(**s.model)
    tx = schedules.make_optimizer(s.optim, steps_per_epoch)

`validate` refuses a config that cannot run before anything is written; `resume_conflicts` lists the
keys that a re-run of a fold may not change (RESUME_FIXED_KEYS) and that differ from the recorded config.
"""
import dataclasses
import difflib
import json
import math
import pathlib
import sys
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import ml_collections
from absl import app
from ml_collections import config_dict

from salt_jax import errors, geometry, models, schedules
from salt_jax.data import sources


class ConfigError(errors.BadInput):
  """A config value (or key) that cannot run; the message names the key."""


# Checks of one value: check(key, value) raises ConfigError naming the key.
def _number(key: str, value, kind) -> Any:
  if isinstance(value, bool) or not isinstance(value, kind):
    raise ConfigError(f"config.{key} must be a{'n integer' if kind is int else ' number'}, got {value!r}")
  return value


def _int_at_least(low: int, message: str = "") -> Callable[[str, Any], None]:
  def check(key, value):
    if _number(key, value, int) < low:
      raise ConfigError(f"config.{key} must be {'> 0' if low == 1 else f'>= {low}'}{message}, got {value}")
  return check


def _finite_non_negative(key: str, value) -> None:
  if not math.isfinite(_number(key, value, (int, float))) or value < 0:
    raise ConfigError(f"config.{key} must be a finite number >= 0, got {value}")


def _unit_interval(key: str, value) -> None:
  if value is not None and not (isinstance(value, (int, float)) and 0 <= value <= 1):
    raise ConfigError(f"config.{key} must be in [0, 1], got {value!r}")


def _boolean(key: str, value) -> None:
  if not isinstance(value, bool):
    raise ConfigError(f"config.{key} must be True or False, got {value!r}")


def _at_most(high: float) -> Callable[[str, Any], None]:
  def check(key, value):
    if not math.isfinite(_number(key, value, (int, float))) or not 0 <= value <= high:
      raise ConfigError(f"config.{key} must be a number in [0, {high}], got {value}")
  return check


def _below_one(key: str, value) -> None:
  if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1):
    raise ConfigError(f"config.{key} must be in [0, 1), got {value!r}")


def _candidates(kind) -> Callable[[str, Any], None]:
  def check(key, value):
    try:
      values = [kind(v) for v in str(value).split(",") if v.strip()] if isinstance(value, str) else None
    except ValueError:
      values = None
    if values is None or any(v < 0 for v in values):
      raise ConfigError(f"config.{key} must be a comma list of numbers >= 0 or '', got {value!r}")
  return check


def _one_of(*choices) -> Callable[[str, Any], None]:
  def check(key, value):
    if value not in choices:
      raise ConfigError(f"config.{key} must be one of {', '.join(map(str, choices))}, got {value!r}")
  return check


def _file_or_empty(key: str, value) -> None:
  if value and not pathlib.Path(value).is_file():
    raise ConfigError(f"config.{key}: file {value} does not exist")


def _weights_or_snapshot(key: str, value) -> None:
  if value and not pathlib.Path(value).exists():
    raise ConfigError(f"config.{key}: file {value} does not exist")
  if value and not (pathlib.Path(value).is_file() or (pathlib.Path(value) / "variables").is_dir()):
    raise ConfigError(f"config.{key}: {value} is neither a weight file nor a salt_jax snapshot folder")


def _registered_model(key: str, value) -> None:
  if value not in models.MODELS:
    raise ConfigError(f"config.{key} {value!r} is not a registered model; valid: {', '.join(models.MODELS)}")


def _dtype_name(key: str, value) -> None:
  if value not in models.DTYPES:
    raise ConfigError(f"config.{key} must be one of {sorted(models.DTYPES)}, got {value!r}")


_POSITIVE, _NON_NEGATIVE = _int_at_least(1), _int_at_least(0)
YNN_FUSION_TYPES = ("dot", "eltwise", "reduce", "individual_convolution", "individual_dot")


def _ynn_fusion_types(key, value):
  parts = value.split(",") if isinstance(value, str) and value not in ("", "none") else []
  if not isinstance(value, str) or any(p not in YNN_FUSION_TYPES for p in parts):
    raise ConfigError(f"config.{key} must be '', 'none' or a comma list of {', '.join(YNN_FUSION_TYPES)}, "
                      f"got {value!r}")


FOLD_MAPS = ("auto", "vmap", "loop")

# The config's sections: the component that receives each. A re-run or resume of a fold may change the
# keys of the resume-safe sections (they do not change the data, the model or the schedule of the epochs
# already trained); every other key must equal the fold's recorded value.
SECTIONS = {"model": "the network: models.build(**section); an option left None is the variant's default",
            "weights": "the weights a run starts from (weights.load)",
            "data": "which tiles train and validate, and the canvas they are padded onto",
            "source": "where the tiles are read from (data.sources.of)",
            "pseudo": "pseudo labels (SPEC 9)",
            "optim": "optimiser, schedule, batch and seed (SPEC 5; schedules.make_optimizer)",
            "loss": "loss weights (SPEC 4)",
            "augment": "training jitter beyond the original's pad and flip (data.augment.Jitter; all off)",
            "eval": "validation, snapshots and prediction",
            "runtime": "how the run executes"}
RESUME_SAFE_SECTIONS = frozenset({"source", "runtime"})


@dataclasses.dataclass(frozen=True)
class Key:
  """One config key: its default (a type for an unset placeholder), section, check and meaning."""
  default: Any
  section: str
  doc: str
  check: Optional[Callable[[str, Any], None]] = None
  resume_safe: Optional[bool] = None    # None: by its section

  @property
  def safe(self) -> bool:
    return self.section in RESUME_SAFE_SECTIONS if self.resume_safe is None else self.resume_safe


KEYS: Dict[str, Key] = {
    # Model (salt_jax.models.MODELS): the variant and its switches (SPEC 3, 10.1).
    "model": Key("model_34", "model", "the variant (salt_jax.models.MODELS)", _registered_model),
    "dtype": Key("float32", "model", "compute dtype: float32 or bfloat16 (params stay float32)", _dtype_name),
    "align_corners": Key(bool, "model", "bilinear x2 as torch <= 0.3.1 (False: half-pixel)"),
    "decoder_dropout": Key(float, "model", "dropouts that were no-ops in the original", _unit_interval),
    "head_dropout": Key(float, "model", "channel dropout in the heads (0.5 for 101A/101B)", _unit_interval),
    "pretrained": Key("", "weights", "ImageNet encoder weights (.pth/.pth.tar/.safetensors), optional",
                      _file_or_empty),
    "init_from": Key("", "weights", "whole-model weights to start from: the original PyTorch solution's .pth or "
                     "a salt_jax snapshot folder (<workdir>/fold_k/snapshots/cycle_c_max_map)",
                     _weights_or_snapshot),
    # Data and folds (SPEC 1).
    "data_dir": Key("../shared/tgs", "source", "the Kaggle folder"),
    "cache_dir": Key("", "source", "where to cache the decoded data as .npz ('' = no cache)"),
    "data_source": Key("kaggle", "source", "'kaggle': the folder at data_dir; 'tfds': the tgs_salt build at "
                       "tfds_data_dir (the same tiles)", _one_of(*sources.SOURCES)),
    "tfds_data_dir": Key("", "source", "data_source=tfds: the TFDS data dir holding tgs_salt/ (path or gs://)"),
    "fold": Key(0, "data", "the fold trained (when `folds` is empty)", _NON_NEGATIVE),
    "folds": Key("", "runtime", "folds trained together in one program: '0,1,2', 'all' ('' = just `fold`)"),
    "num_folds": Key(10, "data", "k of the k-fold split", _int_at_least(2)),
    "fold_seed": Key(0, "data", "seed of the split, written to <workdir>/folds.csv and reused", _NON_NEGATIVE),
    "train_subset": Key(0, "data", ">0: train on the first N shuffled ids of the fold (smoke runs)",
                        _NON_NEGATIVE),
    "valid_subset": Key(0, "data", ">0: validate on the first N ids of the fold", _NON_NEGATIVE),
    "input_size": Key(geometry.CANVAS, "data",
                      "padded canvas the network sees (the original's 128; e.g. 112, 104)",
                      _int_at_least(geometry.TILE)),
    # Pseudo labels (SPEC 9).
    "pseudo_csv": Key("", "pseudo", "submission CSV whose masks label the test images", _file_or_empty),
    "pseudo_split": Key(0, "pseudo", "which half of the test set (0 or 1; -1: every test tile)", _one_of(-1, 0, 1)),
    "pseudo_tiles": Key(0, "pseudo", "keep this many of the chosen tiles, the most confident first (0 = all)",
                        _NON_NEGATIVE),
    "pseudo_confidence_csv": Key("", "pseudo", "CSV id,confidence ranking the tiles for pseudo_tiles ('' = a "
                                 "seeded random choice)", _file_or_empty),
    "pseudo_prob": Key(0.5, "pseudo", "probability a sample is replaced by a pseudo-labelled one",
                       _unit_interval),
    "pseudo_split_file": Key("", "pseudo", "CSV id,half of the test split ('' = <workdir>/pseudo_split.csv)"),
    "pseudo_seed": Key(0, "pseudo", "seed of the test split", _NON_NEGATIVE),
    "pseudo_predict_other_half": Key(False, "pseudo", "README protocol: predict only the other half"),
    # Optimiser and schedule (SPEC 5; salt_jax.schedules).
    "batch_size": Key(16, "optim", "global batch over all devices and hosts", _POSITIVE),
    "optimizer": Key("sgd", "optim", "sgd (SPEC 5: momentum, coupled L2) or adamw",
                     _one_of(*schedules.OPTIMIZERS)),
    "lr_schedule": Key("restarts", "optim", "restarts (SPEC 5), warmup_cosine or warmup_linear (per step)",
                       _one_of(*schedules.LR_SCHEDULES)),
    "lr": Key(0.01, "optim", "peak learning rate", _finite_non_negative),
    "eta_min": Key(0.001, "optim", "lowest learning rate of a cycle / at the end of the run",
                   _finite_non_negative),
    "lr_warmup_epochs": Key(0.0, "optim", "warmup_* schedules: epochs of linear warm-up from 0",
                            _finite_non_negative),
    "momentum": Key(0.9, "optim", "SGD momentum", _finite_non_negative),
    "weight_decay": Key(2e-4, "optim", "L2 (sgd) or decoupled (adamw) weight decay", _finite_non_negative),
    "ema_decay": Key(0.0, "optim", "moving average of the weights (0 = off); validated, snapshotted, predicted",
                     _below_one),
    "warmup_epochs": Key(10, "optim", "BCE+Dice epochs (at constant lr with `restarts`)", _NON_NEGATIVE),
    # A restarts run may resume with more cycles (each cycle's rates do not depend on how many follow);
    # fixed_keys fixes it for the whole-run schedules, RunDir.check_run refuses fewer than a fold trained.
    "cycle_num": Key(7, "optim", "Lovasz cycles; more cycles continue a restarts run", _POSITIVE,
                     resume_safe=True),
    "cycle_len": Key(50, "optim", "epochs per cycle", _POSITIVE),
    "eval_start": Key(20, "eval", "validate after epoch e of a cycle when e >= eval_start ...", _NON_NEGATIVE),
    "eval_every": Key(5, "eval", "... and e % eval_every == 0 (epochs counted from 1)", _POSITIVE),
    # Losses (SPEC 4).
    "class_weight": Key(0.05, "loss", "weight of the empty/non-empty classifier", _finite_non_negative),
    "no_empty_weight": Key(0.5, "loss", "weight of the head trained on tiles with salt", _finite_non_negative),
    "dice_weight": Key(0.5, "loss", "Dice weight in the warm-up's BCE+Dice", _finite_non_negative),
    "bce_weight": Key(0.9, "loss", "BCE weight in the warm-up's BCE+Dice", _finite_non_negative),
    "cycle_loss": Key("lovasz", "loss", "segmentation loss of the cycles: lovasz (SPEC 4.5), bce_dice or blend",
                      _one_of("lovasz", "bce_dice", "blend")),
    "lovasz_weight": Key(0.5, "loss", "blend: lovasz_weight * Lovasz + (1 - lovasz_weight) * BCE+Dice",
                         _unit_interval),
    # Not in the original (issue 41). Validation keeps its plain Lovasz loss on the 101x101 crop.
    "lovasz_symmetric": Key(False, "loss", "every Lovasz term is the mean of the hinge on (logits, mask) and on "
                            "(-logits, 1 - mask): the IoU of salt and of background (the 9th place's)",
                            _boolean),
    "loss_on_tile": Key(False, "loss", "every segmentation term (BCE, Dice, Lovasz, both heads) on the tile's "
                        "own 101x101 pixels only, not its random padding", _boolean),
    # Training jitter (data.augment.Jitter), applied to the 101x101 tile before the padding; 0 = off.
    "aug_scale": Key(0.0, "augment", "zoom s ~ U[1-a, 1+a] (s > 1 a crop-rescale of a random window), "
                     "image and mask", _below_one),
    "aug_rotate": Key(0.0, "augment", "rotation ~ U[-a, a] degrees, image and mask", _at_most(45.0)),
    "aug_shear": Key(0.0, "augment", "shear angle ~ U[-a, a] degrees, image and mask", _at_most(45.0)),
    "aug_warp_prob": Key(1.0, "augment", "fraction of images the scale/rotate/shear warp is applied to",
                         _unit_interval),
    "aug_brightness": Key(0.0, "augment", "grey shift ~ U[-a, a] x 255, image only", _at_most(1.0)),
    "aug_contrast": Key(0.0, "augment", "contrast factor ~ U[1-a, 1+a] about the tile's mean, image only",
                        _below_one),
    "aug_gamma": Key(0.0, "augment", "gamma exp(U[-ln(1+a), ln(1+a)]) on grey/255, image only",
                     _at_most(4.0)),
    "aug_cutout": Key(0.0, "augment", "probability of each cutout hole (mid-grey square; image only, the "
                      "mask keeps its salt)", _unit_interval),
    "aug_cutout_size": Key(25, "augment", "side of a cutout hole in pixels", _int_at_least(1)),
    "aug_cutout_holes": Key(1, "augment", "cutout holes per image, each with probability aug_cutout",
                            _int_at_least(1)),
    # Evaluation, logging, runtime.
    "eval_batch_size": Key(32, "eval", "validation and prediction batch", _POSITIVE, resume_safe=True),
    "keep_min_loss": Key(True, "eval", "also keep the lowest-validation-loss snapshot per cycle"),
    # Empty handling, tuned by predict on the fold's validation tiles jointly with the threshold
    # (salt_jax.gating; '' = off, as in the original). Training does not use them.
    "gate_min_areas": Key("", "eval", "candidate minimum mask areas in pixels, e.g. '10,25,50,100'",
                          _candidates(int), resume_safe=True),
    "gate_empty_above": Key("", "eval", "candidate p(empty) above which a tile is forced empty, e.g. '0.8,0.9'",
                            _candidates(float), resume_safe=True),
    "gate_salt_below": Key("", "eval", "candidate p(empty) below which an empty mask is redrawn at a lower "
                           "threshold, e.g. '0.1,0.2'", _candidates(float), resume_safe=True),
    "keep_checkpoints": Key(2, "runtime", "latest end-of-epoch states kept (a corrupt newest falls back)",
                            _int_at_least(2, " (a corrupt newest state falls back to an older one)")),
    # 0 = the whole epoch in one lax.scan; 1 = one step per call (XLA:CPU runs scanned steps ~10x slower).
    "steps_per_call": Key(1, "runtime", "train steps per compiled call on device-resident data",
                          _NON_NEGATIVE),
    # "loop": the folds' steps side by side (XLA:CPU runs vmapped convolutions ~2.5x slower); "auto": loop
    # on CPU, vmap on GPU and TPU.
    "fold_map": Key("auto", "runtime", "how folds share one compiled step: auto, vmap or loop",
                    _one_of(*FOLD_MAPS)),
    # Which of the train step's fusions XLA:CPU hands to YNNPACK: '' = XLA's default (jaxlib 0.10: the
    # convolutions and reductions too), 'none', or a list. 'reduce' (Eigen convolutions, YNNPACK reductions)
    # is the fastest measured on CPU: model_34's step 1.7x XLA's default (BENCHMARKS.md). Other backends
    # ignore the key.
    "cpu_ynn_fusion": Key("", "runtime", "XLA:CPU train steps: YNNPACK fusion types ('', 'none' or e.g. 'reduce')",
                          _ynn_fusion_types),
    "compilation_cache_dir": Key("~/.cache/salt_jax/jax", "runtime", "JAX's persistent compilation cache"),
    "seed": Key(0, "optim", "initialisation, data order and augmentation", _NON_NEGATIVE),
    "distributed": Key(False, "runtime", "jax.distributed.initialize() (also with JAX_COORDINATOR_ADDRESS)"),
}


def base_config() -> ml_collections.ConfigDict:
  """Hyper-parameters of the original solution for one model and one fold (KEYS' defaults)."""
  c = ml_collections.ConfigDict()
  for name, key in KEYS.items():
    c[name] = config_dict.placeholder(key.default) if isinstance(key.default, type) else key.default
  return c


def with_defaults(record: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A recorded config (a fold's config.json) with the KEYS it lacks set to their defaults: a record of
  an older version ran with the default of a key added since (e.g. input_size: 128)."""
  base = base_config()
  return ml_collections.ConfigDict({**{k: base[k] for k in KEYS if k not in record}, **record})


def budget_recipe(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Sets the short-budget recipe of docs/recipes.md on `config` (in place, returned): 104 px, AdamW with
  one warm-up-then-cosine decay over the run, an EMA of the weights. configs/cpu_small.py measured it."""
  config.input_size = 104
  config.optimizer = "adamw"
  config.lr = 2e-3
  config.weight_decay = 1e-2
  config.lr_schedule = "warmup_cosine"
  config.lr_warmup_epochs = 0.3
  config.eta_min = 1e-5
  config.ema_decay = 0.99
  return config


# The warp that lets longer runs use their compute (docs/recipes.md, "The compute curve": 2x on fold 0 0.8191
# against 0.8006 without): half the images zoomed by up to 10 %, rotated by up to 8 and sheared by up to 5
# degrees, image and mask together.
WARP = dict(aug_scale=0.1, aug_rotate=8.0, aug_shear=5.0, aug_warp_prob=0.5)


def stretched(config: ml_collections.ConfigDict, k: int) -> ml_collections.ConfigDict:
  """`config` (in place, returned) at k times its compute: both phases' epochs (BCE+Dice warm-up and each
  cycle) times k, the validation epochs with them (issue 41's unit of the compute curve)."""
  for key in ("warmup_epochs", "cycle_len", "eval_start", "eval_every"):
    config[key] = config[key] * k
  return config


def section_keys(name: str) -> Tuple[str, ...]:
  """The keys of one section, in declaration order."""
  if name not in SECTIONS:
    raise ValueError(f"unknown config section {name!r}; sections: {', '.join(SECTIONS)}")
  return tuple(k for k, v in KEYS.items() if v.section == name)


def section(config: Mapping[str, Any], name: str) -> ml_collections.FrozenConfigDict:
  """The keys of one section of a (flat) config, read-only: what the section's component receives."""
  return ml_collections.FrozenConfigDict({k: config[k] for k in section_keys(name)})


def sections(config: Mapping[str, Any]) -> ml_collections.FrozenConfigDict:
  """Every section of a config: `sections(config).optim.lr` is `config.lr`."""
  return ml_collections.FrozenConfigDict({name: section(config, name) for name in SECTIONS})


def loss_weights(loss: Mapping[str, Any]) -> Dict[str, Any]:
  """The loss section's weights and options that losses.total_loss takes (cycle_loss picks the loss
  itself; loss_on_tile goes to the train step, which builds the tile's pixel mask)."""
  return {k: v for k, v in loss.items() if k not in ("cycle_loss", "loss_on_tile")}


RESUME_SAFE_KEYS = frozenset(k for k, v in KEYS.items() if v.safe)
RESUME_FIXED_KEYS = frozenset(KEYS) - RESUME_SAFE_KEYS


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


def for_fold(config, fold: int) -> Dict[str, Any]:
  """The record of one fold of a (fold-parallel) run: every key's value as JSON types, `fold` set."""
  return dict(json.loads(config.to_json_best_effort()), fold=fold)


def closest_keys(key: str, known: Sequence[str], n: int = 3) -> List[str]:
  """Known keys that look like `key` (for "did you mean" messages)."""
  return difflib.get_close_matches(key, list(known), n=n, cutoff=0.5)


def _unknown_key_message(key: str, known: Sequence[str]) -> str:
  near = closest_keys(key, known)
  hint = f"closest known keys: {', '.join(near)}" if near else f"known keys: {', '.join(sorted(known))}"
  return f"unknown config key {key!r}; {hint}"


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for any key or value of a training config that cannot run. Pure: reads only
  the config (and checks that the files it names exist), so a refused command changes nothing on disk."""
  for key in sorted(set(config.keys()) - set(KEYS)):
    raise ConfigError(_unknown_key_message(key, list(KEYS)))
  for name, key in KEYS.items():
    if key.check is not None:
      key.check(name, config[name])
  if config.fold >= config.num_folds:
    raise ConfigError(f"config.fold={config.fold} is outside 0..{config.num_folds - 1}")
  fold_list(config)
  if config.data_source == "tfds" and not config.tfds_data_dir:
    raise ConfigError("config.data_source='tfds' needs config.tfds_data_dir (a TFDS data dir with tgs_salt/)")
  if config.input_size != geometry.CANVAS:
    try:
      models.check_input_size(models.build(**section(config, "model")), config.input_size)
    except ValueError as e:
      raise ConfigError(f"config.input_size={config.input_size} does not fit {config.model} ({e})") from None
  run_epochs = schedules.run_epochs(section(config, "optim"))
  if config.lr_schedule != "restarts" and config.lr_warmup_epochs >= run_epochs:
    raise ConfigError(f"config.lr_warmup_epochs={config.lr_warmup_epochs} must be shorter than the run "
                      f"({run_epochs} epochs)")
  if not any(schedules.is_eval_epoch(config.warmup_epochs + e, warmup_epochs=config.warmup_epochs,
                                     cycle_len=config.cycle_len, eval_start=config.eval_start,
                                     eval_every=config.eval_every) for e in range(config.cycle_len)):
    raise ConfigError(f"no validation epoch in a cycle: eval_start={config.eval_start}, "
                      f"eval_every={config.eval_every}, cycle_len={config.cycle_len} (no snapshot would be kept)")


def overrides_dict(**values) -> ml_collections.ConfigDict:
  """Overrides of training configs (a pipeline's train_overrides) that take every declared key, also by flag
  (`--config.train_overrides.cycle_len=2`): each key of KEYS, unset (None, typed as its default so that a
  flag's value is parsed as one) unless given here. `set_overrides` reads back the keys that are set."""
  unknown = sorted(set(values) - set(KEYS))
  if unknown:
    raise ConfigError(_unknown_key_message(unknown[0], list(KEYS)))
  out = ml_collections.ConfigDict()
  for name, key in KEYS.items():
    out[name] = config_dict.placeholder(key.default if isinstance(key.default, type) else type(key.default))
  out.update(values)
  return out


def set_overrides(overrides: Mapping[str, Any]) -> Dict[str, Any]:
  """{key: value} of the keys an overrides mapping sets (those of `overrides_dict` left unset are None); a
  key KEYS does not declare is a ConfigError."""
  for key in sorted(set(overrides) - set(KEYS)):
    raise ConfigError(_unknown_key_message(key, list(KEYS)))
  return {k: v for k, v in overrides.items() if v is not None}


def _resolved(config: Mapping[str, Any]) -> Dict[str, Any]:
  """Every key of a config, model options left None filled with the variant's defaults; absent keys
  (records of older versions) are base defaults."""
  base = base_config()
  out = {k: (config[k] if k in config else base.get(k)) for k in KEYS}
  if out["model"] in models.MODELS:
    out.update(models.resolved_options({k: out[k] for k in section_keys("model")}))
  return out


def fixed_keys(config: Mapping[str, Any]) -> frozenset:
  """RESUME_FIXED_KEYS, plus cycle_num when the schedule spans the whole run (it sets every step's rate;
  with `restarts` more cycles continue the run)."""
  spans_run = config.get("lr_schedule", KEYS["lr_schedule"].default) != "restarts"
  return RESUME_FIXED_KEYS | ({"cycle_num"} if spans_run else set())


def resume_conflicts(recorded: Mapping[str, Any], config: Mapping[str, Any]) -> List[Tuple[str, Any, Any]]:
  """[(key, recorded value, new value)] of the fixed keys whose values differ, sorted by key."""
  old, new = _resolved(recorded), _resolved(config)
  keys = fixed_keys(recorded) | fixed_keys(config)
  return [(k, old[k], new[k]) for k in sorted(keys) if old[k] != new[k]]


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
    raise ConfigError(f"config file {path} does not exist")
  spec = importlib.util.spec_from_file_location(f"_salt_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()
