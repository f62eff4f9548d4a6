"""Flip-TTA inference and the predictor's last-batch padding against hand computations (SPEC 6.3)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from salt_jax import losses, metrics, parallel
from salt_jax.inference import tta


def _hand_input(images: np.ndarray) -> np.ndarray:
  """uint8 (B,101,101) -> (B,128,128,3) float32: edge pad 13 before / 14 after, (x - 127.5) / 127.5."""
  x = (images.astype(np.float32) - 127.5) / 127.5
  x = np.pad(x, ((0, 0), (13, 14), (13, 14)), mode="edge")
  return np.repeat(x[..., None], 3, axis=-1)


def _position_model(seed: int = 0):
  """A deterministic apply_fn that is not mirror-symmetric: final logits = x[..., 0] * W + B per pixel
  (W, B (128,128) random), plus a per-image term (mean of column 0 of the canvas) so images stay apart.
  Returns (apply_fn, variables, numpy forward (B,128,128,3) -> (B,128,128)); apply_fn.calls lists the
  (input shape, train) of every trace."""
  rng = np.random.default_rng(seed)
  w, b = rng.normal(size=(2, 128, 128)).astype(np.float32)
  calls = []

  def apply_fn(variables, x, train):
    calls.append((x.shape, train))
    final = x[..., 0] * variables["w"] + variables["b"] + jnp.mean(x[:, :, 0, 0], axis=1)[:, None, None]
    zeros = jnp.zeros((x.shape[0], 1), x.dtype)
    return zeros, zeros, final[..., None]

  def forward(x):
    return x[..., 0] * w + b + x[:, :, 0, 0].mean(axis=1)[:, None, None]

  apply_fn.calls = calls
  return apply_fn, {"w": jnp.asarray(w), "b": jnp.asarray(b)}, forward


def _hand_tta(forward, images: np.ndarray) -> np.ndarray:
  """Pad, forward on x and on its left-right mirror, mirror the second back, average logits, crop."""
  x = _hand_input(images)
  plain = forward(x)
  mirrored = forward(x[:, :, ::-1])[:, :, ::-1]
  return (0.5 * (plain + mirrored))[:, 13:114, 13:114]


def _tiles(n: int, seed: int = 1):
  """n random uint8 tiles (n,101,101) and masks of rising salt fraction (the first empty)."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, 101, 101), dtype=np.uint8)
  masks = (rng.random((n, 101, 101)) < np.linspace(0, 0.9, n)[:, None, None]).astype(np.uint8)
  return images, masks


def test_tta_logits_equal_hand_computation():
  apply_fn, variables, forward = _position_model()
  images, masks = _tiles(3)
  got = np.asarray(tta.tta_logits(apply_fn, variables, jnp.asarray(images), 128))
  want = _hand_tta(forward, images)
  assert got.shape == (3, 101, 101) and got.dtype == np.float32
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)
  # Not the un-flipped forward alone: the model is not mirror-symmetric.
  assert np.abs(forward(_hand_input(images))[:, 13:114, 13:114] - want).max() > 0.1
  assert apply_fn.calls == [((6, 128, 128, 3), False)]  # one eval-mode pass on the batch and its mirror
  batch = {"image": jnp.asarray(images), "mask": jnp.asarray(masks)}
  logits, loss, _ = tta.eval_step(apply_fn, variables, batch, 128)
  np.testing.assert_allclose(np.asarray(logits), want, rtol=1e-6, atol=1e-5)
  np.testing.assert_allclose(np.asarray(loss), np.asarray(losses.lovasz_hinge_per_image(
      jnp.asarray(want), jnp.asarray(masks, jnp.float32))), rtol=1e-5, atol=1e-6)


class _ConvNet(nn.Module):
  """A Flax model with the three-head interface: one 3x3 conv (zero 'SAME' padding) as final logits."""

  @nn.compact
  def __call__(self, x, train: bool):
    final = nn.Conv(1, (3, 3), padding="SAME", name="conv")(x)
    return final[:, :1, 0], final[:, :1, 0], final


@pytest.mark.accelerator
def test_tta_logits_of_a_flax_model_equal_hand_computation(highest_precision):
  model = _ConvNet()
  images, _ = _tiles(2, seed=2)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 128, 128, 3)), train=False)
  kernel = np.asarray(variables["params"]["conv"]["kernel"])[..., 0]  # (3,3,3)
  bias = float(variables["params"]["conv"]["bias"][0])

  def forward(x):
    """3x3 cross-correlation with zero padding, summed over channels: (B,128,128,3) -> (B,128,128)."""
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return bias + sum(np.einsum("bhwc,c->bhw", xp[:, i:i + 128, j:j + 128], kernel[i, j])
                      for i in range(3) for j in range(3))

  want = _hand_tta(forward, images)
  got = np.asarray(tta.tta_logits(model.apply, variables, jnp.asarray(images), 128))
  assert np.abs(forward(_hand_input(images))[:, 13:114, 13:114] - want).max() > 1e-2  # not mirror-symmetric
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n,batch", [(11, 4), (5, 8), (8, 8)])
def test_predictor_pads_the_last_batch_without_leaking_rows(n, batch):
  """A set size that the batch does not divide: every tile gets its own TTA logits and loss, padded rows
  are dropped (n rows out), and validation statistics are over the n real tiles only. Without masks the
  same logits and p(empty) come back, and no loss."""
  apply_fn, variables, forward = _position_model(seed=3)
  images, masks = _tiles(n, seed=4)
  predictor = tta.Predictor(apply_fn, parallel.make_mesh(), batch, 128)
  logits, per_image, p_empty = predictor.outputs(variables, images, masks)
  want = _hand_tta(forward, images)
  want_losses = np.asarray(losses.lovasz_hinge_per_image(jnp.asarray(want), jnp.asarray(masks, jnp.float32)))
  assert logits.shape == (n, 101, 101) and per_image.shape == (n,)
  np.testing.assert_allclose(logits, want, rtol=1e-6, atol=1e-5)
  np.testing.assert_allclose(per_image, want_losses, rtol=1e-5, atol=1e-6)
  assert len(set(np.round(want_losses, 4))) == n  # distinct per tile: a shifted or repeated row would show
  assert {shape for shape, _ in apply_fn.calls} == {(2 * batch, 128, 128, 3)}
  no_masks = predictor.outputs(variables, images)  # test tiles: no loss computed
  assert no_masks.losses is None
  np.testing.assert_allclose(no_masks.logits, logits, rtol=1e-6, atol=1e-5)  # two programs: any backend
  np.testing.assert_allclose(no_masks.p_empty, p_empty, rtol=1e-6, atol=1e-6)
  result = predictor.validate(variables, images, masks)
  assert result["val_loss"] == pytest.approx(float(np.mean(want_losses)), rel=1e-5)
  best_map, best_thr = metrics.best_threshold(want, masks)
  assert result["val_map"] == pytest.approx(best_map) and result["val_threshold"] == pytest.approx(best_thr)
