"""Devices, meshes and global batches for fold- and data-parallel training on one or many hosts.

We use `jax.jit` over a 2-D device `Mesh` ('folds', 'data') rather than `jax.pmap`: it is what current
JAX recommends (pmap is in maintenance). Folds trained together have a leading fold axis sharded along
'folds'; each fold's batch is sharded along 'data'. The step is written for one fold's global batch (so
BatchNorm statistics are global-batch statistics with no `axis_name` plumbing, and XLA inserts the
gradient all-reduce), and the same code runs unchanged on 1 CPU, 8 GPUs or a multi-host TPU pod.
"""
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from salt_jax import errors


def maybe_initialize_distributed(requested: bool) -> None:
  """Joins a multi-host run when the config or the environment asks for it."""
  if requested or os.environ.get("JAX_COORDINATOR_ADDRESS"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU hosts; GPUs/TPUs unaffected
    jax.distributed.initialize()


def resolve_fold_map(fold_map: str, n_folds: int) -> str:
  """config.fold_map -> "vmap" or "loop": "auto" is loop on CPU (XLA:CPU runs the grouped convolutions
  of a vmapped step ~2.5x slower) and vmap elsewhere; one fold is always "loop" (no fold batching)."""
  if n_folds == 1:
    return "loop"
  if fold_map == "auto":
    return "loop" if jax.default_backend() == "cpu" else "vmap"
  return fold_map


def fold_axis_size(n_folds: int, n_devices: int, fold_map: str) -> int:
  """How many device groups the folds are spread over: gcd(folds, devices) for vmap (8 folds on 8 GPUs:
  one fold per GPU at its full batch; 2 folds on 8: 2 groups of 4 data-parallel devices; 10 on 8: 2 x 4,
  every device busy), 1 for loop (each fold's step uses every device)."""
  return math.gcd(n_folds, n_devices) if fold_map == "vmap" else 1


def make_mesh(fold_groups: int = 1) -> Mesh:
  """All devices of all hosts as a (fold_groups, devices // fold_groups) mesh, axes ('folds', 'data')."""
  devices = np.asarray(jax.devices())
  if devices.size % fold_groups:
    raise errors.BadInput(f"{devices.size} devices cannot form {fold_groups} equal fold groups")
  return Mesh(devices.reshape(fold_groups, -1), ("folds", "data"))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def fold_sharded(mesh: Mesh) -> NamedSharding:
  """Arrays with a leading fold axis (stacked train states, per-fold rows), spread over 'folds'."""
  return NamedSharding(mesh, P("folds"))


def put_global(tree, sharding: NamedSharding):
  """Host-local values, equal on every host (same seed, same config), -> global arrays with `sharding`
  (each device takes its slice of the full value). Unlike jax.device_put, this also works when the mesh
  spans other processes' devices. Leaves that already have the sharding pass through."""
  def put(x):
    if not isinstance(x, jax.Array):
      x = jnp.asarray(x)  # Python scalars (e.g. the initial step) get JAX's dtype
    elif x.sharding.is_equivalent_to(sharding, x.ndim):
      return x
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.tree.map(put, tree)


def replicate(tree, mesh: Mesh):
  """put_global with every leaf replicated over the mesh."""
  return put_global(tree, replicated(mesh))


def check_batch_size(global_batch: int, mesh: Mesh) -> None:
  """Refuses a global batch the 'data' devices cannot split evenly (host_slice gives each host its rows)."""
  n_dev = mesh.shape["data"]
  if global_batch % n_dev:
    raise errors.BadInput(f"batch size {global_batch} is not divisible by the {n_dev} devices of each fold; "
                     f"use a multiple of {n_dev}")


def host_slice(global_batch: int) -> slice:
  """The rows of every global batch that this host loads and feeds."""
  local = global_batch // jax.process_count()
  start = jax.process_index() * local
  return slice(start, start + local)


def to_global(local_batch, sharding: NamedSharding):
  """Host-local NumPy arrays (this host's rows) -> one global jax.Array per leaf, sharded on 'data'."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)
