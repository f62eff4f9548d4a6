"""Every config file loads, names a registered model and keeps the contract keys."""
import pathlib
import re
import subprocess
import sys

import ml_collections
import pytest

from salt_jax import configlib, models

REPO = pathlib.Path(__file__).resolve().parents[1]
CONTRACT_KEYS = ("model", "data_dir", "fold", "num_folds", "batch_size", "lr", "eta_min", "momentum",
                 "weight_decay", "warmup_epochs", "cycle_num", "cycle_len", "eval_every", "seed", "dtype",
                 "pretrained")
FAITHFUL = ("model_34", "model_50A", "model_50A_slim", "model_101A", "model_101B", "model_152", "model_154")


TRAINING_CONFIGS = sorted(p for p in (REPO / "configs").glob("*.py") if not p.stem.startswith("pipeline_"))
PIPELINE_CONFIGS = sorted((REPO / "configs").glob("pipeline_*.py"))


@pytest.mark.parametrize("path", TRAINING_CONFIGS, ids=lambda p: p.stem)
def test_config_loads_with_contract_keys(path):
  config = configlib.load_config_file(path)
  for key in CONTRACT_KEYS:
    assert key in config, f"{path.name} lacks {key}"
  assert config.model in models.MODELS


@pytest.mark.parametrize("name", FAITHFUL)
def test_faithful_configs_keep_the_original_schedule(name):
  config = configlib.load_config_file(REPO / "configs" / f"{name}.py")
  assert config.model == name
  assert (config.batch_size, config.lr, config.eta_min, config.momentum, config.weight_decay) == (
      16, 0.01, 0.001, 0.9, 2e-4)
  assert (config.warmup_epochs, config.cycle_num, config.cycle_len, config.eval_start, config.eval_every) == (
      10, 7, 50, 20, 5)
  options = models.resolved_options(configlib.section(config, "model"))  # unset: the variants' defaults
  assert options["head_dropout"] == (0.5 if name in ("model_101A", "model_101B") else 0.0)
  assert options["decoder_dropout"] == 0.0 and options["align_corners"] is True
  model = models.build(**configlib.section(config, "model"))
  assert (model.head_dropout, model.decoder_dropout, model.align_corners) == (
      options["head_dropout"], 0.0, True)


def test_model_50_is_model_50A():
  assert configlib.load_config_file(REPO / "configs" / "model_50.py") == configlib.load_config_file(
      REPO / "configs" / "model_50A.py")


def test_flag_overrides_reach_the_config():
  code = ("from absl import flags; from ml_collections import config_flags; import sys;"
          "config_flags.DEFINE_config_file('config');"
          "flags.FLAGS(sys.argv); c = flags.FLAGS.config; print(c.model, c.fold, c.batch_size, c.data_dir)")
  out = subprocess.run([sys.executable, "-c", code, "--config=configs/model_50.py", "--config.fold=3",
                        "--config.batch_size=32", "--config.data_dir=/x/tgs"],
                       cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
  assert out == ["model_50A", "3", "32", "/x/tgs"]


def test_missing_config_file_is_a_clear_error(tmp_path):
  with pytest.raises(configlib.ConfigError, match="does not exist"):
    configlib.load_config_file(tmp_path / "nope.py")


@pytest.mark.parametrize("path", PIPELINE_CONFIGS, ids=lambda p: p.stem)
def test_pipeline_config_names_existing_model_configs(path):
  from salt_jax import pipeline
  config = pipeline.with_pipeline_defaults(configlib.load_config_file(path))
  entries = list(config.stage1.models) + list(config.stage2.models)
  assert entries and config.stage1.folds and config.stage2.part_folds
  stage1, stage2_base = pipeline.model_configs(config, "unused_outdir")  # built and validated, nothing written
  pipeline.check_stage2(config, stage1, stage2_base)  # the stage-2 choices fit the stage-1 runs
  for entry in entries:
    model_config = configlib.load_config_file(REPO / entry["config"])
    assert model_config.model in models.MODELS
    assert set(entry.get("overrides", {})) <= set(model_config)
    assert set(config.stage2.get("overrides", {})) <= set(model_config)


@pytest.mark.parametrize("key,value,message", [
    ("lovasz_symmetric", 1, "config.lovasz_symmetric must be True or False, got 1"),
    ("loss_on_tile", "yes", "config.loss_on_tile must be True or False, got 'yes'"),
    ("aug_scale", 1.0, r"config.aug_scale must be in \[0, 1\), got 1.0"),
    ("aug_rotate", 90.0, r"config.aug_rotate must be a number in \[0, 45.0\], got 90.0"),
    ("aug_shear", -1.0, r"config.aug_shear must be a number in \[0, 45.0\], got -1.0"),
    ("aug_warp_prob", 1.5, r"config.aug_warp_prob must be in \[0, 1\], got 1.5"),
    ("aug_brightness", float("nan"), r"config.aug_brightness must be a number in \[0, 1.0\], got nan"),
    ("aug_cutout", 2.0, r"config.aug_cutout must be in \[0, 1\], got 2.0"),
    ("aug_cutout_size", 0, "config.aug_cutout_size must be > 0, got 0"),
    ("aug_cutout_holes", 1.5, "config.aug_cutout_holes must be an integer, got 1.5"),
])
def test_the_levers_keys_are_checked(key, value, message):
  """The loss and augmentation keys (issue 41) default off and refuse values that cannot run."""
  config = configlib.base_config()
  assert not config.lovasz_symmetric and not config.loss_on_tile
  assert all(config[k] == 0 for k in ("aug_scale", "aug_rotate", "aug_shear", "aug_brightness", "aug_contrast",
                                      "aug_gamma", "aug_cutout"))
  configlib.validate(config)
  bad = ml_collections.ConfigDict({**config.to_dict(), key: value})  # a config file may set any type
  with pytest.raises(configlib.ConfigError, match=message):
    configlib.validate(bad)


def test_a_stretched_recipe_multiplies_both_phases_and_the_validation_epochs():
  """configlib.stretched(cpu_small, 2) is the 2x of docs/recipes.md's compute curve (its flags)."""
  doubled = configlib.stretched(configlib.load_config_file(REPO / "configs" / "cpu_small.py"), 2)
  flags = re.search(r"2x is `(--config\.warmup_epochs=\S+ --config\.cycle_len=\S+ --config\.eval_start=\S+\s+"
                    r"--config\.eval_every=\S+)`", (REPO / "docs" / "recipes.md").read_text()).group(1).split()
  assert {f.split("=")[0][len("--config."):]: int(f.split("=")[1]) for f in flags} == {
      k: doubled[k] for k in ("warmup_epochs", "cycle_len", "eval_start", "eval_every")} == dict(
          warmup_epochs=40, cycle_len=40, eval_start=28, eval_every=4)
  configlib.validate(doubled)
  configlib.validate(ml_collections.ConfigDict({**doubled.to_dict(), **configlib.WARP}))


def test_cpu_long_is_the_quick_start_at_2x_with_the_warp():
  """configs/cpu_long.py is docs/recipes.md's `curve_2x_geo_s0`: cpu_small with both phases and the
  validation epochs times 2 and configlib.WARP, every other key as the quick start has it."""
  small = configlib.load_config_file(REPO / "configs" / "cpu_small.py").to_dict()
  long = configlib.load_config_file(REPO / "configs" / "cpu_long.py").to_dict()
  stretched = dict(warmup_epochs=40, cycle_len=40, eval_start=28, eval_every=4)
  assert {k: v for k, v in long.items() if small[k] != v} == {**stretched, **configlib.WARP}

