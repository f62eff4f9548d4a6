"""The run directory (workdir) of one model: its layout, its records, its lock and the rules for re-runs.

Every other module asks `RunDir` for paths and records; none builds a workdir path itself.

  <workdir>/run.json                            {"model": ...}: the model this workdir belongs to
  <workdir>/folds.csv                           the k-fold split (id,fold), shared by every fold run
  <workdir>/pseudo_split.csv                    test halves for pseudo labels (unless config.pseudo_split_file)
  <workdir>/lock                                flock'ed while train or predict runs; names its last holder
  <workdir>/fold_<k>/config.json                the config of that fold's run (checked on every re-run)
  <workdir>/fold_<k>/checkpoints/<epoch>        the two latest end-of-epoch states (resume)
  <workdir>/fold_<k>/checkpoints_corrupt/<epoch>  unreadable latest states, moved aside on resume
  <workdir>/fold_<k>/snapshots/cycle_<c>_<kind> per-cycle best params + batch_stats + metadata
  <workdir>/fold_<k>/history.jsonl              one JSON line per epoch
  <workdir>/fold_<k>/tb/                        TensorBoard events
  <workdir>/predictions/<kind>/fold_<k>_cycle_<c>.npz   salt_jax.predict's output per snapshot
"""
import contextlib
import datetime
import json
import os
import pathlib
import re
import socket
import sys
from typing import Any, Dict, Iterator, List, Optional, Tuple

import ml_collections
import numpy as np

from salt_jax import configlib, errors, fileio, schedules
from salt_jax.data import folds as folds_lib

try:
  import fcntl
except ImportError:  # Windows: no advisory locks; runs are not protected against each other there.
  fcntl = None

SNAPSHOT_KINDS = ("max_map", "min_loss")
_FOLD_RE = re.compile(r"fold_(\d+)")
_SNAPSHOT_RE = re.compile(r"cycle_(\d+)_(max_map|min_loss)")
_PREDICTION_RE = re.compile(r"fold_(\d+)_cycle_(\d+)\.npz")


class WorkdirError(errors.BadInput):
  """The workdir cannot be used for this run (other model, other settings, in use, broken records)."""


def _check_kind(kind: str) -> None:
  if kind not in SNAPSHOT_KINDS:
    raise ValueError(f"snapshot kind must be one of {SNAPSHOT_KINDS}, got {kind!r}")


class RunDir:
  """Paths and records of one model's workdir (see the module docstring for the layout)."""

  def __init__(self, workdir):
    self.root = pathlib.Path(workdir)

  def __repr__(self) -> str:
    return f"RunDir({str(self.root)!r})"

  # Layout.
  @property
  def run_json(self) -> pathlib.Path:
    return self.root / "run.json"

  @property
  def folds_csv(self) -> pathlib.Path:
    return self.root / "folds.csv"

  @property
  def lock_file(self) -> pathlib.Path:
    return self.root / "lock"

  def fold_dir(self, fold: int) -> pathlib.Path:
    return self.root / f"fold_{fold}"

  def config_json(self, fold: int) -> pathlib.Path:
    return self.fold_dir(fold) / "config.json"

  def checkpoints_dir(self, fold: int) -> pathlib.Path:
    return self.fold_dir(fold) / "checkpoints"

  def corrupt_checkpoints_dir(self, fold: int) -> pathlib.Path:
    return self.fold_dir(fold) / "checkpoints_corrupt"

  def history_jsonl(self, fold: int) -> pathlib.Path:
    return self.fold_dir(fold) / "history.jsonl"

  def tb_dir(self, fold: int) -> pathlib.Path:
    return self.fold_dir(fold) / "tb"

  def snapshot_dir(self, fold: int, cycle: int, kind: str) -> pathlib.Path:
    _check_kind(kind)
    return self.fold_dir(fold) / "snapshots" / f"cycle_{cycle}_{kind}"

  def predictions_dir(self, kind: str) -> pathlib.Path:
    _check_kind(kind)
    return self.root / "predictions" / kind

  def prediction_file(self, kind: str, fold: int, cycle: int) -> pathlib.Path:
    return self.predictions_dir(kind) / f"fold_{fold}_cycle_{cycle}.npz"

  def current_prediction(self, kind: str, fold: int, cycle: int) -> Optional[pathlib.Path]:
    """The prediction file of snapshot (fold, cycle, kind) when it is not older than the snapshot (one
    training rewrote after predict ran is stale), else None (also when either is missing)."""
    pred, snap = self.prediction_file(kind, fold, cycle), self.snapshot_dir(fold, cycle, kind)
    if pred.is_file() and snap.exists() and pred.stat().st_mtime >= snap.stat().st_mtime:
      return pred
    return None

  def pseudo_split_csv(self, pseudo) -> pathlib.Path:
    """The test-half split of a pseudo-label run: the pseudo section's pseudo_split_file, else the workdir's."""
    return pathlib.Path(pseudo.pseudo_split_file) if pseudo.pseudo_split_file else self.root / "pseudo_split.csv"

  # Listings.
  def folds(self) -> List[int]:
    """Folds that have a recorded config, sorted."""
    found = [int(m.group(1)) for p in self.root.glob("fold_*")
             if (m := _FOLD_RE.fullmatch(p.name)) and (p / "config.json").is_file()]
    return sorted(found)

  def snapshots(self, kind: str = "max_map") -> List[Tuple[int, int, pathlib.Path]]:
    """[(fold, cycle, path)] of every finished snapshot of one kind, sorted."""
    _check_kind(kind)
    found = []
    for fdir in self.root.glob("fold_*"):
      m = _FOLD_RE.fullmatch(fdir.name)
      if not m or not (fdir / "snapshots").is_dir():
        continue
      for sdir in (fdir / "snapshots").iterdir():
        sm = _SNAPSHOT_RE.fullmatch(sdir.name)
        if sm and sm.group(2) == kind:
          found.append((int(m.group(1)), int(sm.group(1)), sdir))
    return sorted(found)

  def prediction_files(self, kind: str = "max_map") -> List[pathlib.Path]:
    """Every snapshot prediction of one kind, sorted by (fold, cycle); none at all is an error."""
    pdir = self.predictions_dir(kind)
    found = sorted((int(m.group(1)), int(m.group(2)), p) for p in pdir.glob("fold_*_cycle_*.npz")
                   if (m := _PREDICTION_RE.fullmatch(p.name)))
    if not found:
      raise WorkdirError(f"no predictions in {pdir}; run python -m salt_jax.predict --workdir={self.root} first")
    return [p for _, _, p in found]

  # Records.
  def recorded_model(self) -> Optional[str]:
    """The model the workdir holds: run.json, else the fold configs (run.json lost); None if new."""
    if self.run_json.is_file():
      return _read_json(self.run_json).get("model")
    models = {self.fold_config(f).model for f in self.folds()}
    if len(models) > 1:
      raise WorkdirError(f"{self.root} holds folds of several models {sorted(models)} and no run.json")
    return models.pop() if models else None

  def fold_config(self, fold: int) -> ml_collections.ConfigDict:
    """The config fold `fold` was (last) trained with (configlib.with_defaults: a key its record lacks, as
    records of older versions do, has its default)."""
    path = self.config_json(fold)
    if not path.is_file():
      raise WorkdirError(f"{path} is missing: fold {fold} of {self.root} was never trained")
    return configlib.with_defaults(_read_json(path))

  def check_run(self, config, fold: Optional[int] = None) -> None:
    """Refuses a training run of `fold` (default config.fold) this workdir must not take; reads only.

    The model must be the workdir's, and a fold trained before must be re-run with the same value of
    every key in configlib.fixed_keys (the others, e.g. logging or the eval batch, may change), and with
    no fewer epochs than it has trained (a `restarts` run may change cycle_num, never below the cycles it
    trained into).
    """
    fold = config.fold if fold is None else fold
    held = self.recorded_model()
    if held is not None and held != config.model:
      raise WorkdirError(f"workdir {self.root} holds checkpoints of model {held!r}, not {config.model!r}; "
                         "use one workdir per model")
    if self.config_json(fold).is_file():
      changed = configlib.resume_conflicts(_read_json(self.config_json(fold)), configlib.for_fold(config, fold))
      if changed:
        diff = "; ".join(f"{k}: {old!r} -> {new!r}" for k, old, new in changed)
        raise WorkdirError(
            f"fold {fold} of {self.root} was trained with other settings ({diff}); these keys must "
            f"stay as recorded in {self.config_json(fold)} to resume or re-run it: use another "
            "workdir for other settings")
      optim = configlib.section(config, "optim")
      trained, total = self.trained_epochs(fold), schedules.run_epochs(optim)
      if trained > total:
        cycles = schedules.cycle_of_epoch(trained - 1, optim.warmup_epochs, optim.cycle_len) + 1
        raise WorkdirError(
            f"fold {fold} of {self.root} has trained {trained} epochs, into Lovasz cycle {cycles}; "
            f"cycle_num={optim.cycle_num} would end before that: resume it with cycle_num >= {cycles}")

  def trained_epochs(self, fold: int) -> int:
    """How many epochs fold `fold` has finished, by its records: one more than the latest epoch of its
    history.jsonl or of a state in checkpoints/ (0 if none)."""
    epochs = [int(p.name) for p in self.checkpoints_dir(fold).glob("*") if p.name.isdigit()]
    epochs += [record["epoch"] for record in self.history(fold)]
    return max(epochs, default=-1) + 1

  def history(self, fold: int) -> List[Dict[str, Any]]:
    """The epoch records of fold `fold`'s history.jsonl ([] without the file); WorkdirError naming the file
    when it cannot be read or a line is not a JSON record with an integer epoch."""
    path = self.history_jsonl(fold)
    if not path.is_file():
      return []
    try:
      records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
      if not all(isinstance(r, dict) and isinstance(r.get("epoch"), int) for r in records):
        raise ValueError("a line without an integer 'epoch'")
    except (OSError, ValueError) as e:  # unreadable, not UTF-8 or not JSON lines (all ValueErrors)
      raise WorkdirError(f"cannot read {path} ({errors.one_line(e)}); move it away to resume without the "
                         "earlier epochs' records") from e
    return records

  def record_run(self, config, fold: Optional[int] = None) -> None:
    """Writes run.json (if new) and the config.json of `fold` (default config.fold; if changed); call
    after check_run, under the lock."""
    fold = config.fold if fold is None else fold
    if not self.run_json.is_file():
      fileio.write_json(self.run_json, {"model": config.model})
    record = configlib.for_fold(config, fold)
    path = self.config_json(fold)
    if not path.is_file() or _read_json(path) != record:
      fileio.write_json(path, record)

  # Data selection.
  def fold_assignment(self, ids: np.ndarray, masks: np.ndarray, num_folds: int, fold_seed: int) -> np.ndarray:
    """(N,) int fold of each id: the workdir's folds.csv (made on first use, then reused)."""
    return folds_lib.load_or_make_folds(self.folds_csv, ids, masks, num_folds, fold_seed)

  def fold_rows(self, data, fold: int, ids: np.ndarray, masks: np.ndarray, seed: int
                ) -> Tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows) of `fold` into the train set: the data section's split (num_folds,
    fold_seed) and subsets (train_subset: a choice seeded by `seed`, the config's; valid_subset).

    The one place the selection is made: training and prediction both call it, so they see the same
    validation tiles.
    """
    assignment = self.fold_assignment(ids, masks, data.num_folds, data.fold_seed)
    train_idx, valid_idx = folds_lib.fold_split(assignment, fold)
    if data.train_subset:
      train_idx = np.random.default_rng(seed).permutation(train_idx)[:data.train_subset]
    if data.valid_subset:
      valid_idx = valid_idx[:data.valid_subset]
    return train_idx, valid_idx

  # Lock.
  @contextlib.contextmanager
  def lock(self, process_index: int = 0) -> Iterator[None]:
    """Holds the workdir for this process: a second train or predict on it gets a WorkdirError naming
    the holder. An advisory flock, released by the OS when the holder dies (also on kill -9).

    When the block raises (e.g. a start refused for a missing data folder), a lock file this call created
    is removed again, and so are the folders it created while nothing else was written into them: a
    workdir that did not exist stays absent. A lock file that existed gets its bytes and times back: it
    still names its last holder that ended normally.
    """
    path = self.lock_file if process_index == 0 else self.root / f"lock.process{process_index}"
    fd, created = self._acquire(path)
    before = None if created is not None else (os.pread(fd, 1 << 16, 0), os.fstat(fd))
    try:
      _write_lock(fd, path, _holder().encode())
      yield
    except BaseException:
      if created is not None:
        path.unlink(missing_ok=True)
        for folder in created:
          try:
            folder.rmdir()
          except OSError:  # something else was written into it
            break
      else:
        with contextlib.suppress(OSError):  # the first error is the one to report
          _write_lock(fd, path, before[0])
          os.utime(fd, ns=(before[1].st_atime_ns, before[1].st_mtime_ns))
      raise
    finally:
      os.close(fd)  # closing the descriptor releases the flock

  def _acquire(self, path: pathlib.Path) -> Tuple[int, Optional[List[pathlib.Path]]]:
    """(a descriptor holding the flock on the lock file `path`, None if that file existed, else the
    folders this call created for it, deepest first)."""
    while True:
      missing = [p for p in (self.root.absolute(), *self.root.absolute().parents) if not p.exists()]
      self.root.mkdir(parents=True, exist_ok=True)
      created = None if path.exists() else missing
      fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        if fcntl is not None:
          fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if _names(path, fd):
          return fd, created
      except BlockingIOError:
        holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise WorkdirError(f"workdir {self.root} is in use by {holder}; wait for that run to end or "
                           "stop it") from None
      except BaseException:
        os.close(fd)
        raise
      os.close(fd)  # locked a file that a refused holder had created and removed: lock the new one


def _write_lock(fd: int, path: pathlib.Path, text: bytes) -> None:
  """Replaces the lock file's content with `text`: written over the old bytes, then cut to length (a full
  disk still takes a holder no longer than the last); an error is an IOFailure naming the file."""
  try:
    os.pwrite(fd, text, 0)
    os.ftruncate(fd, len(text))
  except OSError as e:
    raise errors.io_failure(e, path) from e


def _names(path: pathlib.Path, fd: int) -> bool:
  """Whether `path` is (still) the file open as `fd`."""
  try:
    return os.path.samestat(os.stat(path), os.fstat(fd))
  except FileNotFoundError:
    return False


def _holder() -> str:
  started = datetime.datetime.now().isoformat(timespec="seconds")
  argv = getattr(sys, "orig_argv", None) or [sys.executable] + sys.argv  # as typed: python -m salt_jax.train ...
  command = " ".join([pathlib.Path(argv[0]).name] + list(argv[1:]))
  return f"pid {os.getpid()} on {socket.gethostname()} since {started} ({command})\n"


def _read_json(path: pathlib.Path) -> Dict[str, Any]:
  try:
    return json.loads(path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise WorkdirError(f"cannot read {path}: {e}") from e
