"""Shared fixtures: the real TGS data beside the repository."""
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _default_data_dir() -> pathlib.Path:
  env = os.environ.get("SALT_DATA_DIR")
  return pathlib.Path(env) if env else REPO.parent / "shared" / "tgs"


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
  """The Kaggle folder (train/, test/, train.csv, ...); tests needing it skip without it."""
  path = _default_data_dir()
  if not (path / "train.csv").exists():
    pytest.skip(f"real TGS data not found at {path} (set SALT_DATA_DIR)")
  return path
