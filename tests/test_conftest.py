"""The data_dir fixture: skips without the real data, fails instead when SALT_REQUIRE_DATA is set (CI)."""
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

PROBE = '''
def test_needs_data(data_dir):
  assert (data_dir / "train.csv").exists()
'''


def _pytest(tmp_path, **env_vars) -> subprocess.CompletedProcess:
  """Runs a one-test file that needs the data, with the repository's conftest and no real data."""
  (tmp_path / "conftest.py").write_text((REPO / "tests" / "conftest.py").read_text())
  (tmp_path / "test_probe.py").write_text(PROBE)
  (tmp_path / "empty").mkdir(exist_ok=True)
  env = {k: v for k, v in os.environ.items() if k != "SALT_REQUIRE_DATA"}
  env.update(SALT_DATA_DIR=str(tmp_path / "empty"), **env_vars)
  cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "test_probe.py"]
  return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_missing_data_skips_by_default(tmp_path):
  done = _pytest(tmp_path)
  assert done.returncode == 0, done.stdout
  assert "1 skipped" in done.stdout and "real TGS data not found at" in done.stdout


@pytest.mark.parametrize("value", ["1", "yes"])
def test_missing_data_fails_when_required(tmp_path, value):
  done = _pytest(tmp_path, SALT_REQUIRE_DATA=value)
  assert done.returncode == 1, done.stdout
  assert "1 error" in done.stdout and "skipped" not in done.stdout
  assert f"real TGS data not found at {tmp_path / 'empty'}" in done.stdout
  assert "SALT_REQUIRE_DATA is set" in done.stdout


def test_ci_script_requires_the_data():
  assert "SALT_REQUIRE_DATA=1 python -m pytest" in (REPO / ".ci" / "run").read_text()
