"""The chunks of a volume as Dask tasks: `segment --dask=local:N` starts a LocalCluster of N worker
processes here, `--dask=tcp://host:8786` joins a running scheduler whose workers see the same input,
snapshots and output paths (a shared filesystem).

Each task is one chunk (salt_jax.seismic.volume.run_chunk; for an MDIO output, the chunks that write one
block of its Zarr chunks, in order): the worker reads its sections from the input,
segments them with the snapshots it loaded at its first task (once per worker process) and writes its
traces straight into the output, then records the chunk finished; nothing but the worker's address goes
back to the client. Chunks and their batches are the same as in one process, so the bytes are too.

A cluster by hand (README "Many workers"):

    dask scheduler --port 8786                                   # on one machine
    dask worker tcp://scheduler-host:8786 --nworkers 1 --nthreads 1   # on each machine, as many as wanted
    python -m salt_jax.segment ... --dask=tcp://scheduler-host:8786
"""
import contextlib
from typing import Callable, Dict, Iterator, List, Sequence, Set, Tuple

from salt_jax import errors
from salt_jax.seismic import infer, volume

_LOADED: Dict[Tuple, Tuple[infer.Snapshots, infer.SnapshotLoader]] = {}  # per worker process


class DaskSpecError(errors.BadInput):
  """A --dask value that is neither local:N nor tcp://host:port."""


def parse(spec: str) -> Tuple[str, object]:
  """"local:N" -> ("local", N >= 1); "tcp://host:port" -> ("tcp", the address); DaskSpecError otherwise."""
  if spec.startswith("local:"):
    try:
      n = int(spec[len("local:"):])
    except ValueError:
      n = 0
    if n >= 1:
      return "local", n
  elif spec.startswith("tcp://") and ":" in spec[len("tcp://"):]:
    return "tcp", spec
  raise DaskSpecError(f"--dask must be local:N (N >= 1 workers started here) or tcp://host:port (a "
                      f"running scheduler), got {spec}")


@contextlib.contextmanager
def client(spec: str) -> Iterator["distributed.Client"]:  # noqa: F821
  """A Dask client for `spec` (parse): a LocalCluster of N single-threaded worker processes, closed at the
  end, or the scheduler at the address."""
  import distributed
  kind, value = parse(spec)
  if kind == "local":
    with distributed.LocalCluster(n_workers=value, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as c:
      yield c
  else:
    with distributed.Client(value) as c:
      yield c


def _task(job: volume.Job, chunks: Sequence[volume.Chunk]) -> str:
  """Runs chunks in order on a worker (its snapshots loaded at its first task): the chunks of one block of
  the output (volume.block; one chunk for SEG-Y). Returns the worker's address."""
  import distributed
  key = (job.workdirs, job.kind, job.folds, job.batch_size)
  if key not in _LOADED:
    _LOADED[key] = (infer.find_snapshots(job.workdirs, job.kind, job.folds),
                    infer.SnapshotLoader(job.kind, job.batch_size, keep=True))
  snapshots, loader = _LOADED[key]
  for chunk in chunks:
    volume.run_chunk(job, chunk, snapshots, loader)
  return distributed.get_worker().address


def runner(dask_client) -> volume.Runner:
  """A volume.Runner that submits each chunk as a task and returns the addresses of the workers that ran
  them; done(chunk) is called here as each task ends."""
  import distributed

  def run(job: volume.Job, chunks: Sequence[volume.Chunk], done: Callable[[volume.Chunk], None]) -> Set[str]:
    groups: Dict[Tuple[str, int], List[volume.Chunk]] = {}
    for chunk in chunks:
      groups.setdefault(volume.block(job, chunk), []).append(chunk)
    futures = {dask_client.submit(_task, job, group, pure=False): group for group in groups.values()}
    workers = set()
    for future in distributed.as_completed(futures):
      workers.add(future.result())
      for chunk in futures[future]:
        done(chunk)
    return workers
  return run
