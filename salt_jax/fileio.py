"""Crash-safe file writes: every file the project writes goes through `atomic_path`.

A writer fills a temporary file beside the target, then `os.replace` puts it in place, so a crash or
kill -9 never leaves half a file; on error the temporary file is removed and the target is untouched.
"""
import contextlib
import json
import os
import pathlib
from typing import Any, Iterator


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
