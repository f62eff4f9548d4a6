"""salt_jax.cli: how every program parses its flags, refuses a command and exits."""
import pytest
from absl import app, flags

from salt_jax import cli, configlib
from salt_jax.data import DataError


def _define():
  flags.DEFINE_string("data_dir", None, "A folder.")
  flags.DEFINE_integer("n", 1, "A count.", lower_bound=1)


def _main(argv):
  if flags.FLAGS.data_dir == "bad":
    raise DataError("missing folder: bad")
  if flags.FLAGS.data_dir == "odd":
    raise app.UsageError("--data_dir=odd does not go with --n")
  if flags.FLAGS.data_dir == "value":
    raise ValueError("a program's own refusal")
  return argv, flags.FLAGS.data_dir, flags.FLAGS.n


def _run(*argv, **kwargs):
  return cli.run(_main, _define, prog="salt_jax.demo", argv=list(argv), **kwargs)


def test_a_program_returns_what_main_returns_and_its_flags_last_one_call():
  assert _run("--data_dir=x", "--n=3") == (["salt_jax.demo"], "x", 3)
  assert _run() == (["salt_jax.demo"], None, 1)  # defaults again: the flags were defined afresh
  assert "data_dir" not in flags.FLAGS


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


def test_only_the_known_and_the_program_s_error_types_are_refused(capsys):
  assert issubclass(configlib.ConfigError, cli.REFUSED)
  with pytest.raises(ValueError, match="own refusal"):
    _run("--data_dir=value")
  with pytest.raises(SystemExit) as exit_info:
    _run("--data_dir=value", errors=(ValueError,))
  assert exit_info.value.code == 1 and capsys.readouterr().err == "salt_jax.demo: a program's own refusal\n"


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
