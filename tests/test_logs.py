"""Console lines a person reads (`HH:MM:SS message`), absl's full prefix on request and always in --log_dir
files, and --verbosity's filter (salt_jax.cli.route_logs), in real processes started as a shell would."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHORT = r"\d\d:\d\d:\d\d"
# absl's prefix after the level letter, e.g. (I)1206 19:15:19.042919 140347307182976 foldgroup.py:68]
PREFIX = r"\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ [\w.]+:\d+\]"
ABSL = f"[IWEF]{PREFIX}"

# A program started through cli.run: one INFO line of its own, one warning, and one INFO line of another
# library (a module outside the package, which the console drops unless --verbosity >= 1). The program file
# counts as the package's, as scripts/ do.
PROGRAM = """
import pathlib, sys
from absl import logging
from salt_jax import cli
sys.path.insert(0, {other!r})
import otherlib
cli.PACKAGE_DIRS += (str(pathlib.Path(__file__).parent),)

def main(argv):
  logging.info("epoch 1: loss 0.5")
  otherlib.chatter()
  logging.warning("careful")

cli.run(main, prog="prog")
"""


@pytest.fixture(scope="module")
def program(tmp_path_factory):
  root = tmp_path_factory.mktemp("logs")
  (root / "other").mkdir()
  (root / "other" / "otherlib.py").write_text(
      "import logging\ndef chatter():\n  logging.getLogger('otherlib').info('their checkpoint phase')\n")
  (root / "prog").mkdir()
  path = root / "prog" / "prog.py"
  path.write_text(PROGRAM.format(other=str(root / "other")))
  return path


def _start(program, *flags) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, str(program), *flags], capture_output=True, text=True, cwd=REPO,
                        env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300)


def _run(program, *flags):
  done = _start(program, *flags)
  assert done.returncode == 0, done.stderr
  return [line for line in done.stderr.splitlines() if line.strip()]


def test_the_console_shows_the_time_and_message_and_the_log_file_the_full_prefix(program, tmp_path):
  lines = _run(program, f"--log_dir={tmp_path}")
  assert len(lines) == 2, lines
  assert re.fullmatch(f"{SHORT} epoch 1: loss 0.5", lines[0]), lines
  assert re.fullmatch(f"{SHORT} WARNING: careful", lines[1]), lines
  logged = (tmp_path / "prog.log").read_text().splitlines()
  assert len(logged) == 3, logged
  assert re.fullmatch(f"I{PREFIX} epoch 1: loss 0.5", logged[0]), logged
  assert re.fullmatch(f"I{PREFIX} their checkpoint phase", logged[1]), logged
  assert re.fullmatch(f"W{PREFIX} careful", logged[2]), logged


def test_log_format_absl_gives_the_full_prefix_on_the_console(program):
  lines = _run(program, "--log_format=absl")
  assert len(lines) == 2, lines
  assert re.fullmatch(f"{ABSL} epoch 1: loss 0.5", lines[0]) and lines[0][0] == "I", lines
  assert re.fullmatch(f"{ABSL} careful", lines[1]) and lines[1][0] == "W", lines


def test_verbosity_keeps_its_meaning_in_either_format(program):
  loud = _run(program, "--verbosity=1")
  assert [re.sub(SHORT, "T", line) for line in loud] == ["T epoch 1: loss 0.5", "T their checkpoint phase",
                                                          "T WARNING: careful"]
  quiet = _run(program, "--verbosity=-1", "--log_format=absl")
  assert len(quiet) == 1 and re.fullmatch(f"{ABSL} careful", quiet[0]), quiet


def test_an_unknown_log_format_is_a_flag_error(program):
  done = _start(program, "--log_format=long")
  assert done.returncode == 1
  first = done.stderr.splitlines()[0]
  assert first == "FATAL Flags parsing error: flag --log_format=long: value should be one of <short|absl>"
