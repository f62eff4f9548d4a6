"""The tgs_salt TFDS builder and data_source=tfds: ArrayRecord build and read-back without TensorFlow, the
same tiles, folds and training as the Kaggle folder, and one-line errors for a missing or broken build."""
import pathlib
import shutil
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets")
pytest.importorskip("array_record.python.array_record_module", reason="ArrayRecord needs array_record")

import tensorflow_datasets as tfds  # noqa: E402

from fake_kaggle import make_fake_kaggle  # noqa: E402
from salt_jax import cli, configlib, geometry  # noqa: E402
from salt_jax.data import kaggle, sources, tfds_tgs_salt  # noqa: E402
from salt_jax.training import train  # noqa: E402
from salt_jax.data.errors import DataError  # noqa: E402
from salt_jax.workdir import rundir  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_build_array_record_and_read_back_without_tensorflow(tmp_path):
  root, train_ids, train_images, masks, test_ids, test_images = make_fake_kaggle(tmp_path / "kaggle")
  out = tmp_path / "tfds"
  builder = tfds_tgs_salt.build(root, out)
  assert builder.name == "tgs_salt" and str(builder.version) == "1.0.0"
  features = builder.info.features
  assert features["image"].shape == features["mask"].shape == (*geometry.TILE_SHAPE, 1)
  assert builder.info.splits["train"].num_examples == 6 and builder.info.splits["test"].num_examples == 4
  assert sorted(p.name for p in (out / "tgs_salt" / "1.0.0").glob("*.array_record*")) == [
      "tgs_salt-test.array_record-00000-of-00001", "tgs_salt-train.array_record-00000-of-00001"]

  train = tfds.data_source("tgs_salt", split="train", data_dir=str(out))
  assert len(train) == 6
  for i in range(6):
    example = train[i]
    assert example["id"].decode() == train_ids[i]
    assert example["image"].shape == (101, 101, 1) and example["image"].dtype == np.uint8
    np.testing.assert_array_equal(example["image"][..., 0], train_images[i])
    np.testing.assert_array_equal(example["mask"][..., 0], masks[i])
    assert example["depth"] == pytest.approx(50 + 10 * i)

  test = tfds.data_source("tgs_salt", split="test", data_dir=str(out))
  assert [e["id"].decode() for e in test] == list(test_ids)
  np.testing.assert_array_equal(np.stack([e["image"][..., 0] for e in test]), test_images)
  assert not np.stack([e["mask"] for e in test]).any()      # no labels: all-zero masks
  assert np.isnan(test[3]["depth"])
  assert "tensorflow" not in sys.modules                   # built and read without TensorFlow


# data_source=tfds: the build of the real mini folder gives the Kaggle folder's arrays, folds and training.

@pytest.fixture(scope="module")
def mini_tfds(mini_data_dir, tmp_path_factory):
  """The tgs_salt build of the mini folder (96 real train tiles, 24 test): its TFDS data dir."""
  out = tmp_path_factory.mktemp("mini_tfds")
  tfds_tgs_salt.main(["--data_dir", str(mini_data_dir), "--out", str(out)])
  return out


def _configs(mini_data_dir, mini_tfds, **overrides):
  """(kaggle config, tfds config) of the same run."""
  kaggle_config = configlib.base_config()
  kaggle_config.update(dict(data_dir=str(mini_data_dir), **overrides))
  tfds_config = kaggle_config.copy_and_resolve_references()
  tfds_config.update(dict(data_source="tfds", tfds_data_dir=str(mini_tfds)))
  return kaggle_config, tfds_config


def _assert_same_samples(a, b):
  for field in ("ids", "images", "masks", "depths"):
    x, y = getattr(a, field), getattr(b, field)
    if x is None or y is None:
      assert x is None and y is None, field
      continue
    assert x.dtype == y.dtype and x.shape == y.shape, field
    np.testing.assert_array_equal(x, y, err_msg=field)


def test_build_command_line(tmp_path, capsys):
  """`python -m` (the module runs as __main__ and as salt_jax.data.tfds_tgs_salt) builds, a second build
  keeps the first unless --overwrite (the fingerprint tells them apart); bad input is one line."""
  root = make_fake_kaggle(tmp_path / "kaggle")[0]
  out = tmp_path / "out"
  cmd = [sys.executable, "-m", "salt_jax.data.tfds_tgs_salt", f"--data_dir={root}", f"--out={out}"]
  done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert f"{out}/tgs_salt/1.0.0: train 6, test 4 examples" in done.stdout
  source = sources.TfdsSource(str(out))
  first = source.fingerprint()
  assert source.fingerprint() == first
  other = make_fake_kaggle(tmp_path / "other", num_train=7, seed=1)[0]
  tfds_tgs_salt.main([f"--data_dir={other}", f"--out={out}"])                  # kept: already built
  assert len(source.train()) == 6 and source.fingerprint() == first
  tfds_tgs_salt.main([f"--data_dir={other}", f"--out={out}", "--overwrite"])
  assert len(source.train()) == 7 and source.fingerprint() != first
  capsys.readouterr()
  with pytest.raises(SystemExit) as e:
    tfds_tgs_salt.main([f"--data_dir={tmp_path / 'nowhere'}", f"--out={tmp_path / 'out2'}"])
  assert e.value.code == 1
  assert capsys.readouterr().err == f"salt_jax.data.tfds_tgs_salt: missing folder: {tmp_path / 'nowhere'}\n"


def test_tfds_source_gives_the_kaggle_folders_arrays(mini_data_dir, mini_tfds, tmp_path):
  kaggle_config, tfds_config = _configs(mini_data_dir, mini_tfds, cache_dir=str(tmp_path / "cache"))
  assert isinstance(sources.of(kaggle_config), kaggle.DataSource)
  assert sources.of(tfds_config) == sources.TfdsSource(str(mini_tfds))
  train, test = sources.of(tfds_config).train(), sources.of(tfds_config).test()
  assert len(train) == 96 and len(test) == 24 and test.masks is None
  assert train.masks.any() and set(np.unique(train.masks)) <= {0, 1} and np.isfinite(train.depths).all()
  for _ in range(2):   # the second Kaggle read comes from its npz cache
    _assert_same_samples(sources.of(kaggle_config).train(), train)
    _assert_same_samples(sources.of(kaggle_config).test(), test)
  assert "tensorflow" not in sys.modules


def test_tfds_source_gives_the_same_folds(mini_data_dir, mini_tfds, tmp_path):
  kaggle_config, tfds_config = _configs(mini_data_dir, mini_tfds, num_folds=4, train_subset=20,
                                        valid_subset=9)
  runs = {}
  for name, config in (("kaggle", kaggle_config), ("tfds", tfds_config)):
    train = sources.of(config).train()
    run = rundir.RunDir(tmp_path / name)
    rows = []
    for fold in range(config.num_folds):
      config.fold = fold
      rows.append(run.fold_rows(configlib.section(config, "data"), fold, train.ids, train.masks, config.seed))
    runs[name] = (run.folds_csv.read_text(), rows)
  assert runs["kaggle"][0] == runs["tfds"][0]          # the same folds.csv
  for (a_train, a_valid), (b_train, b_valid) in zip(runs["kaggle"][1], runs["tfds"][1]):
    np.testing.assert_array_equal(a_train, b_train)
    np.testing.assert_array_equal(a_valid, b_valid)


@pytest.mark.slow
def test_training_from_tfds_equals_training_from_the_folder(tiny_config, mini_tfds, tmp_path):
  """A one-epoch cycle of model_tiny on 16 tiles (no warm-up): the same loss and validation; the tfds run
  (its Kaggle folder absent) is then predicted from the build too."""
  from salt_jax.inference import predict
  from salt_jax.training import train as train_lib
  settings = dict(train_subset=16, valid_subset=8, warmup_epochs=0, cycle_len=1)
  from_tfds = dict(data_source="tfds", tfds_data_dir=str(mini_tfds), data_dir=str(tmp_path / "no_folder"))
  histories = {}
  for name, extra in (("kaggle", {}), ("tfds", from_tfds)):
    config = tiny_config(**settings, **extra)
    histories[name] = train_lib.train_and_evaluate(config, str(tmp_path / name))[0]["history"]
  keys = ("epoch", "loss", "lr", "val_loss", "val_map")
  assert [{k: r.get(k) for k in keys} for r in histories["tfds"]] == [
      {k: r.get(k) for k in keys} for r in histories["kaggle"]]
  assert len(histories["tfds"]) == 1 and "val_map" in histories["tfds"][-1]
  rundir.RunDir(tmp_path / "kaggle").check_run(tiny_config(**settings, **from_tfds))   # may resume from tfds
  [meta] = predict.predict_workdir(tmp_path / "tfds")
  pred = predict.load_prediction(rundir.RunDir(tmp_path / "tfds").prediction_file("max_map", 0, 0))
  assert list(pred["test_ids"]) == list(sources.of(tiny_config(**from_tfds)).test().ids)
  assert meta["val_map"] == pytest.approx(histories["tfds"][-1]["val_map"], abs=1e-6)


def test_missing_or_incomplete_build_is_one_line_naming_the_path(mini_tfds, tmp_path):
  config = configlib.base_config()
  config.update(dict(data_source="tfds", tfds_data_dir=str(tmp_path / "nowhere")))
  with pytest.raises(DataError, match=f"no tgs_salt dataset at {tmp_path / 'nowhere'}/tgs_salt/1.0.0") as e:
    sources.of(config).train()
  assert "\n" not in str(e.value) and "python -m salt_jax.data.tfds_tgs_salt" in str(e.value)

  broken = tmp_path / "broken"
  shutil.copytree(mini_tfds, broken)
  shard = broken / "tgs_salt" / "1.0.0" / "tgs_salt-test.array_record-00000-of-00001"
  shard.unlink()
  config.tfds_data_dir = str(broken)
  sources.of(config).train()                                # the train split is whole
  with pytest.raises(DataError, match=f"incomplete tgs_salt dataset at .*: missing {shard}") as e:
    sources.of(config).test()
  assert "\n" not in str(e.value)

  shard.write_bytes(b"not an array record")                 # present but unreadable
  with pytest.raises(DataError, match=f"cannot read the test split of {broken}/tgs_salt/1.0.0") as e:
    sources.of(config).test()
  assert "\n" not in str(e.value)


def test_a_garbage_dataset_info_is_one_line_naming_it(mini_tfds, tmp_path, monkeypatch, capsys):
  """train from a build whose dataset_info.json is not JSON: one line naming that file (protobuf's
  ParseError, first line) and how to rebuild, exit 1, no workdir; before, a protobuf traceback."""
  broken = tmp_path / "broken"
  shutil.copytree(mini_tfds, broken)
  info = broken / "tgs_salt" / "1.0.0" / "dataset_info.json"
  info.write_text("{garbage")
  argv = [f"--config={REPO / 'configs' / 'tiny.py'}", f"--workdir={tmp_path / 'wd'}",
          "--config.data_source=tfds", f"--config.tfds_data_dir={broken}"]
  monkeypatch.setattr(sys, "argv", ["salt_jax.train", *argv])  # where ml_collections finds --config.* flags
  with pytest.raises(SystemExit) as exit_info:
    cli.run(train.main, train.define_flags, prog="salt_jax.train", argv=argv)
  err = capsys.readouterr().err
  assert exit_info.value.code == 1 and err.count("\n") == 1, err
  assert err.startswith(f"salt_jax.train: unreadable tgs_salt dataset info {info} (ParseError: ")
  assert err.endswith(f"python -m salt_jax.data.tfds_tgs_salt --data_dir=<Kaggle folder> --out={broken} "
                      "--overwrite\n")
  assert not (tmp_path / "wd").exists()


def test_data_source_keys_are_checked():
  config = configlib.base_config()
  config.data_source = "hdf5"
  with pytest.raises(configlib.ConfigError, match="data_source must be one of kaggle, tfds, got 'hdf5'"):
    configlib.validate(config)
  config.data_source = "tfds"
  with pytest.raises(configlib.ConfigError, match="needs config.tfds_data_dir"):
    configlib.validate(config)
  config.tfds_data_dir = "gs://bucket/tfds"                 # not read by validate: no network at check time
  configlib.validate(config)


def test_recorded_configs_without_the_key_read_the_folder_and_predict_data_dir_wins():
  old = configlib.with_defaults(dict(data_dir="/data/tgs", cache_dir=""))  # as rundir.fold_config reads it
  assert sources.of(configlib.section(old, "source")) == kaggle.DataSource("/data/tgs", None)
  config = configlib.base_config()
  config.update(dict(data_source="tfds", tfds_data_dir="gs://bucket/tfds", cache_dir="/c"))
  assert sources.of(config) == sources.TfdsSource("gs://bucket/tfds")
  assert sources.of(config, "/other/tgs") == kaggle.DataSource("/other/tgs", "/c")


def test_pipeline_checks_the_tfds_build_before_any_output(mini_data_dir, tmp_path):
  from salt_jax import pipeline
  c = ml_collections.ConfigDict()
  c.data_dir = str(mini_data_dir)
  c.train_overrides = ml_collections.ConfigDict(dict(cache_dir="", data_source="tfds",
                                                     tfds_data_dir=str(tmp_path / "nowhere")))
  c.stage1 = ml_collections.ConfigDict(dict(models=[dict(name="tiny", config="configs/tiny.py")],
                                            folds=[0]))
  c.stage2 = ml_collections.ConfigDict(dict(models=[], part_folds=[]))
  with pytest.raises(DataError, match=f"no tgs_salt dataset at {tmp_path / 'nowhere'}"):
    pipeline.run_pipeline(c, str(tmp_path / "out"))
  assert not list((tmp_path / "out").rglob("*.json"))       # no step ran (only the decoded-PNG cache)


def test_a_tfds_pipeline_reads_one_source(mini_data_dir, mini_tfds):
  """Every model of a pipeline reads the TFDS build that train_overrides names, and so does every step
  (one Source, whose fingerprint the steps record); models that would read different data are refused."""
  from salt_jax import pipeline
  folder = kaggle.DataSource(str(mini_data_dir), None)
  overrides = dict(cache_dir="", data_source="tfds", tfds_data_dir=str(mini_tfds))
  configs = [pipeline.model_config(dict(name=n, config="configs/tiny.py"), folder, overrides) for n in "ab"]
  source = pipeline.one_source(configs)
  assert source == sources.TfdsSource(str(mini_tfds)) and isinstance(source, sources.Source)
  assert source.fingerprint() == sources.TfdsSource(str(mini_tfds)).fingerprint()
  kaggle_model = pipeline.model_config(dict(name="c", config="configs/tiny.py",
                                            overrides=dict(data_source="kaggle")), folder, overrides)
  with pytest.raises(configlib.ConfigError, match="pipeline models read different data"):
    pipeline.one_source(configs + [kaggle_model])
