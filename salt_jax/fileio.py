"""Crash-safe file writes: every file the project writes goes through `atomic_path`.

A writer fills a temporary file beside the target, then `os.replace` puts it in place, so a crash or
kill -9 never leaves half a file; on error the temporary file is removed and the target is untouched. A
write the disk refuses (full, read-only) is an UnwritableError naming the target: one line, no traceback.
"""
import contextlib
import errno
import json
import os
import pathlib
from typing import Any, Iterator

from salt_jax import errors


class UnwritableError(errors.IOFailure):
  """An output path that cannot be written (a folder, a read-only or full disk); the message names it."""


def check_writable(path, what: str = "output") -> pathlib.Path:
  """Raises UnwritableError unless `path` can be written as a file: not a folder, and its nearest existing
  parent writable. For checks before long work, so that it does not fail at the end."""
  path = pathlib.Path(path)
  if path.is_dir():
    raise UnwritableError(f"{what} {path} is a folder, not a file")
  parent = next(p for p in path.absolute().parents if p.exists())
  if not parent.is_dir():
    raise UnwritableError(f"cannot write {what} {path}: {parent} is a file, not a folder")
  if not os.access(parent, os.W_OK) or os.statvfs(parent).f_flag & os.ST_RDONLY:
    code = errno.EROFS if os.statvfs(parent).f_flag & os.ST_RDONLY else errno.EACCES
    raise UnwritableError(f"cannot write {what} {path} ([Errno {code}] {os.strerror(code)} at {parent})")
  return path


@contextlib.contextmanager
def atomic_path(path) -> Iterator[pathlib.Path]:
  """Yields a temporary path (same folder and suffix, so e.g. np.savez keeps its name) that replaces
  `path` when the block exits normally. Creates the parent folder. An OSError on the way (e.g. ENOSPC while
  the block writes) is an UnwritableError naming `path`, the file the user asked for (not the temporary
  one)."""
  path = pathlib.Path(path)
  tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    yield tmp
    os.replace(tmp, path)
  except errors.IOFailure:
    raise
  except OSError as e:
    raise errors.io_failure(e, path, kind=UnwritableError) from e
  finally:
    with contextlib.suppress(OSError):
      tmp.unlink()


def write_text(path, text: str) -> None:
  with atomic_path(path) as tmp:
    tmp.write_text(text)


def write_json(path, obj: Any) -> None:
  """Pretty, key-sorted JSON."""
  write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_jsonl(path, records) -> None:
  """One compact JSON object per line."""
  write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
