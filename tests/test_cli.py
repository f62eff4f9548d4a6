"""salt_jax.cli: how every program parses its flags, refuses a command, reports a bug and exits."""
import errno
import os
import re
import sys

import pytest
from absl import app, flags
from ml_collections import config_flags

from salt_jax import cli, configlib, errors, fileio
from salt_jax.data import DataError
from salt_jax.inference import ensemble
from salt_jax.training import train
from salt_jax.workdir import checkpoints, rundir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _define():
  flags.DEFINE_string("data_dir", None, "A folder.")
  flags.DEFINE_integer("n", 1, "A count.", lower_bound=1)


def _main(argv):
  if flags.FLAGS.data_dir == "bad":
    raise DataError("missing folder: bad")
  if flags.FLAGS.data_dir == "odd":
    raise app.UsageError("--data_dir=odd does not go with --n")
  if flags.FLAGS.data_dir == "value":
    raise ValueError("an internal check failed")
  if flags.FLAGS.data_dir == "full":
    raise fileio.UnwritableError("cannot write out.csv ([Errno 28] No space left on device)")
  return argv, flags.FLAGS.data_dir, flags.FLAGS.n


def _run(*argv, **kwargs):
  return cli.run(_main, _define, prog="salt_jax.demo", argv=list(argv), **kwargs)


def test_a_program_returns_what_main_returns_and_its_flags_last_one_call():
  assert _run("--data_dir=x", "--n=3") == (["salt_jax.demo"], "x", 3)
  assert _run() == (["salt_jax.demo"], None, 1)  # defaults again: the flags were defined afresh
  assert "data_dir" not in flags.FLAGS


def test_an_in_process_run_applies_its_config_overrides_not_sys_argv_s(monkeypatch):
  monkeypatch.setattr("sys.argv", ["pytest", "--config.seed=9"])  # what the caller's own command line says

  def define():
    config_flags.DEFINE_config_file("config", None, "A config file.", lock_config=True)

  def main(argv):
    del argv
    return flags.FLAGS.config.fold, flags.FLAGS.config.seed, flags.FLAGS.config.model

  config = os.path.join(REPO, "configs", "cpu_small.py")
  assert cli.run(main, define, prog="salt_jax.demo", argv=[f"--config={config}", "--config.fold=2",
                                                            "--config.seed=5"]) == (2, 5, "model_tiny_s2")
  assert cli.run(main, define, prog="salt_jax.demo", argv=[f"--config={config}"]) == (0, 0, "model_tiny_s2")
  assert sys.argv == ["pytest", "--config.seed=9"]


@pytest.mark.parametrize("argv,status,line", [
    (["--data_dir=bad"], 1, "salt_jax.demo: missing folder: bad"),
    (["--data_dir=odd"], 2, "salt_jax.demo: --data_dir=odd does not go with --n"),
    (["--data_dir=x", "extra"], 2, "salt_jax.demo: unexpected argument(s) extra"),
])
def test_refusals_and_usage_errors_are_one_line(capsys, argv, status, line):
  with pytest.raises(SystemExit) as exit_info:
    _run(*argv)
  assert exit_info.value.code == status
  assert capsys.readouterr().err == line + "\n"


def test_the_refusals_share_one_base_and_keep_their_builtin_kind():
  bad_input = (configlib.ConfigError, rundir.WorkdirError, DataError)
  assert all(issubclass(t, errors.BadInput) and issubclass(t, ValueError) for t in bad_input)
  assert all(issubclass(t, errors.IOFailure) and issubclass(t, OSError)
             for t in (fileio.UnwritableError, checkpoints.DiskError))
  assert issubclass(errors.BadInput, errors.Refusal) and issubclass(errors.IOFailure, errors.Refusal)
  failure = errors.io_failure(OSError(errno.ENOSPC, "No space left on device"), "/w/lock")
  assert str(failure) == "cannot write /w/lock ([Errno 28] No space left on device)"
  assert (failure.errno, failure.filename) == (errno.ENOSPC, "/w/lock")  # an OSError's fields, kept


def test_an_environment_failure_is_one_line_and_anything_else_is_a_bug(capsys):
  with pytest.raises(SystemExit) as exit_info:
    _run("--data_dir=full")
  assert exit_info.value.code == 1
  assert capsys.readouterr().err == ("salt_jax.demo: cannot write out.csv ([Errno 28] No space left on "
                                     "device)\n")
  with pytest.raises(SystemExit) as exit_info:
    _run("--data_dir=value")    # a plain ValueError is no refusal: its traceback, then the bug line
  assert exit_info.value.code == cli.BUG_STATUS == 70
  err = capsys.readouterr().err
  assert err.startswith("Traceback (most recent call last):\n")
  assert err.endswith(f"ValueError: an internal check failed\n{cli.BUG_LINE.format(prog='salt_jax.demo')}\n")


def _bug_in_ensemble(tmp_path, mini_data_dir, monkeypatch):
  """(argv of ensemble, the exception) with an internal function of the program made to raise KeyError."""
  monkeypatch.setattr(rundir.RunDir, "prediction_files", lambda self, kind: {}["fold"])
  return ["--workdirs=" + str(tmp_path / "m"), f"--out={tmp_path / 'sub.csv'}", f"--data_dir={mini_data_dir}"]


@pytest.mark.parametrize("program", ["ensemble", "train"])
def test_an_injected_bug_ends_with_its_traceback_and_the_line_saying_it_is_a_bug(
    program, tmp_path, mini_data_dir, monkeypatch, capsys):
  """A real program through its command line, with one internal function raising KeyError (ensemble:
  listing a workdir's predictions) or ValueError (train: turning on the compilation cache): exit status
  70, the traceback naming the exception, and last the line saying it is a bug in salt_jax."""
  if program == "ensemble":
    main, define, argv, error = (ensemble.main, ensemble.define_flags,
                                 _bug_in_ensemble(tmp_path, mini_data_dir, monkeypatch), "KeyError: 'fold'")
  else:
    def broken(path):
      raise ValueError("cache settings out of step")
    monkeypatch.setattr(train, "set_compilation_cache", broken)
    main, define, error = train.main, train.define_flags, "ValueError: cache settings out of step"
    argv = [f"--config={REPO}/configs/tiny.py", f"--workdir={tmp_path / 'wd'}"]  # fails before reading data
  with pytest.raises(SystemExit) as exit_info:
    cli.run(main, define, prog=f"salt_jax.{program}", argv=argv)
  err = capsys.readouterr().err
  assert exit_info.value.code == 70, err
  lines = err.splitlines()
  assert lines[0] == "Traceback (most recent call last):" and lines[-2] == error
  assert re.fullmatch(rf"salt_jax\.{program}: this is a bug in salt_jax, not a problem with your input or "
                      "disk: please report it with the command line and the traceback above", lines[-1])
  assert not (tmp_path / "wd").exists() and not (tmp_path / "sub.csv").exists()


def test_bad_flags_exit_with_absl_s_parsing_error(capsys):
  for argv in (["--n=0"], ["--bogus=1"]):
    with pytest.raises(SystemExit) as exit_info:
      _run(*argv)
    assert exit_info.value.code == 1 and "FATAL Flags parsing error" in capsys.readouterr().err


def test_a_program_of_commands_names_the_command(capsys):
  run = lambda *argv: cli.run(_main, _define, prog="salt_jax.demo", commands=("a", "b"), argv=list(argv))
  assert run("b", "--n=2") == (["salt_jax.demo", "b"], None, 2)
  with pytest.raises(SystemExit) as exit_info:
    run("b", "--data_dir=bad")
  assert exit_info.value.code == 1
  assert capsys.readouterr().err == "salt_jax.demo b: error: missing folder: bad\n"
  for argv in ([], ["c"]):
    with pytest.raises(SystemExit) as exit_info:
      run(*argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "salt_jax.demo: error: give one command first: a, b\n"
