"""Programs the tests run in a subprocess (through cli.run, as the commands are run) to see all that a
checkpoint fault prints, orbax's and tensorstore's threads included:

  FAULT=damaged ROOT=dir python tests/checkpoint_faults.py   resumes from a damaged latest state, then
      reads a damaged snapshot (states of 200 arrays, as a training state has hundreds)
  FAULT=full ROOT=dir python tests/checkpoint_faults.py      saves a state in the background while the disk
      is full (a stub raising ENOSPC at orbax's JSON writes under ROOT: the loop item, the metadata)
"""
import errno
import os
import pathlib

import jax
import numpy as np
from etils import epath

from salt_jax import cli
from salt_jax.workdir import checkpoints

ROOT = pathlib.Path(os.environ["ROOT"])
STATE = {f"a{i:03d}": np.random.default_rng(i).random(16384, np.float32) for i in range(200)}


def truncate_largest(folder: pathlib.Path) -> None:
  """Cuts the largest data file of an orbax folder to half its size."""
  data = [p for p in folder.rglob("*") if p.is_file() and p.parent.name == "d"]
  largest = max(data, key=lambda p: p.stat().st_size)
  os.truncate(largest, largest.stat().st_size // 2)


def damaged(argv) -> None:
  del argv
  latest = checkpoints.LatestCheckpoint(ROOT / "checkpoints", ROOT / "checkpoints_corrupt")
  for epoch in (0, 1):
    latest.save(epoch, STATE, {"bests": {}})
    latest.wait()
  latest.close()
  truncate_largest(ROOT / "checkpoints" / "1")
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), STATE)
  resumed = checkpoints.LatestCheckpoint(ROOT / "checkpoints", ROOT / "checkpoints_corrupt")
  print("resumed after epoch", resumed.restore_latest(abstract)[0], flush=True)
  resumed.close()
  checkpoints.save_snapshot(ROOT / "snapshot", STATE, {"fold": 0})
  truncate_largest(ROOT / "snapshot")
  checkpoints.load_snapshot(ROOT / "snapshot", abstract)


def full(argv) -> None:
  del argv
  write_text = epath.Path.write_text

  def no_space(path, *args, **kwargs):
    if str(ROOT) in str(path):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return write_text(path, *args, **kwargs)

  epath.Path.write_text = no_space
  latest = checkpoints.LatestCheckpoint(ROOT / "checkpoints")
  latest.save(0, STATE, {"bests": {}})
  latest.wait()


if __name__ == "__main__":
  fault = os.environ["FAULT"]
  cli.run({"damaged": damaged, "full": full}[fault], prog=f"checkpoint_faults {fault}")
