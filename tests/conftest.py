"""Shared fixtures: the real TGS data beside the repository."""
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
# XLA_FLAGS of the subprocesses that simulate 2 CPU devices. XLA:CPU aborts a collective whose other
# participant has not arrived within 40 s; on 2 shared cores a starved thread can take longer (a CI run
# aborted so once), so the waits get the room a loaded machine needs (the values computed are unchanged).
TWO_CPU_DEVICES = ("--xla_force_host_platform_device_count=2 --xla_cpu_collective_timeout_seconds=1200 "
                   "--xla_cpu_collective_call_terminate_timeout_seconds=1200 "
                   "--xla_cpu_collective_call_warn_stuck_timeout_seconds=120")
# XLA flag of subprocesses that compile programs to run them only a few times (a few train steps, a
# forward pass): no LLVM optimisation roughly halves the compile time (model_tiny's train step: 42 s ->
# 25 s on 2 busy cores), which there outweighs the slower fused loops (convolutions are library calls).
FAST_COMPILE = "--xla_backend_optimization_level=0"


def _default_data_dir() -> pathlib.Path:
  env = os.environ.get("SALT_DATA_DIR")
  return pathlib.Path(env) if env else REPO.parent / "shared" / "tgs"


@pytest.fixture
def highest_precision():
  """Full float32 matmuls and convolutions in JAX and PyTorch while a test runs, for comparisons against
  another framework or a float reference: on NVIDIA GPUs both default to TF32 (~1e-3 relative error)."""
  import jax
  try:
    import torch
  except ImportError:
    torch = None
  if torch is not None:
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
  try:
    with jax.default_matmul_precision("highest"):
      yield
  finally:
    if torch is not None:
      torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture
def full_disk(monkeypatch):
  """Call it to fill the disk: from then on every temporary output of fileio.atomic_path is the full device
  /dev/full, so each write fails with ENOSPC (a small file fits in the C library's buffer: only its close
  sees the error)."""
  import contextlib
  from salt_jax import fileio
  real_atomic_path = fileio.atomic_path

  @contextlib.contextmanager
  def on_a_full_disk(path):
    with real_atomic_path(path) as tmp:
      tmp.symlink_to("/dev/full")
      yield tmp
  return lambda: monkeypatch.setattr(fileio, "atomic_path", on_a_full_disk)


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
  """The Kaggle folder (train/, test/, train.csv, ...); tests needing it skip without it, or fail when
  SALT_REQUIRE_DATA=1 (set by .ci/run, so CI cannot pass with half the suite skipped)."""
  path = _default_data_dir()
  if not (path / "train.csv").exists():
    message = f"real TGS data not found at {path} (set SALT_DATA_DIR)"
    if os.environ.get("SALT_REQUIRE_DATA", "") not in ("", "0"):
      pytest.fail(f"{message}; SALT_REQUIRE_DATA is set", pytrace=False)
    pytest.skip(message)
  return path


@pytest.fixture(scope="session")
def mini_data_dir(data_dir, tmp_path_factory) -> pathlib.Path:
  """A small Kaggle-layout folder of real tiles: 96 train (with masks) and 24 test images."""
  import shutil
  import pandas as pd
  out = tmp_path_factory.mktemp("mini_tgs")
  train = pd.read_csv(data_dir / "train.csv", dtype=str, keep_default_na=False).iloc[:96]
  sample = pd.read_csv(data_dir / "sample_submission.csv", dtype=str, keep_default_na=False).iloc[:24]
  for sub in ("train/images", "train/masks", "test/images"):
    (out / sub).mkdir(parents=True)
  for i in train["id"]:
    shutil.copy(data_dir / "train/images" / f"{i}.png", out / "train/images")
    shutil.copy(data_dir / "train/masks" / f"{i}.png", out / "train/masks")
  for i in sample["id"]:
    shutil.copy(data_dir / "test/images" / f"{i}.png", out / "test/images")
  train.to_csv(out / "train.csv", index=False)
  sample.to_csv(out / "sample_submission.csv", index=False)
  depths = pd.read_csv(data_dir / "depths.csv", dtype={"id": str})
  depths[depths["id"].isin(set(train["id"]) | set(sample["id"]))].to_csv(out / "depths.csv", index=False)
  return out


@pytest.fixture(scope="session")
def tiny_config(mini_data_dir):
  """Factory: configs/tiny.py on the mini data, 1 warm-up epoch + one 2-epoch cycle, batch 8."""
  from salt_jax import configlib

  def make(**overrides):
    config = configlib.load_config_file(REPO / "configs" / "tiny.py")
    config.data_dir = str(mini_data_dir)
    config.update(dict(batch_size=8, train_subset=48, valid_subset=0, eval_batch_size=8, num_folds=4,
                       warmup_epochs=1, cycle_num=1, cycle_len=2, eval_start=1, eval_every=1))
    config.update(overrides)
    return config
  return make


@pytest.fixture(scope="session")
def tiny_run(tiny_config, tmp_path_factory):
  """(config, workdir, summary) of one finished tiny training run of fold 0 (shared by several tests)."""
  from salt_jax.training import train
  workdir = tmp_path_factory.mktemp("tiny_run") / "model_tiny"
  config = tiny_config()
  return config, workdir, train.train_and_evaluate(config, str(workdir))[config.fold]
