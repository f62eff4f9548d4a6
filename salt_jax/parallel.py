"""Devices, meshes and global batches for data-parallel training on one or many hosts.

We use `jax.jit` over a 1-D device `Mesh` with the batch sharded along 'data' rather than `jax.pmap`:
it is what current JAX recommends (pmap is in maintenance), the step is written for the global batch
(so BatchNorm statistics are global-batch statistics with no `axis_name` plumbing, and XLA inserts the
gradient all-reduce), and the same code runs unchanged on 1 CPU, 8 GPUs or a multi-host TPU pod.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def maybe_initialize_distributed(requested: bool) -> None:
  """Joins a multi-host run when the config or the environment asks for it."""
  if requested or os.environ.get("JAX_COORDINATOR_ADDRESS"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU hosts; GPUs/TPUs unaffected
    jax.distributed.initialize()


def make_mesh() -> Mesh:
  """All devices of all hosts along one 'data' axis."""
  return Mesh(np.asarray(jax.devices()), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def replicate(tree, mesh: Mesh):
  """Host-local values, equal on every host (same seed, same config) -> global arrays replicated over
  the mesh. Unlike jax.device_put, this also works when the mesh spans other processes' devices.
  Leaves that already are replicated global arrays pass through."""
  sharding = replicated(mesh)

  def put(x):
    if not isinstance(x, jax.Array):
      x = jnp.asarray(x)  # Python scalars (e.g. the initial step) get JAX's dtype
    elif x.sharding.is_equivalent_to(sharding, x.ndim):
      return x
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    return jax.make_array_from_process_local_data(sharding, np.asarray(x))
  return jax.tree.map(put, tree)


def check_batch_size(global_batch: int, mesh: Mesh) -> int:
  """Returns this host's share of the global batch; refuses sizes the devices cannot split evenly."""
  n_dev = mesh.devices.size
  if global_batch % n_dev:
    raise ValueError(f"batch size {global_batch} is not divisible by the {n_dev} devices; "
                     f"use a multiple of {n_dev}")
  return global_batch // jax.process_count()


def host_slice(global_batch: int) -> slice:
  """The rows of every global batch that this host loads and feeds."""
  local = global_batch // jax.process_count()
  start = jax.process_index() * local
  return slice(start, start + local)


def to_global(local_batch, sharding: NamedSharding):
  """Host-local NumPy arrays (this host's rows) -> one global jax.Array per leaf, sharded on 'data'."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)
