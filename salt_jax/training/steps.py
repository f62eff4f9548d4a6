"""Pure, jit-compiled training steps: augment -> forward -> loss -> optimiser (flip-TTA evaluation is
inference.tta's).

Batches arrive as raw uint8 tiles, {"image": (B,101,101) uint8, "mask": (B,101,101) uint8}; padding,
flipping and normalisation happen on device inside the step (SPEC 2.1), so the host only gathers rows.
"""
import functools
from typing import Any, Dict, Optional, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state
from jax.sharding import PartitionSpec as P

from salt_jax import losses, models, parallel, schedules
from salt_jax.data import augment


class TrainState(train_state.TrainState):
  """Parameters, optimiser state, BatchNorm running statistics and, when ema_decay > 0, an exponential
  moving average of both ({"params", "batch_stats"}; None when off)."""
  batch_stats: Any
  ema: Any = None
  ema_decay: float = flax.struct.field(pytree_node=False, default=0.0)


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array, *,
                       image_size: int, ema_decay: float = 0.0) -> TrainState:
  """The model's fresh variables (models.init_variables on an image_size x image_size input) and the
  optimiser's state.

  Jittable: `jax.jit(functools.partial(create_train_state, model, tx, image_size=config.input_size),
  compiler_options=models.init_compiler_options())(rng)` runs it as one quickly compiled program.
  """
  variables = models.init_variables(model, rng, size=image_size)
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  ema = {"params": params, "batch_stats": batch_stats} if ema_decay > 0 else None
  return TrainState.create(apply_fn=model.apply, params=params, tx=tx, batch_stats=batch_stats, ema=ema,
                           ema_decay=ema_decay)


def eval_variables(state: TrainState) -> Dict[str, Any]:
  """What validation, snapshots and predictions use: the moving average when on, else the weights."""
  if state.ema is not None:
    return state.ema
  return {"params": state.params, "batch_stats": state.batch_stats}


def _update_ema(state: TrainState) -> TrainState:
  """ema <- d*ema + (1-d)*new after the update of step t = 0, 1, ..., d = min(ema_decay, (1+t)/(10+t)) (early
  steps weigh more, so a short run's average is not stuck at the initialisation)."""
  t = state.step.astype(jnp.float32) - 1.0  # state.step already counts this update
  decay = jnp.minimum(state.ema_decay, (1.0 + t) / (10.0 + t))
  new = {"params": state.params, "batch_stats": state.batch_stats}
  return state.replace(ema=optax.incremental_update(new, state.ema, 1.0 - decay))


def train_step(state: TrainState, batch: Dict[str, jax.Array], rng: jax.Array, *, seg_loss: str,
               loss_weights: Dict[str, Any], canvas: int, loss_on_tile: bool = False,
               jitter: Optional[augment.Jitter] = None) -> Tuple[TrainState, Dict[str, jax.Array]]:
  """One optimiser step on a global batch. rng is the run's base key; the step's key is fold_in(rng, step).

  seg_loss: "bce_dice" (warm-up epochs) or "lovasz" (cycles), SPEC 4.5; loss_weights: losses.total_loss's
  keyword options (configlib.loss_weights). The model casts the input to its compute dtype; canvas is the
  padded input size. loss_on_tile: the segmentation losses see only the tile's own pixels, not its random
  padding (augment.tile_mask); jitter: the training jitter (None or off: the original's pad and flip). The
  empty/non-empty labels are the augmented masks' (a warp may move salt off the tile). Returns the new state
  and scalar metrics (loss, its terms, the learning rate used).
  """
  step_key = jax.random.fold_in(rng, state.step)
  aug_key, drop_key = jax.random.split(step_key)
  x, y, *valid = augment.train_augment(aug_key, batch["image"], batch["mask"], canvas=canvas, jitter=jitter,
                                       return_valid=loss_on_tile)
  valid = valid[0] if valid else None
  is_empty = (jnp.max(y, axis=(1, 2)) == 0).astype(jnp.int32)

  def loss_fn(params):
    (class_logits, no_empty_logits, final_logits), updates = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats}, x, train=True,
        mutable=["batch_stats"], rngs={"dropout": drop_key})
    loss, terms = losses.total_loss(class_logits, no_empty_logits, final_logits, y, is_empty,
                                    seg_loss=seg_loss, valid=valid, **loss_weights)
    return loss, (terms, updates["batch_stats"])

  (loss, (terms, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  if state.ema is not None:
    state = _update_ema(state)
  return state, {"loss": loss, **terms, "lr": schedules.learning_rate(state.opt_state)}


def train_steps(state: TrainState, data: Dict[str, jax.Array], rows: jax.Array, rng: jax.Array,
                active: Optional[jax.Array] = None, *, seg_loss: str, loss_weights: Dict[str, Any],
                canvas: int, batch_sharding=None, loss_on_tile: bool = False,
                jitter: Optional[augment.Jitter] = None) -> Tuple[TrainState, Dict[str, jax.Array]]:
  """Many train_steps in one call, on data that stays on the devices (a lax.scan over the steps).

  data: {"image", "mask"} (N,101,101) uint8, every training sample; rows: (S,B) int32, the samples of
  each step. Step s trains on data[rows[s]] exactly as train_step would on that batch (same key:
  fold_in(rng, step)). active: optional (S,) bool; a step with False leaves the state unchanged (a fold
  with fewer steps per epoch than the others it trains with). batch_sharding (optional; a sharding, or
  a PartitionSpec of the context mesh) shards each gathered batch over the devices; loss_on_tile and
  jitter: train_step's. Returns the state after S steps and the per-step metrics, each (S,).
  """
  def body(state, step_input):
    idx, on = step_input
    batch = {k: v[idx] for k, v in data.items()}
    if batch_sharding is not None:
      batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
    new, metrics = train_step(state, batch, rng, seg_loss=seg_loss, loss_weights=loss_weights, canvas=canvas,
                              loss_on_tile=loss_on_tile, jitter=jitter)
    if on is not None:
      new = jax.tree.map(lambda n, o: jnp.where(on, n, o), new, state)
    return new, metrics
  if rows.shape[0] == 1:  # no loop: XLA:CPU runs while-loop bodies ~10x slower than the same step alone
    state, metrics = body(state, (rows[0], None if active is None else active[0]))
    return state, jax.tree.map(lambda m: m[None], metrics)
  return jax.lax.scan(body, state, (rows, active))


def fold_train_steps(state: TrainState, data: Dict[str, jax.Array], rows: jax.Array, rng: jax.Array,
                     active: Optional[jax.Array] = None, *, fold_map: str, **kwargs
                     ) -> Tuple[TrainState, Dict[str, jax.Array]]:
  """train_steps for F folds trained together: state leaves and rows (F,S,B) (and active (F,S)) carry a
  leading fold axis; data and rng are shared. Fold f gets exactly what train_steps(state[f], data,
  rows[f], rng, active[f]) would give it. fold_map "vmap" batches the folds into one step; "loop" puts
  the folds' steps side by side in the program. Returns the new state and metrics (F,S).
  """
  fn = functools.partial(train_steps, **kwargs)
  if fold_map == "vmap":
    in_axes = (0, None, 0, None, None if active is None else 0)
    return jax.vmap(fn, in_axes=in_axes)(state, data, rows, rng, active)
  if fold_map != "loop":
    raise ValueError(f"fold_map must be 'vmap' or 'loop', got {fold_map!r}")
  outs = [fn(jax.tree.map(lambda x: x[f], state), data, rows[f], rng, None if active is None else active[f])
          for f in range(rows.shape[0])]
  return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)


def train_compiler_options(cpu_ynn_fusion: str = "") -> Optional[Dict[str, str]]:
  """XLA options of the train steps on CPU: which fusions XLA:CPU hands to YNNPACK.

  cpu_ynn_fusion: '' = XLA:CPU's default (jaxlib 0.10: YNNPACK for the convolutions, reductions and more);
  'none' = no YNNPACK, XLA's own (Eigen) kernels; else the comma list of fusion types that YNNPACK takes
  (configlib.YNN_FUSION_TYPES, e.g. 'dot,eltwise,reduce': the convolutions go back to Eigen). Other
  backends, and '': None (their defaults).
  """
  if not cpu_ynn_fusion or jax.default_backend() != "cpu":
    return None
  types = [] if cpu_ynn_fusion == "none" else cpu_ynn_fusion.split(",")
  return {"xla_cpu_experimental_ynn_fusion_type": ",".join(f"LIBRARY_FUSION_TYPE_{t.upper()}" for t in types)}


def compile_fold_train_steps(state, data, rows_spec, rng, active_spec=None, *, mesh, fold_map, seg_loss,
                              loss_weights, canvas: int, loss_on_tile: bool = False,
                              jitter: Optional[augment.Jitter] = None,
                              compiler_options: Optional[Dict[str, str]] = None):
  """AOT-compiles fold_train_steps for one loss variant and one number of steps (rows_spec (F,S,B) int32,
  active_spec (F,S) bool or None; loss_on_tile and jitter: train_step's).

  The stacked state, the rows and active are sharded along 'folds'; the data, the rng and the returned
  metrics are replicated; each fold's batch is sharded along 'data'. Over several fold groups the
  'folds' axis is mapped by hand (shard_map: each group runs the step of its own folds) and 'data' is
  left to the compiler: XLA's partitioner cannot split the grouped convolutions of a vmapped step along
  their groups. The state is donated; `compiler_options` go to XLA (train_compiler_options).
  """
  folds, repl = parallel.fold_sharded(mesh), parallel.replicated(mesh)
  fn = functools.partial(fold_train_steps, fold_map=fold_map, seg_loss=seg_loss, loss_weights=loss_weights,
                         canvas=canvas, batch_sharding=P("data"), loss_on_tile=loss_on_tile, jitter=jitter)
  if active_spec is None:
    fn = functools.partial(lambda f, state, data, rows, rng: f(state, data, rows, rng), fn)
  if mesh.shape["folds"] > 1:
    spec = folds.spec
    in_specs = (spec, P(), spec, P()) + (() if active_spec is None else (spec,))
    fn = jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=(spec, spec), axis_names={"folds"},
                       check_vma=False)
  args = (state, data, rows_spec, rng) + (() if active_spec is None else (active_spec,))
  fn = jax.jit(fn, in_shardings=(folds, repl, folds, repl) + (() if active_spec is None else (folds,)),
               out_shardings=(folds, repl), donate_argnums=(0,))
  with jax.set_mesh(mesh):  # the batch constraint P("data") refers to this mesh (inside shard_map: its view)
    return fn.lower(*args).compile(compiler_options)
