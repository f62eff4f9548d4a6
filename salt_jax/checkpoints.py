"""Run directories and orbax checkpoints: the resumable latest state and the per-cycle snapshots.

Layout of a workdir (one per model; folds add up):

  <workdir>/run.json                      the model this workdir belongs to
  <workdir>/folds.csv                     the k-fold split (id,fold), shared by every fold run
  <workdir>/fold_<k>/config.json          resolved config of that fold's run
  <workdir>/fold_<k>/checkpoints/<epoch>  latest TrainState + loop bookkeeping (resume)
  <workdir>/fold_<k>/snapshots/cycle_<c>_<kind>   params + batch_stats + metadata (threshold, mAP, ...)
  <workdir>/fold_<k>/history.jsonl        one JSON line per epoch (train loss, lr, images/s, validation)
  <workdir>/fold_<k>/tb/                  TensorBoard events
"""
import json
import os
import pathlib
import re
from typing import Any, Dict, List, Optional, Tuple

import jax
import orbax.checkpoint as ocp

SNAPSHOT_KINDS = ("max_map", "min_loss")


class WorkdirError(ValueError):
  """The workdir cannot be used for this run (other model, missing or broken checkpoints)."""


def fold_dir(workdir, fold: int) -> pathlib.Path:
  return pathlib.Path(workdir) / f"fold_{fold}"


def write_json_atomic(path, obj) -> None:
  """Writes JSON via a temporary file and a rename, so a crash never leaves half a file."""
  path = pathlib.Path(path)
  tmp = path.with_name(path.name + f".tmp{os.getpid()}")
  tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
  os.replace(tmp, path)


def claim_workdir(workdir, model: str) -> None:
  """Records which model a workdir holds; refuses a workdir that holds another model."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  marker = workdir / "run.json"
  if marker.exists():
    held = json.loads(marker.read_text()).get("model")
    if held != model:
      raise WorkdirError(f"workdir {workdir} holds checkpoints of model {held!r}, not {model!r}; "
                         "use one workdir per model")
  elif jax.process_index() == 0:
    write_json_atomic(marker, {"model": model})


class LatestCheckpoint:
  """The most recent end-of-epoch state of one fold run, for resuming after a crash or kill -9."""

  def __init__(self, directory):
    self._manager = ocp.CheckpointManager(
        pathlib.Path(directory).absolute(), item_names=("state", "loop"),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True, cleanup_tmp_directories=True))

  def latest_epoch(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, epoch: int, state, loop: Dict[str, Any]) -> None:
    self._manager.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                      loop=ocp.args.JsonSave(loop)))

  def restore(self, epoch: int, abstract_state) -> Tuple[Any, Dict[str, Any]]:
    out = self._manager.restore(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), loop=ocp.args.JsonRestore()))
    return out.state, out.loop

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def snapshot_path(workdir, fold: int, cycle: int, kind: str) -> pathlib.Path:
  if kind not in SNAPSHOT_KINDS:
    raise ValueError(f"snapshot kind must be one of {SNAPSHOT_KINDS}, got {kind!r}")
  return fold_dir(workdir, fold) / "snapshots" / f"cycle_{cycle}_{kind}"


def save_snapshot(path, variables, meta: Dict[str, Any]) -> None:
  """Saves {'params','batch_stats'} and its metadata (threshold, mAP, loss, epoch) atomically."""
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    ckptr.save(pathlib.Path(path).absolute(), args=ocp.args.Composite(
        variables=ocp.args.StandardSave(variables), meta=ocp.args.JsonSave(meta)), force=True)


def load_snapshot(path, abstract_variables=None) -> Tuple[Any, Dict[str, Any]]:
  """Restores a snapshot; a missing or unreadable one is an error (never silently skipped)."""
  path = pathlib.Path(path).absolute()
  if not path.is_dir():
    raise WorkdirError(f"snapshot {path} does not exist")
  try:
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
      out = ckptr.restore(path, args=ocp.args.Composite(
          variables=ocp.args.StandardRestore(abstract_variables), meta=ocp.args.JsonRestore()))
  except Exception as e:  # orbax raises many types; the user needs the path.
    raise WorkdirError(f"cannot read snapshot {path}: {e}") from e
  return out.variables, out.meta


def load_snapshot_meta(path) -> Dict[str, Any]:
  """Only the metadata of a snapshot (cheap; no arrays read)."""
  path = pathlib.Path(path).absolute()
  try:
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
      return ckptr.restore(path, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
  except Exception as e:
    raise WorkdirError(f"cannot read snapshot metadata {path}: {e}") from e


_SNAPSHOT_RE = re.compile(r"^cycle_(\d+)_(max_map|min_loss)$")


def list_snapshots(workdir, kind: str = "max_map") -> List[Tuple[int, int, pathlib.Path]]:
  """[(fold, cycle, path)] of every finished snapshot of one kind in a workdir, sorted."""
  found = []
  for fdir in sorted(pathlib.Path(workdir).glob("fold_*")):
    m = re.fullmatch(r"fold_(\d+)", fdir.name)
    if not m or not (fdir / "snapshots").is_dir():
      continue
    for sdir in (fdir / "snapshots").iterdir():
      sm = _SNAPSHOT_RE.match(sdir.name)
      if sm and sm.group(2) == kind:
        found.append((int(m.group(1)), int(sm.group(1)), sdir))
  return sorted(found)
