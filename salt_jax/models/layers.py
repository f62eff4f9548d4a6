"""Primitives shared by encoders and decoders (NHWC throughout).

PyTorch conventions the port has to keep: explicit symmetric padding (Flax
'SAME' pads a stride-2 conv asymmetrically), BatchNorm eps 1e-5 and momentum
0.1 (Flax momentum 0.9), bilinear upsampling with align_corners=True.
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp
from jax.nn import initializers

Dtype = Any

# PyTorch 0.3 default for freshly created conv/linear layers: U(-1/sqrt(fan_in), +1/sqrt(fan_in)).
torch_default_init = initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def conv(features: int, kernel: int, stride: int = 1, *, bias: bool = True, groups: int = 1,
         padding: Optional[int] = None, dtype: Dtype = jnp.float32, name: Optional[str] = None) -> nn.Conv:
  """A PyTorch-style Conv2d: symmetric padding kernel // 2 unless given."""
  pad = kernel // 2 if padding is None else padding
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                 use_bias=bias, feature_group_count=groups, dtype=dtype,
                 kernel_init=torch_default_init, name=name)


def batch_norm(train: bool, *, dtype: Dtype = jnp.float32, name: Optional[str] = None) -> nn.BatchNorm:
  """BatchNorm2d with PyTorch's defaults; under `jit` over a sharded batch its statistics are global."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype, name=name)


class IBN(nn.Module):
  """IBN-a: InstanceNorm on the first floor(C/2) channels, BatchNorm on the rest.

  (B,H,W,C) -> (B,H,W,C). Instance statistics are always per sample (train and eval).
  """
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    half = x.shape[-1] // 2
    a = nn.InstanceNorm(epsilon=1e-5, dtype=self.dtype, name="IN")(x[..., :half])
    b = batch_norm(train, dtype=self.dtype, name="BN")(x[..., half:])
    return jnp.concatenate([a, b], axis=-1)


def _interp_matrix(n_in: int, n_out: int, align_corners: bool) -> jnp.ndarray:
  """(n_out, n_in) linear-interpolation weights along one axis."""
  o = jnp.arange(n_out, dtype=jnp.float32)
  if align_corners:
    src = o * ((n_in - 1) / (n_out - 1)) if n_out > 1 else jnp.zeros_like(o)
  else:
    src = jnp.clip((o + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
  lo = jnp.clip(jnp.floor(src).astype(jnp.int32), 0, n_in - 1)
  hi = jnp.minimum(lo + 1, n_in - 1)
  w_hi = src - lo
  rows = jnp.arange(n_out)
  m = jnp.zeros((n_out, n_in), jnp.float32)
  m = m.at[rows, lo].add(1.0 - w_hi)
  return m.at[rows, hi].add(w_hi)


def resize_bilinear(x: jnp.ndarray, size: Sequence[int], align_corners: bool = True) -> jnp.ndarray:
  """Bilinear resize of (B,H,W,C) to (B,size[0],size[1],C).

  align_corners=True maps output o to input o*(in-1)/(out-1), as torch <= 0.3.1 did; False is the
  modern half-pixel convention (PyTorch align_corners=False).
  """
  h, w = x.shape[1:3]
  my = _interp_matrix(h, size[0], align_corners).astype(x.dtype)
  mx = _interp_matrix(w, size[1], align_corners).astype(x.dtype)
  return jnp.einsum("oh,bhwc,pw->bopc", my, x, mx)
