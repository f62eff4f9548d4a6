"""Flip-TTA inference (SPEC 6.3): the pure per-batch functions, and the batched, jitted, data-parallel
Predictor over arrays of 101x101 tiles that validation, predict and segment all run."""
from typing import Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.experimental import multihost_utils

from salt_jax import losses, metrics, parallel
from salt_jax.data import augment


def tta_outputs(apply_fn: Callable, variables, images: jax.Array, canvas: int) -> Tuple[jax.Array, jax.Array]:
  """Flip-TTA final logits on the 101x101 crop (SPEC 6.3) and the classifier's p(empty):
  (B,101,101) uint8 -> (B,101,101) float32, (B,) float32.

  The batch, centre-padded to (B,canvas,canvas) (the model's input size), and its left-right mirror go
  through one eval-mode forward pass; the mirrored half's logits are flipped back and the two are
  averaged (logits, not probabilities), then cropped; p(empty) is the mean of the two softmax
  probabilities of class 1 (empty, as trained: SPEC 4.4).
  """
  x = augment.eval_pad(images, canvas=canvas)
  both = jnp.concatenate([x, augment.hflip(x)], axis=0)
  class_logits, _, final_logits = apply_fn(variables, both, train=False)
  final_logits = final_logits[..., 0].astype(jnp.float32)
  b = images.shape[0]
  mean = 0.5 * (final_logits[:b] + augment.hflip(final_logits[b:]))
  p_empty = jax.nn.softmax(class_logits.astype(jnp.float32), axis=-1)[:, -1]
  return augment.crop(mean), 0.5 * (p_empty[:b] + p_empty[b:])


def tta_logits(apply_fn: Callable, variables, images: jax.Array, canvas: int) -> jax.Array:
  """The final logits of tta_outputs: (B,101,101) uint8 -> (B,101,101) float32."""
  return tta_outputs(apply_fn, variables, images, canvas)[0]


def eval_step(apply_fn: Callable, variables, batch: Dict[str, jax.Array], canvas: int):
  """Validation: TTA logits (B,101,101), the per-image Lovasz loss on the crop (B,) (SPEC 4.6) and the
  classifier's p(empty) (B,)."""
  logits, p_empty = tta_outputs(apply_fn, variables, batch["image"], canvas)
  loss = losses.lovasz_hinge_per_image(logits, batch["mask"].astype(jnp.float32))
  return logits, loss, p_empty


class Outputs(NamedTuple):
  logits: np.ndarray              # (N,101,101) float32 flip-TTA final logits
  losses: Optional[np.ndarray]    # (N,) per-image Lovasz loss against the given masks (None without masks)
  p_empty: np.ndarray             # (N,) the classifier's flip-TTA probability that the tile is empty


class Predictor:
  """Flip-TTA logits, p(empty) and, given masks, per-image Lovasz losses for whole arrays, sharded over
  every device, for a model that takes (B,canvas,canvas,3) inputs. Each of the two programs (with and
  without masks) compiles on first use."""

  def __init__(self, apply_fn, mesh, batch_size: int, canvas: int):
    parallel.check_batch_size(batch_size, mesh)
    self._batch_size = batch_size
    self._sharding = parallel.batch_sharded(mesh)
    shardings = dict(in_shardings=(parallel.replicated(mesh), self._sharding))
    self._with_loss = jax.jit(lambda v, b: eval_step(apply_fn, v, b, canvas),
                              out_shardings=(self._sharding,) * 3, **shardings)
    self._without_loss = jax.jit(lambda v, b: tta_outputs(apply_fn, v, b["image"], canvas),
                                 out_shardings=(self._sharding,) * 2, **shardings)

  def outputs(self, variables, images: np.ndarray, masks: Optional[np.ndarray] = None,
              desc: Optional[str] = None) -> Outputs:
    """(N,101,101) uint8 tiles -> flip-TTA logits (N,101,101) float32, the per-image losses against
    `masks` (N,) (None, and not computed, without masks) and p(empty) (N,).

    The last batch is padded by repeating its last row; padded rows are dropped from the result.
    """
    n, bs = len(images), self._batch_size
    parts = []
    for start in tqdm.tqdm(range(0, n, bs), desc=desc, disable=None if desc else True, leave=False,
                           unit="batch"):
      rows = np.arange(start, start + bs).clip(max=n - 1)[parallel.host_slice(bs)]
      batch = {"image": images[rows]} if masks is None else {"image": images[rows], "mask": masks[rows]}
      batch = parallel.to_global(batch, self._sharding)
      out = self._without_loss(variables, batch) if masks is None else self._with_loss(variables, batch)
      if jax.process_count() > 1:
        out = multihost_utils.process_allgather(out, tiled=True)
      parts.append([np.asarray(x) for x in out])
    columns = [np.concatenate(column)[:n] for column in zip(*parts)]
    if masks is None:
      return Outputs(columns[0], None, columns[1])
    return Outputs(*columns)

  def validate(self, variables, images: np.ndarray, masks: np.ndarray) -> Dict[str, float]:
    """Validation loss (mean per-image Lovasz on the crop), best mAP and its logit threshold (SPEC 6.2)."""
    out = self.outputs(variables, images, masks)
    best_map, best_thr = metrics.best_threshold(out.logits, masks)
    return {"val_loss": float(np.mean(out.losses)), "val_map": float(best_map),
            "val_threshold": float(best_thr)}
