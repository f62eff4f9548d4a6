"""Orbax checkpoints: the resumable latest states of a fold run and the per-cycle snapshots.

Where they live is `rundir`'s business; this module only reads and writes them. A state or snapshot that
cannot be read or written is one line naming its path (a log line, or the refusal's message), never
orbax's or tensorstore's pages of tracebacks.
"""
import errno
import logging as logging_std
import os
import pathlib
import re
import shutil
import sys
import time
from typing import Any, Dict, Optional, Tuple

import jax
import orbax.checkpoint as ocp
from absl import logging

from salt_jax import errors, models
from salt_jax.workdir.rundir import WorkdirError


# The codes that open a tensorstore error's message (absl status codes), e.g. "OUT_OF_RANGE: Error reading ...".
_TENSORSTORE_ERROR = re.compile(r"^(CANCELLED|UNKNOWN|INVALID_ARGUMENT|DEADLINE_EXCEEDED|NOT_FOUND|ALREADY_EXISTS|"
                                r"PERMISSION_DENIED|RESOURCE_EXHAUSTED|FAILED_PRECONDITION|ABORTED|OUT_OF_RANGE|"
                                r"UNIMPLEMENTED|INTERNAL|UNAVAILABLE|DATA_LOSS|UNAUTHENTICATED): ")


def _is_late_callback(unraisable) -> bool:
  """Whether sys.unraisablehook got what a tensorstore read or write reports when it completes after another
  one that orbax awaited with it failed: orbax has closed that event loop, so its result cannot be
  delivered."""
  error = unraisable.exc_value
  return isinstance(error, RuntimeError) and str(error) == "Event loop is closed"


# What asyncio logs when a task or future that holds an exception is collected unawaited: "Task exception
# was never retrieved", "Future exception was never retrieved" (the class's name first).
_NEVER_RETRIEVED = re.compile(r"^\w+ exception was never retrieved")


def _is_orphaned_read(record: logging_std.LogRecord) -> bool:
  """Whether an `asyncio` log record is the other way the same late reads and writes are reported: the loop
  is still open, the task or future of a tensorstore read or write that failed after orbax stopped awaiting
  it is collected, and asyncio logs "Task (or Future) exception was never retrieved" with that error's
  traceback."""
  error = record.exc_info[1] if record.exc_info else None
  return (bool(_NEVER_RETRIEVED.match(str(record.msg))) and error is not None
          and bool(_TENSORSTORE_ERROR.match(str(error))))


class _DropOrphanedReads(logging_std.Filter):
  """The `asyncio` logger's filter that drops _is_orphaned_read records and keeps every other one."""

  def filter(self, record):
    return not _is_orphaned_read(record)


def _drop_late_callbacks() -> None:
  """Makes sys.unraisablehook drop the late callbacks' reports (_is_late_callback), handing any other
  exception to the hook it had, and the `asyncio` logger drop the orphaned reads' (_is_orphaned_read); done
  once, before the first orbax read or write. Otherwise one damaged state, or a disk that fills during a
  write, prints a traceback for each read or write still in flight (hundreds, over the rest of the run or
  at exit) besides the one line that says what failed."""
  asyncio_log = logging_std.getLogger("asyncio")
  if not any(isinstance(f, _DropOrphanedReads) for f in asyncio_log.filters):
    asyncio_log.addFilter(_DropOrphanedReads())
  if getattr(sys.unraisablehook, "drops_late_callbacks", False):
    return
  previous = sys.unraisablehook

  def hook(unraisable):
    if not _is_late_callback(unraisable):
      previous(unraisable)

  hook.drops_late_callbacks = True
  sys.unraisablehook = hook


def _remove_partial(final: pathlib.Path, quiet: float = 2.0, limit: float = 60.0) -> None:
  """Removes what a failed orbax write of `final` left: its folders <name>.orbax-checkpoint-tmp*. The other
  items' writes may still be in flight (tensorstore's, no longer awaited by orbax) and make them again, so
  they are removed until none has appeared for `quiet` seconds (at most `limit` seconds in all)."""
  start = last_seen = time.monotonic()
  while time.monotonic() - start < limit:
    found = list(final.parent.glob(f"{final.name}.orbax-checkpoint-tmp*"))
    for tmp in found:
      shutil.rmtree(tmp, ignore_errors=True)
    if found:
      last_seen = time.monotonic()
    elif time.monotonic() - last_seen >= quiet:
      return
    time.sleep(0.05)


class DiskError(errors.IOFailure):
  """A checkpoint or snapshot that the disk cannot take (read-only, out of space or inodes); one line."""


MIN_FREE_INODES = 64     # a state is ~20 files and folders; a snapshot fewer


def check_room(directory, nbytes: int) -> None:
  """Raises DiskError naming the path and errno when `directory` (or its nearest existing parent) cannot
  take ~nbytes more: checked before orbax starts, which would otherwise wait on its directory timeouts
  (minutes) or print pages of tracebacks from its threads."""
  path = pathlib.Path(directory).absolute()
  existing = next(p for p in (path, *path.parents) if p.exists())
  if not os.access(existing, os.W_OK):
    code = errno.EROFS if _read_only(existing) else errno.EACCES
    raise DiskError(f"cannot write {existing} ([Errno {code}] {os.strerror(code)}); free it or point the "
                    "workdir elsewhere, then re-run the same command to resume")
  stat = os.statvfs(existing)
  if stat.f_files and stat.f_favail < MIN_FREE_INODES:
    raise DiskError(f"cannot write {path}: {stat.f_favail} inodes left ([Errno {errno.ENOSPC}] "
                    f"{os.strerror(errno.ENOSPC)}); free some, then re-run the same command to resume")
  free = stat.f_bavail * stat.f_frsize
  if free < nbytes:
    raise DiskError(f"cannot write {path}: {free / 2**20:.1f} MiB free, a save needs "
                    f"~{nbytes / 2**20:.1f} MiB "
                    f"([Errno {errno.ENOSPC}] {os.strerror(errno.ENOSPC)}); free space, then re-run the same "
                    "command to resume")


def _read_only(path: pathlib.Path) -> bool:
  return bool(os.statvfs(path).f_flag & os.ST_RDONLY)


def _nbytes(tree) -> int:
  """Bytes of a pytree's arrays, plus a margin for metadata."""
  return sum(int(getattr(x, "nbytes", 0)) for x in jax.tree.leaves(tree)) + (1 << 20)


class LatestCheckpoint:
  """The `keep` (>= 2 in training) most recent end-of-epoch states of one fold run, for resuming after a
  crash or kill -9.

  `restore_latest` falls back to an older state when the newest cannot be read: the unreadable one is
  reported in one log line naming its path and moved to `corrupt_dir`, so training redoes that epoch.
  """

  def __init__(self, directory, corrupt_dir=None, keep: int = 2):
    self._keep = keep
    self._directory = pathlib.Path(directory).absolute()
    self._corrupt_dir = pathlib.Path(corrupt_dir).absolute() if corrupt_dir else None
    self._writing: Optional[int] = None   # the epoch whose state is being written in the background
    _drop_late_callbacks()
    self._manager = self._open()

  def _open(self) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        self._directory, item_names=("state", "loop"),
        options=ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=True,
                                             cleanup_tmp_directories=True))

  def latest_epoch(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, epoch: int, state, loop: Dict[str, Any]) -> None:
    """Starts writing the state of `epoch` in the background (the previous write is finished first);
    a disk that cannot take it is a DiskError before anything is written."""
    self.wait()
    check_room(self._directory, _nbytes(state))
    self._writing = epoch
    try:
      self._manager.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        loop=ocp.args.JsonSave(loop)))
    except Exception as e:  # orbax raises many types; the user needs the path
      self._failed(e)

  def restore(self, epoch: int, abstract_state) -> Tuple[Any, Dict[str, Any]]:
    out = self._manager.restore(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), loop=ocp.args.JsonRestore()))
    return out.state, out.loop

  def restore_latest(self, abstract_state) -> Optional[Tuple[int, Any, Dict[str, Any]]]:
    """(epoch, state, loop) of the newest readable state, or None when there is none at all.

    Raises WorkdirError (one line per state) when states exist but none can be read: never restarts
    silently from scratch.
    """
    epochs = sorted(self._manager.all_steps(), reverse=True)
    failures = []
    for epoch in epochs:
      try:
        state, loop = self.restore(epoch, abstract_state)
      except Exception as e:  # orbax/tensorstore raise many types; one line with the path is what helps
        failures.append((epoch, f"checkpoint {self._directory / str(epoch)} is unreadable "
                                f"({errors.one_line(e)})"))
        logging.warning("%s", failures[-1][1])
        continue
      if failures:
        self._set_aside([e for e, _ in failures])
        logging.warning("resuming from the previous checkpoint, epoch %d", epoch)
      return epoch, state, loop
    if failures:
      raise WorkdirError("no readable checkpoint to resume from: " + "; ".join(m for _, m in failures) +
                         f". Move {self._directory} away to start this fold again from scratch")
    return None

  def _set_aside(self, epochs) -> None:
    """Moves unreadable states out of the manager's folder (so the epochs can be saved again)."""
    self._manager.close()
    for epoch in epochs:
      src = self._directory / str(epoch)
      if self._corrupt_dir is None:
        shutil.rmtree(src)
        continue
      self._corrupt_dir.mkdir(parents=True, exist_ok=True)
      dst = self._corrupt_dir / str(epoch)
      n = 1
      while dst.exists():
        dst, n = self._corrupt_dir / f"{epoch}.{n}", n + 1
      src.rename(dst)
      logging.warning("moved the unreadable checkpoint to %s", dst)
    self._manager = self._open()

  def wait(self) -> None:
    """Waits for the background write; one that failed (e.g. the disk filled up) is a DiskError naming
    the state's path, and what it had written is removed."""
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # orbax re-raises its writer thread's error, of many types
      self._failed(e)
    self._writing = None

  def _failed(self, error: Exception) -> None:
    """Removes what the failed write of the current epoch left and raises the DiskError naming its path."""
    path = self._directory if self._writing is None else self._directory / str(self._writing)
    if self._writing is not None:
      _remove_partial(path)
    self._writing = None
    raise DiskError(f"cannot save checkpoint {path} ({errors.one_line(error)}); free space, then re-run the "
                    "same command to resume from the last saved epoch") from error

  def close(self) -> None:
    self._manager.close()


def save_snapshot(path, variables, meta: Dict[str, Any]) -> None:
  """Saves {'params','batch_stats'} and its metadata (threshold, mAP, loss, epoch) atomically."""
  path = pathlib.Path(path).absolute()
  check_room(path.parent, _nbytes(variables))
  _drop_late_callbacks()
  try:
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
      ckptr.save(path, args=ocp.args.Composite(variables=ocp.args.StandardSave(variables),
                                               meta=ocp.args.JsonSave(meta)), force=True)
  except Exception as e:  # orbax raises many types; the user needs the path
    _remove_partial(path)
    raise DiskError(f"cannot save snapshot {path} ({errors.one_line(e)})") from e


def load_snapshot(path, abstract_variables=None) -> Tuple[Any, Dict[str, Any]]:
  """Restores a snapshot; a missing or unreadable one is an error (never silently skipped)."""
  path = pathlib.Path(path).absolute()
  if not path.is_dir():
    raise WorkdirError(f"snapshot {path} does not exist")
  _drop_late_callbacks()
  try:
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
      out = ckptr.restore(path, args=ocp.args.Composite(
          variables=ocp.args.StandardRestore(abstract_variables), meta=ocp.args.JsonRestore()))
  except Exception as e:  # orbax raises many types; the user needs the path.
    raise WorkdirError(f"cannot read snapshot {path} ({errors.one_line(e)})") from e
  return out.variables, out.meta


def load_model_snapshot(path, model_section, input_size: int, sharding=None) -> Tuple[Any, Dict[str, Any]]:
  """(variables {"params", "batch_stats"}, metadata) of a snapshot of the model section's network; the
  variables' shapes are traced with jax.eval_shape on a (1,input_size,input_size,3) input (nothing is
  computed) and restored with `sharding` (e.g. replicated over this machine's devices, whatever devices
  wrote the snapshot; None: orbax's default placement)."""
  shapes = jax.eval_shape(lambda: models.init_variables(models.build(**model_section), jax.random.key(0),
                                                        size=input_size))
  if sharding is not None:
    shapes = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)
  return load_snapshot(path, {"params": shapes["params"], "batch_stats": shapes.get("batch_stats", {})})


def snapshot_meta(path) -> Dict[str, Any]:
  """A snapshot's metadata alone (model, fold, epoch, mAP, ...); a missing or unreadable one is an error."""
  path = pathlib.Path(path).absolute()
  if not path.is_dir():
    raise WorkdirError(f"snapshot {path} does not exist")
  _drop_late_callbacks()
  try:
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
      return ckptr.restore(path, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
  except Exception as e:  # orbax raises many types; the user needs the path.
    raise WorkdirError(f"cannot read snapshot {path} ({errors.one_line(e)})") from e
