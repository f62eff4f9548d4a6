"""Residual blocks of the encoders (NHWC), named after their PyTorch counterparts.

Flax submodule names equal the torch attribute names with `.` before an index replaced by `_`
(`layer1.0.downsample.1` -> `layer1_0/downsample_1`), so weight import is mechanical (see convert.py).
Both blocks take `(planes, stride, downsample_kernel, ibn)` from `ResNet` and add a projection shortcut
(`downsample_0` conv of that kernel, padding k//2, stride + `downsample_1` BN) wherever the residual
branch changes the shape.
"""
from functools import partial
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp

from salt_jax.models.layers import IBN, batch_norm, conv

Dtype = Any


class SqueezeExcite(nn.Module):
  """GAP -> 1x1 conv C->C//16 (bias) -> ReLU -> 1x1 conv ->C (bias) -> sigmoid; (B,H,W,C) -> x * gate."""
  reduction: int = 16
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    s = jnp.mean(x, axis=(1, 2), keepdims=True)
    s = nn.relu(conv(c // self.reduction, 1, dtype=self.dtype, name="fc1")(s))
    s = nn.sigmoid(conv(c, 1, dtype=self.dtype, name="fc2")(s))
    return x * s


def _shortcut(x, y, stride: int, kernel: int, train: bool, dtype: Dtype):
  """x itself when it has y's shape, else the projection downsample_0 (conv) -> downsample_1 (BN)."""
  if x.shape == y.shape:
    return x
  x = conv(y.shape[-1], kernel, stride, bias=False, dtype=dtype, name="downsample_0")(x)
  return batch_norm(train, dtype=dtype, name="downsample_1")(x)


def _norm1(x, ibn: bool, train: bool, dtype: Dtype):
  """The first norm `bn1`: BatchNorm, or IBN-a (IN on the first half of the channels)."""
  if ibn:
    return IBN(dtype=dtype, name="bn1")(x, train)
  return batch_norm(train, dtype=dtype, name="bn1")(x)


class BasicBlock(nn.Module):
  """torchvision/timm ResNet BasicBlock: 3x3 (stride) -> bn1 -> ReLU -> 3x3 -> BN, + shortcut, ReLU.

  (B,H,W,Cin) -> (B,H/stride,W/stride,planes).
  """
  planes: int
  stride: int = 1
  downsample_kernel: int = 1
  ibn: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    cv = partial(conv, bias=False, dtype=self.dtype)
    y = nn.relu(_norm1(cv(self.planes, 3, self.stride, name="conv1")(x), self.ibn, train, self.dtype))
    y = batch_norm(train, dtype=self.dtype, name="bn2")(cv(self.planes, 3, name="conv2")(y))
    return nn.relu(y + _shortcut(x, y, self.stride, self.downsample_kernel, train, self.dtype))


class Bottleneck(nn.Module):
  """1x1 (width1) -> bn1 -> ReLU -> 3x3 grouped (width2) -> BN -> ReLU -> 1x1 (4 planes) -> BN [-> SE],
  + shortcut, ReLU. (B,H,W,Cin) -> (B,H/stride,W/stride,4*planes).

  Covers every bottleneck variant used here: (width1, width2) = `widths` x planes, (2, 2) for ResNeXt
  32x4d (4 channels x 32 groups per 64 planes), (1, 1) for SE-ResNet, (2, 4) for SENet-154. The stride
  sits on the 3x3 (timm/ResNeXt/SENet-154) or on conv1 (`stride_on_1x1`, legacy SE-ResNet); `se_name`
  names the SE submodule ("se" in timm, "se_module" in legacy SENet); `ibn` makes bn1 IBN-a.
  """
  planes: int
  stride: int = 1
  downsample_kernel: int = 1
  ibn: bool = False
  widths: Tuple[int, int] = (1, 1)
  groups: int = 1
  stride_on_1x1: bool = False
  se_name: Optional[str] = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    bn = partial(batch_norm, train, dtype=self.dtype)
    cv = partial(conv, bias=False, dtype=self.dtype)
    w1, w2 = (w * self.planes for w in self.widths)
    s1, s3 = (self.stride, 1) if self.stride_on_1x1 else (1, self.stride)
    y = nn.relu(_norm1(cv(w1, 1, s1, name="conv1")(x), self.ibn, train, self.dtype))
    y = nn.relu(bn(name="bn2")(cv(w2, 3, s3, groups=self.groups, name="conv2")(y)))
    y = bn(name="bn3")(cv(4 * self.planes, 1, name="conv3")(y))
    if self.se_name:
      y = SqueezeExcite(dtype=self.dtype, name=self.se_name)(y)
    return nn.relu(y + _shortcut(x, y, self.stride, self.downsample_kernel, train, self.dtype))
