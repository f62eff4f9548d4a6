"""The one way every program of the package (and scripts/) is started: absl flags, one-line refusals.

A program module defines its flags in a function, reads them in `main` and hands both to `run`:

    FLAGS = flags.FLAGS

    def define_flags() -> None:
      config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
      flags.DEFINE_string("workdir", None, "Directory of this model's runs.")
      flags.mark_flags_as_required(["config", "workdir"])

    def main(argv):
      del argv
      return train_and_evaluate(FLAGS.config, FLAGS.workdir)   # library call, no try/except, no sys.exit

    if __name__ == "__main__":
      cli.run(main, define_flags, prog="salt_jax.train")

A command's module at the top of the package (salt_jax/train.py) is only that last block, importing `main` and
`define_flags` from where they live (salt_jax.training.train); `run` gives --help that module's docstring.

Flags are defined only when the program runs, so modules whose flags share names (`--data_dir`) import side
by side. `run` parses the command line with `configlib.parse_flags` (an unknown `--config.key` names the
closest known keys; without a config flag it is absl's own parsing) and turns what `main` does into exit
statuses:

  0  `main` returned (its result is returned to an in-process caller, never passed to sys.exit);
  1  a refused command: `main` raised an `errors.Refusal`, i.e. input the user can fix (a bad flag value,
     config, workdir, data file: `errors.BadInput`) or the environment failing at one of our reads or writes
     (a full or read-only disk, a missing file: `errors.IOFailure`, naming the path); stderr gets one line
     `<prog>: <message>` and no traceback. Flags absl cannot parse also exit 1 (`FATAL Flags parsing
     error: ...`);
  2  a usage error: `main` raised `app.UsageError` (e.g. flags that do not go together): `<prog>: <message>`;
 70  a bug in salt_jax (EX_SOFTWARE): any other exception. Its traceback is printed, then the line
     `<prog>: this is a bug in salt_jax ...` asking for a report with the command line and that traceback.

A program with `commands` takes one command word (`python -m salt_jax.jigsaw solve --data_dir=...`), passed
to `main` as argv[1]; its lines read `<prog> <command>: error: <message>`, the form its commands have always
printed. On the console, lines read `HH:MM:SS message` (`--log_format=absl`: absl's full prefix); other
libraries' INFO lines and orbax's tracebacks of failed reads and writes are dropped unless `--verbosity=1`;
`--log_dir=DIR` keeps every line, with the full prefix, in DIR/<prog>.log (route_logs).
Given `argv` (the arguments after the program name), `run` runs the program in this process as a
shell would (tests): its flags exist for that call only, and `main`'s result is returned.
"""
import logging
import os
import pathlib
import sys
import traceback
from typing import Any, Callable, Optional, Sequence, Tuple

from absl import app, flags
from absl import logging as absl_logging

from salt_jax import configlib, errors, repo

BUG_STATUS = 70  # sysexits.h EX_SOFTWARE: an internal software error
BUG_LINE = ("{prog}: this is a bug in salt_jax, not a problem with your input or disk: please report it "
            "with the command line and the traceback above")


def run(main: Callable[[Sequence[str]], Any], define_flags: Optional[Callable[[], None]] = None, *,
        prog: str, argv: Optional[Sequence[str]] = None, commands: Sequence[str] = ()) -> Any:
  """Runs `main` as the program `prog` (e.g. "salt_jax.predict"); see the module docstring.

  Args:
    main: main(argv) -> result; argv is [prog] or, with `commands`, [prog, command].
    define_flags: defines the program's flags on `flags.FLAGS` (None: the program has none).
    argv: the command line after the program name, to run in this process; None: sys.argv, and exit.
    commands: the command words the program takes first (none: it takes no positional argument).
  """
  before = set(flags.FLAGS)
  if define_flags is not None:
    define_flags()
  commands = tuple(commands)
  if argv is None:
    _describe_program(main, set(flags.FLAGS) - before)
    def program(args):
      _call(main, args, prog, commands, setup=lambda: route_logs(prog))  # app.run: main's result to sys.exit
    app.run(program, flags_parser=configlib.parse_flags)
  saved = sys.argv  # ml_collections' config flags read their `--config.key` overrides from sys.argv
  sys.argv = [prog, *argv]
  try:
    return _call(main, configlib.parse_flags(sys.argv), prog, commands)
  finally:
    sys.argv = saved
    for name in set(flags.FLAGS) - before:
      delattr(flags.FLAGS, name)


def _describe_program(main: Callable, names) -> None:
  """--help and --helpshort of a program started through a thin entry module (`python -m salt_jax.train`
  runs salt_jax/train.py, which hands salt_jax.training.train's main to `run`) describe the module that
  defines `main`: its docstring, and the flags define_flags made (absl shows __main__'s)."""
  entry = sys.modules["__main__"]
  implementation = sys.modules.get(main.__module__)
  if implementation is not None and implementation is not entry and implementation.__doc__:
    entry.__doc__ = implementation.__doc__
  for name in names:
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])


PACKAGE_DIRS = tuple(str(repo.ROOT / d) + os.sep for d in ("salt_jax", "scripts"))


ORBAX_DIR = f"{os.sep}orbax{os.sep}"


def _console_keeps(record: logging.LogRecord) -> bool:
  """This package's lines, and other libraries' warnings and errors except orbax's reports of a failed read
  or write with its threads' tracebacks (salt_jax.workdir.checkpoints states each such failure in one line
  naming the path)."""
  if os.path.abspath(record.pathname).startswith(PACKAGE_DIRS):
    return True
  return record.levelno >= logging.WARNING and not (record.exc_info and ORBAX_DIR in record.pathname)


LOG_FORMATS = ("short", "absl")
flags.DEFINE_enum("log_format", "short", list(LOG_FORMATS), "Console lines: short = 'HH:MM:SS message' "
                  "(warnings and errors with their level), absl = absl's full prefix (level, date, time, "
                  "thread, file:line). --log_dir files always have the full prefix.")


class ShortFormatter(logging.Formatter):
  """`HH:MM:SS message` for INFO and below, `HH:MM:SS WARNING: message` from WARNING up (tracebacks kept)."""

  def __init__(self):
    super().__init__("%(asctime)s %(message)s", "%H:%M:%S")
    self._loud = logging.Formatter("%(asctime)s %(levelname)s: %(message)s", "%H:%M:%S")

  def format(self, record: logging.LogRecord) -> str:
    return self._loud.format(record) if record.levelno >= logging.WARNING else super().format(record)


def route_logs(prog: str) -> None:
  """Console lines read `HH:MM:SS message` (ShortFormatter) unless --log_format=absl; the console drops other
  libraries' INFO lines (orbax's checkpoint phases, JAX's backend probe) and orbax's tracebacks of failed
  reads and writes unless --verbosity asks for them (>= 1); this package's lines and the other warnings and
  errors stay. With absl's --log_dir, every line also goes to <log_dir>/<prog>.log, unfiltered, with absl's
  full prefix (a log folder that cannot be written is an IOFailure)."""
  console = absl_logging.get_absl_handler()
  short = flags.FLAGS.log_format == "short"
  console.setFormatter(ShortFormatter() if short else absl_logging.PythonFormatter())
  if flags.FLAGS.log_dir:
    path = pathlib.Path(flags.FLAGS.log_dir) / f"{prog.replace('/', '_')}.log"
    try:
      path.parent.mkdir(parents=True, exist_ok=True)
      handler = logging.FileHandler(path)
    except OSError as e:
      raise errors.io_failure(e, path) from e
    handler.setFormatter(absl_logging.PythonFormatter())
    logging.getLogger().addHandler(handler)
  if flags.FLAGS.verbosity < 1:
    if _console_keeps not in console.filters:
      console.addFilter(_console_keeps)


def _call(main, argv: Sequence[str], prog: str, commands: Tuple[str, ...],
          setup: Optional[Callable[[], None]] = None) -> Any:
  """setup() then main(argv), with the command word checked and the refusals, usage errors and bugs turned
  into exits."""
  line = f"{prog}: {{}}"
  if commands:
    if len(argv) < 2 or argv[1] not in commands:
      _exit(line.format(f"error: give one command first: {', '.join(commands)}"), 2)
    line = f"{prog} {argv[1]}: error: {{}}"
  if len(argv) > 1 + bool(commands):
    _exit(line.format(f"unexpected argument(s) {' '.join(argv[1 + bool(commands):])}"), 2)
  try:
    if setup is not None:
      setup()
    return main(argv)
  except app.UsageError as e:
    _exit(line.format(e), 2)
  except errors.Refusal as e:
    _exit(line.format(e), 1)
  except Exception:  # pylint: disable=broad-exception-caught  # a bug: its traceback, then what to do
    traceback.print_exc()
    _exit(BUG_LINE.format(prog=prog), BUG_STATUS)


def _exit(line: str, status: int) -> None:
  print(line, file=sys.stderr, flush=True)
  sys.exit(status)
