"""Bilinear resizing against PyTorch's F.interpolate on random maps (the weight-import convention)."""
import jax.numpy as jnp
import numpy as np
import pytest

from salt_jax.models import layers

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

# (input H, W) -> (output H, W): the decoders' x2 upsampling, the hypercolumn's x2/x4/x8/x16 (SPEC 3.4),
# non-square and non-integer ratios, downsampling, and a one-pixel input.
SIZES = [((8, 8), (16, 16)), ((64, 64), (128, 128)), ((32, 32), (128, 128)), ((16, 16), (128, 128)),
         ((8, 8), (128, 128)), ((4, 4), (128, 128)), ((5, 7), (13, 10)), ((13, 29), (101, 47)),
         ((101, 101), (128, 128)), ((128, 128), (101, 101)), ((1, 1), (3, 5))]


def _torch_resize(x: np.ndarray, size, align_corners: bool) -> np.ndarray:
  t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
  out = torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=align_corners)
  return out.numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("size_in,size_out", SIZES)
def test_resize_bilinear_matches_torch_interpolate(size_in, size_out, align_corners, highest_precision):
  x = np.random.default_rng(sum(size_in) + sum(size_out)).normal(size=(2, *size_in, 3)).astype(np.float32)
  got = np.asarray(layers.resize_bilinear(jnp.asarray(x), size_out, align_corners))
  want = _torch_resize(x, size_out, align_corners)
  assert got.shape == want.shape == (2, *size_out, 3)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("align_corners", [True, False])
def test_resize_to_twice_the_size_matches_torch_scale_factor_2(align_corners, highest_precision):
  """The decoders' x2 upsampling (resize_bilinear to 2H x 2W) is the original's scale_factor=2 upsample."""
  x = np.random.default_rng(0).normal(size=(1, 6, 9, 4)).astype(np.float32)
  t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
  want = torch.nn.functional.interpolate(t, scale_factor=2, mode="bilinear",
                                         align_corners=align_corners).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(np.asarray(layers.resize_bilinear(jnp.asarray(x), (12, 18), align_corners)), want,
                             rtol=1e-5, atol=1e-5)


def test_align_corners_conventions_differ():
  """The two conventions give different maps (so the comparisons above test the switch)."""
  x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 8, 8, 1)).astype(np.float32))
  a = layers.resize_bilinear(x, (16, 16), True)
  b = layers.resize_bilinear(x, (16, 16), False)
  assert float(jnp.abs(a - b).max()) > 0.1
