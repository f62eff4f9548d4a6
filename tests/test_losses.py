"""Losses (SPEC 4) against plain NumPy formulas, the PyTorch reference, and the edge cases training hits."""
import functools
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from salt_jax import configlib, losses

WEIGHTS = configlib.loss_weights(configlib.section(configlib.base_config(), "loss"))  # the faithful ones (SPEC 4)
BCE_DICE = {k: WEIGHTS[k] for k in ("dice_weight", "bce_weight")}


def _weights_of(fn):
  return BCE_DICE if fn is losses.bce_dice else {}

TORCH_REFERENCE = pathlib.Path(__file__).resolve().parents[2] / "shared" / "bench" / "torch_reference.py"


def np_elu1(x):
  """ELU(x) + 1 and its derivative."""
  exp = np.exp(np.minimum(x, 0.0))
  return np.where(x > 0, x + 1.0, exp), np.where(x > 0, 1.0, exp)


def np_lovasz_image(z, y, negatives_first_at_ties=False):
  """SPEC 4.1 for one image with explicit loops, float64: (loss, d loss / d z), both from the formula.

  Errors are sorted descending, ties by pixel index (or, optionally, label-0 pixels before label-1 ones)."""
  z = np.asarray(z, np.float64).ravel()
  y = np.asarray(y, np.float64).ravel()
  s = 2.0 * y - 1.0
  e = 1.0 - z * s
  perm = np.lexsort((y, -e)) if negatives_first_at_ties else np.argsort(-e, kind="stable")
  g = y[perm]
  total = g.sum()
  delta = np.empty_like(g)
  cum_g = cum_not_g = 0.0
  prev_j = 0.0
  for i in range(g.size):
    cum_g += g[i]
    cum_not_g += 1.0 - g[i]
    j = 1.0 - (total - cum_g) / (total + cum_not_g)
    delta[i] = j - prev_j
    prev_j = j
  f, df = np_elu1(e[perm])
  loss = float(np.dot(f, delta))
  grad = np.zeros_like(z)
  grad[perm] = delta * df * (-s[perm])
  return loss, grad


def np_lovasz(z, y, weights=None):
  """Batch loss and gradient wrt z (B,...) from the per-image reference (weighted mean if weights)."""
  per = [np_lovasz_image(zi, yi) for zi, yi in zip(z, y)]
  w = np.ones(len(per)) if weights is None else np.asarray(weights, np.float64)
  if w.sum() == 0:
    return 0.0, np.zeros(np.shape(z))
  loss = sum(wi * l for wi, (l, _) in zip(w, per)) / w.sum()
  grad = np.stack([wi * gr.reshape(np.shape(z)[1:]) for wi, (_, gr) in zip(w, per)]) / w.sum()
  return loss, grad


def np_bce_dice(z, y, dice_weight=0.5, bce_weight=0.9):
  z = np.asarray(z, np.float64)
  y = np.asarray(y, np.float64)
  p = 1.0 / (1.0 + np.exp(-z))
  dice = 1.0 - 2.0 * np.sum(p * y) / (np.sum(p) + np.sum(y) + 1e-7)
  bce = np.mean(-(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)))
  return dice_weight * dice + bce_weight * bce


def np_ce(q, labels):
  q = np.asarray(q, np.float64)
  logp = q - np.log(np.exp(q).sum(-1, keepdims=True))
  return float(-np.mean(logp[np.arange(len(labels)), labels]))


def random_batch(seed, b=4, h=13, w=11, p_salt=0.4, n_empty=1):
  rng = np.random.default_rng(seed)
  z = rng.normal(0.0, 2.0, (b, h, w)).astype(np.float32)
  y = (rng.random((b, h, w)) < p_salt).astype(np.float32)
  y[:n_empty] = 0
  return z, y


@pytest.fixture(scope="module")
def real_masks(data_dir):
  """8 real 101x101 masks, half empty and half with salt, as float32 {0,1}."""
  import cv2
  import pandas as pd
  df = pd.read_csv(data_dir / "train.csv", dtype=str, keep_default_na=False)
  empty = df[df["rle_mask"] == ""]["id"].iloc[:3].tolist()
  salt = df[df["rle_mask"] != ""]["id"].iloc[:5].tolist()
  masks = [cv2.imread(str(data_dir / "train" / "masks" / f"{i}.png"), cv2.IMREAD_UNCHANGED) > 0
           for i in empty + salt]
  masks = np.stack([m if m.ndim == 2 else m[..., 0] for m in masks]).astype(np.float32)
  assert masks.shape == (8, 101, 101) and masks[:3].sum() == 0 and (masks[3:].sum((1, 2)) > 0).all()
  return masks


@pytest.fixture(scope="module")
def torch_ref():
  torch = pytest.importorskip("torch")
  if not TORCH_REFERENCE.exists():
    pytest.skip(f"{TORCH_REFERENCE} not found")
  spec = importlib.util.spec_from_file_location("salt_torch_reference", TORCH_REFERENCE)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return torch, module


def jax_value_and_grad(z, y, weights=None):
  fn = jax.jit(jax.value_and_grad(lambda z: losses.lovasz_hinge(z, jnp.asarray(y), weights)))
  loss, grad = fn(jnp.asarray(z))
  return float(loss), np.asarray(grad)


def test_lovasz_jaccard_formula():
  labels = np.array([1, 0, 1, 1, 0, 0, 1], np.float32)
  total = labels.sum()
  expected = 1.0 - (total - np.cumsum(labels)) / (total + np.cumsum(1 - labels))
  got = np.asarray(jax.jit(losses.lovasz_jaccard)(jnp.asarray(labels)))
  assert got.dtype == np.float32 and got.shape == (7,)
  np.testing.assert_allclose(got, expected, atol=1e-7)
  assert got[-1] == pytest.approx(1.0, abs=1e-6)  # the gradient J_k - J_(k-1) sums to 1
  assert (np.diff(got) >= 0).all()
  np.testing.assert_array_equal(np.asarray(losses.lovasz_jaccard(jnp.zeros(5))), np.ones(5))  # g = (1, 0, ...)
  np.testing.assert_allclose(np.asarray(losses.lovasz_jaccard(jnp.asarray(np.stack([labels, labels[::-1]])))),
                             np.stack([expected, np.asarray(losses.lovasz_jaccard(jnp.asarray(labels[::-1])))]),
                             atol=1e-7)


def test_reference_gradient_is_the_finite_difference():
  """The analytic NumPy gradient used below is the derivative of the NumPy loss (away from ties)."""
  z, y = random_batch(0, b=1, h=4, w=5)
  z64 = z[0].astype(np.float64)
  _, grad = np_lovasz_image(z64, y[0])
  eps = 1e-6
  fd = np.zeros(z64.size)
  for i in range(z64.size):
    dz = np.zeros(z64.size)
    dz[i] = eps
    plus, minus = np_lovasz_image(z64.ravel() + dz, y[0])[0], np_lovasz_image(z64.ravel() - dz, y[0])[0]
    fd[i] = (plus - minus) / (2 * eps)
  np.testing.assert_allclose(grad, fd, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lovasz_matches_numpy_random(seed):
  z, y = random_batch(seed, b=5, n_empty=1 + seed % 2)
  loss, grad = jax_value_and_grad(z, y)
  ref_loss, ref_grad = np_lovasz(z, y)
  assert loss == pytest.approx(ref_loss, rel=1e-5)
  np.testing.assert_allclose(grad, ref_grad, atol=1e-6)
  per = np.asarray(losses.lovasz_hinge_per_image(jnp.asarray(z)[..., None], jnp.asarray(y)[..., None]))
  assert per.shape == (5,)
  np.testing.assert_allclose(per, [np_lovasz_image(a, b)[0] for a, b in zip(z, y)], rtol=1e-5)


def test_lovasz_matches_numpy_real_masks(real_masks):
  rng = np.random.default_rng(3)
  z = (rng.normal(0, 1.5, real_masks.shape) + 2.0 * (real_masks - 0.5)).astype(np.float32)
  loss, grad = jax_value_and_grad(z, real_masks)
  ref_loss, ref_grad = np_lovasz(z, real_masks)
  assert loss == pytest.approx(ref_loss, rel=1e-5)
  np.testing.assert_allclose(grad, ref_grad, atol=1e-6)
  w = np.array([0, 0, 0, 1, 1, 0, 1, 1], np.float32)
  loss_w, grad_w = jax_value_and_grad(z, real_masks, jnp.asarray(w))
  ref_loss_w, ref_grad_w = np_lovasz(z, real_masks, w)
  assert loss_w == pytest.approx(ref_loss_w, rel=1e-5)
  np.testing.assert_allclose(grad_w, ref_grad_w, atol=1e-6)
  sub_loss, _ = jax_value_and_grad(z[w > 0], real_masks[w > 0])
  assert loss_w == pytest.approx(sub_loss, rel=1e-6)


@pytest.mark.torch
def test_torch_reference_semantics(torch_ref):
  """The bench's lovasz_hinge is per image, ELU+1 on the descending-sorted errors, mean over images."""
  torch, ref = torch_ref
  doc = ref.lovasz_hinge.__doc__.lower()
  assert "per-image" in doc and "elu+1" in doc and "mean over images" in doc
  z, y = random_batch(4, b=3)
  got = float(ref.lovasz_hinge(torch.from_numpy(z), torch.from_numpy(y)))
  assert got == pytest.approx(np.mean([np_lovasz_image(a, b)[0] for a, b in zip(z, y)]), rel=1e-5)


@pytest.mark.torch
@pytest.mark.parametrize("which", ["random", "real"])
def test_lovasz_matches_torch_reference(torch_ref, which, request):
  torch, ref = torch_ref
  if which == "real":
    y = request.getfixturevalue("real_masks")
    z = np.random.default_rng(5).normal(0, 2.0, y.shape).astype(np.float32)
  else:
    z, y = random_batch(6, b=6, h=32, w=32, n_empty=2)
  zt = torch.from_numpy(z.copy()).requires_grad_(True)
  loss_t = ref.lovasz_hinge(zt, torch.from_numpy(y))
  loss_t.backward()
  loss, grad = jax_value_and_grad(z, y)
  assert loss == pytest.approx(float(loss_t.detach()), rel=1e-5)
  np.testing.assert_allclose(grad, zt.grad.numpy(), atol=1e-6)


def test_lovasz_empty_mask_is_elu_of_max_logit():
  z, _ = random_batch(7, b=3)
  y = np.zeros_like(z)
  per = np.asarray(jax.jit(losses.lovasz_hinge_per_image)(jnp.asarray(z), jnp.asarray(y)))
  m = z.reshape(3, -1).max(1).astype(np.float64)
  np.testing.assert_allclose(per, np_elu1(1.0 + m)[0], rtol=1e-6)
  grad = np.asarray(jax.jit(jax.grad(lambda z: losses.lovasz_hinge(z, jnp.asarray(y))))(jnp.asarray(z)))
  assert (np.count_nonzero(grad.reshape(3, -1), axis=1) == 1).all()  # only the most positive logit


def test_all_empty_batch_weights_give_zero_and_finite_grads():
  z, _ = random_batch(8, b=4)
  y = jnp.zeros(z.shape)
  w = jnp.zeros(4)
  for fn in (losses.lovasz_hinge, losses.bce_dice):
    value, grad = jax.jit(jax.value_and_grad(lambda z: fn(z, y, w, **_weights_of(fn))))(jnp.asarray(z))
    assert float(value) == 0.0
    assert np.isfinite(np.asarray(grad)).all() and not np.asarray(grad).any()


@pytest.mark.parametrize("dice_weight,bce_weight", [(0.5, 0.9), (0.2, 0.9)])
def test_bce_dice_matches_numpy(dice_weight, bce_weight):
  z, y = random_batch(9, b=5, n_empty=2)
  got = float(losses.bce_dice(jnp.asarray(z), jnp.asarray(y), dice_weight=dice_weight, bce_weight=bce_weight))
  assert got == pytest.approx(np_bce_dice(z, y, dice_weight, bce_weight), rel=1e-5)
  w = np.array([0, 1, 0, 1, 1], np.float32)
  got_w = float(jax.jit(functools.partial(losses.bce_dice, **BCE_DICE))(jnp.asarray(z)[..., None],
                                                                         jnp.asarray(y)[..., None], jnp.asarray(w)))
  assert got_w == pytest.approx(np_bce_dice(z[w > 0], y[w > 0]), rel=1e-5)
  big = np.array([[[80.0, -80.0]]], np.float32)  # saturated logits: stable BCE, no inf/NaN
  assert np.isfinite(float(losses.bce_dice(jnp.asarray(big), jnp.asarray([[[0.0, 1.0]]]), **BCE_DICE)))


def test_class_cross_entropy():
  q = np.random.default_rng(10).normal(size=(6, 2)).astype(np.float32)
  e = np.array([1, 0, 0, 1, 1, 0])
  got = float(losses.class_cross_entropy(jnp.asarray(q), jnp.asarray(e)))
  assert got == pytest.approx(np_ce(q, e), rel=1e-6)


@pytest.mark.parametrize("seg_loss", ["lovasz", "bce_dice"])
def test_total_loss_terms(seg_loss):
  rng = np.random.default_rng(11)
  _, y = random_batch(11, b=6, n_empty=2)
  is_empty = (y.reshape(6, -1).max(1) == 0).astype(np.int32)
  q = rng.normal(size=(6, 2)).astype(np.float32)
  zn = rng.normal(0, 2, y.shape + (1,)).astype(np.float32)
  zf = rng.normal(0, 2, y.shape + (1,)).astype(np.float32)
  fn = jax.jit(functools.partial(losses.total_loss, **WEIGHTS), static_argnames="seg_loss")
  loss, terms = fn(jnp.asarray(q), jnp.asarray(zn), jnp.asarray(zf), jnp.asarray(y), jnp.asarray(is_empty),
                   seg_loss=seg_loss)
  keep = is_empty == 0
  if seg_loss == "lovasz":
    final, no_empty = np_lovasz(zf[..., 0], y)[0], np_lovasz(zn[keep][..., 0], y[keep])[0]
  else:
    final, no_empty = np_bce_dice(zf[..., 0], y), np_bce_dice(zn[keep][..., 0], y[keep])
  cls = np_ce(q, is_empty)
  assert set(terms) == {"final_loss", "class_loss", "no_empty_loss"}
  assert float(terms["final_loss"]) == pytest.approx(final, rel=1e-5)
  assert float(terms["no_empty_loss"]) == pytest.approx(no_empty, rel=1e-5)
  assert float(terms["class_loss"]) == pytest.approx(cls, rel=1e-5)
  assert float(loss) == pytest.approx(final + 0.05 * cls + 0.5 * no_empty, rel=1e-5)
  with pytest.raises(ValueError):
    losses.total_loss(q, zn, zf, y, is_empty, seg_loss="dice", **WEIGHTS)


@pytest.mark.parametrize("seg_loss", ["lovasz", "bce_dice"])
def test_total_loss_all_empty_batch(seg_loss):
  rng = np.random.default_rng(12)
  y = jnp.zeros((4, 16, 16))
  is_empty = jnp.ones(4, jnp.int32)
  q = jnp.asarray(rng.normal(size=(4, 2)), jnp.float32)
  zn = jnp.asarray(rng.normal(size=(4, 16, 16, 1)), jnp.float32)
  zf = jnp.asarray(rng.normal(size=(4, 16, 16, 1)), jnp.float32)

  def f(args):
    return losses.total_loss(*args, y, is_empty, seg_loss=seg_loss, **WEIGHTS)

  (loss, terms), grads = jax.jit(jax.value_and_grad(f, has_aux=True))((q, zn, zf))
  assert float(terms["no_empty_loss"]) == 0.0 and np.isfinite(float(loss))
  expected = float(terms["final_loss"]) + 0.05 * float(terms["class_loss"])
  assert float(loss) == pytest.approx(expected, rel=1e-6)
  assert all(np.isfinite(np.asarray(g)).all() for g in grads)
  assert not np.asarray(grads[1]).any()


@pytest.mark.accelerator
def test_bfloat16_logits_give_float32_loss():
  z, y = random_batch(13, b=3, h=16, w=16)
  zb = jnp.asarray(z, jnp.bfloat16)
  q = jnp.zeros((3, 2), jnp.bfloat16)
  is_empty = jnp.asarray((y.reshape(3, -1).max(1) == 0).astype(np.int32))
  loss = jax.jit(losses.lovasz_hinge)(zb, jnp.asarray(y))
  assert loss.dtype == jnp.float32
  assert float(loss) == pytest.approx(np_lovasz(np.asarray(zb.astype(jnp.float32)), y)[0], rel=1e-5)
  for seg_loss in ("lovasz", "bce_dice"):
    total, terms = jax.jit(functools.partial(losses.total_loss, **WEIGHTS), static_argnames="seg_loss")(
        q, zb, zb, jnp.asarray(y), is_empty, seg_loss=seg_loss)
    assert total.dtype == jnp.float32 and all(v.dtype == jnp.float32 for v in terms.values())
  grad = jax.jit(jax.grad(lambda z: losses.lovasz_hinge(z, jnp.asarray(y))))(zb)
  assert grad.dtype == jnp.bfloat16 and np.isfinite(np.asarray(grad, np.float32)).all()


def test_lovasz_with_tied_errors_is_exact_and_averages_the_gradient():
  """bfloat16 logits tie often. The loss must not depend on how ties are ordered; pixels of equal error
  and label get the mean gradient of their tie group (the mean over every order of the group), and equal
  errors of different labels are ordered label 0 first (any order is a valid subgradient)."""
  rng = np.random.default_rng(11)
  y = (rng.random((3, 17, 17)) < 0.4).astype(np.float32)
  z = rng.choice(np.float32([-1.5, -0.25, 0.0, 0.25, 2.0]), size=y.shape).astype(np.float32)
  loss, grad = jax_value_and_grad(z, y)
  assert loss == pytest.approx(np_lovasz(z, y)[0], rel=1e-5)
  for b in range(3):
    ref_loss, ref_grad = np_lovasz_image(z[b], y[b], negatives_first_at_ties=True)
    ref_grad = ref_grad.reshape(y[b].shape) / len(y)
    e = 1.0 - z[b] * (2.0 * y[b] - 1.0)
    for value in np.unique(e):
      for label in (0, 1):
        group = (e == value) & (y[b] == label)
        if group.any():
          np.testing.assert_allclose(grad[b][group], ref_grad[group].mean(), atol=1e-7)


def test_symmetric_lovasz_is_the_mean_of_the_hinge_and_its_flip():
  """lovasz_symmetric: 0.5 * (L(z, y) + L(-z, 1 - y)) per image, loss and gradient, against the NumPy
  reference of each half (d/dz of the flipped half is minus its d/d(-z)); an empty image's flip is full."""
  z, y = random_batch(21, b=5, n_empty=2)
  fn = jax.jit(jax.value_and_grad(lambda z: losses.lovasz_hinge(z, jnp.asarray(y), symmetric=True)))
  loss, grad = fn(jnp.asarray(z))
  plain_loss, plain_grad = np_lovasz(z, y)
  flip_loss, flip_grad = np_lovasz(-z, 1.0 - y)
  assert float(loss) == pytest.approx(0.5 * (plain_loss + flip_loss), rel=1e-5)
  np.testing.assert_allclose(np.asarray(grad), 0.5 * (plain_grad - flip_grad), atol=1e-6)
  per = np.asarray(losses.symmetric_lovasz_hinge_per_image(jnp.asarray(z), jnp.asarray(y)))
  want = [0.5 * (np_lovasz_image(a, b)[0] + np_lovasz_image(-a, 1.0 - b)[0]) for a, b in zip(z, y)]
  np.testing.assert_allclose(per, want, rtol=1e-5)
  assert not np.allclose(per, [np_lovasz_image(a, b)[0] for a, b in zip(z, y)], rtol=1e-3)


def test_symmetric_lovasz_on_a_known_image():
  """A 1x3 image by hand: z = (2, -1, 0), y = (1, 0, 1): errors e = 1 - z*(2y-1) = (-1, 0, 1).
  Salt: sorted e (1, 0, -1) with labels (1, 0, 1): J = (1/2, 2/3, 1) -> g = (1/2, 1/6, 1/3);
  background (-z, 1 - y: the same errors): labels (0, 1, 0): J = (1/2, 1, 1) -> g = (1/2, 1/2, 0).
  elu(e) + 1 = (2, 1, e^-1) in that order."""
  z = jnp.asarray([[[2.0, -1.0, 0.0]]])
  y = jnp.asarray([[[1.0, 0.0, 1.0]]])
  f = np.array([2.0, 1.0, np.exp(-1.0)])
  salt, background = f @ [1 / 2, 1 / 6, 1 / 3], f @ [1 / 2, 1 / 2, 0]
  assert float(losses.lovasz_hinge(z, y)) == pytest.approx(salt, rel=1e-6)
  assert float(losses.lovasz_hinge(z, y, symmetric=True)) == pytest.approx(0.5 * (salt + background), rel=1e-6)


def _padded(rng, z, y, canvas):
  """z, y (B,h,w) placed at random offsets on (B,canvas,canvas) arrays of other values; the valid mask."""
  b, h, w = z.shape
  zc = rng.normal(0.0, 3.0, (b, canvas, canvas)).astype(np.float32)
  yc = (rng.random((b, canvas, canvas)) < 0.5).astype(np.float32)
  valid = np.zeros((b, canvas, canvas), np.float32)
  for i in range(b):
    t, l = rng.integers(0, canvas - h + 1), rng.integers(0, canvas - w + 1)
    zc[i, t:t + h, l:l + w], yc[i, t:t + h, l:l + w], valid[i, t:t + h, l:l + w] = z[i], y[i], 1.0
  return zc, yc, valid


@pytest.mark.parametrize("seg_loss,symmetric", [("lovasz", False), ("lovasz", True), ("bce_dice", False),
                                                ("blend", True)])
def test_loss_on_tile_is_the_loss_of_the_tile_and_the_padding_gets_no_gradient(seg_loss, symmetric):
  """loss_on_tile: the total loss on a canvas with a valid mask equals the loss of the tiles alone (every
  segmentation term, both heads), and its gradient is exactly 0 on every padded pixel, nonzero inside."""
  rng = np.random.default_rng(22)
  z, y = random_batch(22, b=6, h=13, w=11, n_empty=2)
  zn = rng.normal(0.0, 2.0, z.shape).astype(np.float32)
  zc, yc, valid = _padded(rng, z, y, 17)
  znc = _padded(np.random.default_rng(23), zn, y, 17)[0]
  znc[valid > 0] = zn.ravel()  # the same tiles at the same places (row-major order of each tile)
  is_empty = jnp.asarray((y.reshape(6, -1).max(1) == 0).astype(np.int32))
  q = jnp.asarray(rng.normal(size=(6, 2)), jnp.float32)
  opts = dict(WEIGHTS, lovasz_symmetric=symmetric)
  on_tile = lambda a, b: losses.total_loss(q, a, b, jnp.asarray(yc), is_empty, seg_loss, jnp.asarray(valid), **opts)
  (loss, terms), (g_no_empty, g_final) = jax.jit(jax.value_and_grad(on_tile, argnums=(0, 1), has_aux=True))(
      jnp.asarray(znc), jnp.asarray(zc))
  want, want_terms = losses.total_loss(q, jnp.asarray(zn), jnp.asarray(z), jnp.asarray(y), is_empty, seg_loss, **opts)
  assert float(loss) == pytest.approx(float(want), rel=1e-5)
  for k in want_terms:
    assert float(terms[k]) == pytest.approx(float(want_terms[k]), rel=1e-5, abs=1e-7)
  for g, weighted in ((np.asarray(g_final), np.ones(6, bool)), (np.asarray(g_no_empty), np.asarray(is_empty) == 0)):
    assert not g[valid == 0].any()
    inside = np.count_nonzero(g * valid, axis=(1, 2))
    assert (inside[weighted] > 0).all() and not inside[~weighted].any()
    if seg_loss == "bce_dice":
      assert (inside[weighted] == 13 * 11).all()
  plain = losses.total_loss(q, jnp.asarray(znc), jnp.asarray(zc), jnp.asarray(yc), is_empty, seg_loss, **opts)[0]
  assert abs(float(plain) - float(loss)) > 1e-3  # the padding counts without the mask


@pytest.mark.parametrize("seg_loss", ["lovasz", "bce_dice"])
def test_the_new_loss_keys_off_are_the_plain_loss(seg_loss):
  """lovasz_symmetric False and no valid mask (loss_on_tile False) compute the original loss: the NumPy
  reference, and what an all-ones mask gives (the masked code reduces to the same sums)."""
  z, y = random_batch(24, b=4, n_empty=1)
  is_empty = jnp.asarray((y.reshape(4, -1).max(1) == 0).astype(np.int32))
  q = jnp.zeros((4, 2), jnp.float32)
  fn = jax.jit(functools.partial(losses.total_loss, **WEIGHTS), static_argnames="seg_loss")
  args = (q, jnp.asarray(z), jnp.asarray(z), jnp.asarray(y), is_empty)
  assert WEIGHTS["lovasz_symmetric"] is False and "loss_on_tile" not in WEIGHTS
  loss = float(fn(*args, seg_loss=seg_loss)[0])
  keep = np.asarray(is_empty) == 0
  ref = np_lovasz if seg_loss == "lovasz" else lambda a, b: (np_bce_dice(a, b),)
  want = ref(z, y)[0] + 0.05 * np_ce(np.zeros((4, 2)), np.asarray(is_empty)) + 0.5 * ref(z[keep], y[keep])[0]
  assert loss == pytest.approx(want, rel=1e-5)
  assert loss == pytest.approx(float(fn(*args, seg_loss=seg_loss, valid=jnp.ones(z.shape))[0]), rel=1e-6)
