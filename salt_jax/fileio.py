"""Crash-safe file writes: every file the project writes goes through `atomic_path`.

A writer fills a temporary file beside the target, then `os.replace` puts it in place, so a crash or
kill -9 never leaves half a file; on error the temporary file is removed and the target is untouched.
"""
import contextlib
import errno
import json
import os
import pathlib
from typing import Any, Iterator


class UnwritableError(OSError):
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
  `path` when the block exits normally. Creates the parent folder."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
  try:
    yield tmp
    os.replace(tmp, path)
  except OSError as e:  # e.g. ENOSPC while writing: name the file the user asked for, not the temporary one
    if e.errno is not None:
      e.filename = str(path)
    raise
  finally:
    if tmp.exists():
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
