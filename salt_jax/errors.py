"""The exceptions a program refuses in one line (salt_jax.cli); any other exception is a bug in salt_jax.

  Refusal        what the user can act on; the message is the whole story, a traceback would not help
    BadInput     (a ValueError) the user's input cannot be used: a flag, the config, a data file, a workdir
                 and its records; each module's own kind of it (ConfigError, DataError, WorkdirError, ...)
                 derives from it
    IOFailure    (an OSError) the environment failed at one of our reads or writes: a full or read-only
                 disk, a missing or unreadable file; the message names the path
    (others)     a result the user acts on, e.g. training.records.Diverged (a non-finite loss)
"""
import os
import pathlib
from typing import Type, Union


class Refusal(Exception):
  """A command refused in one line (`<prog>: <message>`, exit status 1), with no traceback."""


class BadInput(Refusal, ValueError):
  """The user's input (flags, config, data files, workdir) cannot be used; the message says which and why."""


class IOFailure(Refusal, OSError):
  """The environment failed at one of our reads or writes (full or read-only disk, missing file); the
  message names the path. io_failure's keep the OSError's errno, strerror and filename (the path)."""

  def __str__(self) -> str:
    return str(self.args[0]) if self.args else ""


def one_line(e: BaseException, width: int = 160) -> str:
  """'Type: first line of the message' cut to `width` characters, for a refusal that names its cause
  (tensorstore's and protobuf's errors run to pages)."""
  lines = str(e).strip().splitlines()
  text = f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
  return text if len(text) <= width else text[:width - 3] + "..."


def io_failure(error: OSError, path: Union[str, os.PathLike], doing: str = "write",
               kind: Type[IOFailure] = IOFailure) -> IOFailure:
  """An IOFailure (or subclass `kind`) for `error` (e.g. ENOSPC) met while doing `doing` ("write", "read")
  at `path`: "cannot write PATH ([Errno 28] No space left on device)", with the error's errno and strerror
  and `path` as its filename. Raise it `from error`."""
  reason = f"[Errno {error.errno}] {error.strerror}" if error.errno is not None else str(error)
  failure = kind(f"cannot {doing} {pathlib.Path(path)} ({reason})")
  failure.errno, failure.strerror, failure.filename = error.errno, error.strerror, str(path)
  return failure
