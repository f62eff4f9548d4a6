"""Runs a few data-parallel train steps of model_tiny on a fixed global batch; saves the parameters.

Used by tests/test_steps.py in subprocesses (device count and multi-process setup must be fixed before
JAX starts):
  python tests/dp_worker.py BATCH_NPZ OUT_NPZ --devices=N                      one process, N devices
  python tests/dp_worker.py BATCH_NPZ OUT_NPZ --coordinator=HOST:PORT --process_id=I --num_processes=P
"""
import argparse

import numpy as np


def main():
  p = argparse.ArgumentParser()
  p.add_argument("batch_npz")
  p.add_argument("out_npz")
  p.add_argument("--devices", type=int, default=0, help="use the first N local devices (one process)")
  p.add_argument("--coordinator", default="")
  p.add_argument("--process_id", type=int, default=0)
  p.add_argument("--num_processes", type=int, default=1)
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--seg_loss", default="bce_dice", choices=["bce_dice", "lovasz"])
  args = p.parse_args()

  import jax
  if args.coordinator:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=args.num_processes,
                               process_id=args.process_id)
  from jax.sharding import Mesh
  import functools
  from salt_jax import configlib, models, parallel, schedules
  from salt_jax.training import steps

  devices = jax.devices()[:args.devices] if args.devices else jax.devices()
  mesh = Mesh(np.asarray(devices), ("data",))
  repl, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  with np.load(args.batch_npz) as z:
    images, masks = z["image"], z["mask"]
  global_batch = len(images)
  rows = parallel.host_slice(global_batch) if args.coordinator else slice(None)

  model = models.get_model("model_tiny")
  config = configlib.base_config()  # SGD at lr 0.01 (the warm-up's constant rate), momentum 0.9, wd 2e-4
  tx = schedules.make_optimizer(config, steps_per_epoch=100)
  state = steps.create_train_state(model, tx, jax.random.key(0), image_size=128)
  state = parallel.replicate(state, mesh)
  key = parallel.replicate(jax.random.key(1), mesh)
  spec = {k: jax.ShapeDtypeStruct((global_batch, 101, 101), np.uint8, sharding=sharded) for k in ("image", "mask")}
  weights = configlib.loss_weights(configlib.section(configlib.base_config(), "loss"))  # the faithful ones (SPEC 4)
  step = jax.jit(functools.partial(steps.train_step, seg_loss=args.seg_loss, loss_weights=weights,
                                   canvas=128),
                 in_shardings=(repl, sharded, repl), out_shardings=(repl, repl), donate_argnums=(0,))
  step = step.lower(state, spec, key).compile()
  def flat(state):
    leaves = jax.tree_util.tree_flatten_with_path({"params": state.params, "batch_stats": state.batch_stats})[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v) for path, v in leaves}

  losses, saved = [], {}
  for i in range(args.steps):
    batch = parallel.to_global({"image": images[rows], "mask": masks[rows]}, sharded)
    state, metrics = step(state, batch, key)
    losses.append(float(metrics["loss"]))
    if i == 0:
      saved.update({f"step1:{k}": v for k, v in flat(state).items()})
  saved.update({f"final:{k}": v for k, v in flat(state).items()})
  np.savez(args.out_npz, losses=np.asarray(losses), n_devices=mesh.devices.size, **saved)

if __name__ == "__main__":
  main()
