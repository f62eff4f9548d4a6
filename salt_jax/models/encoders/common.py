"""Residual blocks shared by the encoders (NHWC), named after their PyTorch counterparts.

Flax submodule names equal the torch attribute names with `.` before an index replaced by `_`
(`layer1.0.downsample.1` -> `layer1_0/downsample_1`), so weight import is mechanical (see convert.py).
"""
from functools import partial
from typing import Any, Optional

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


class BasicBlock(nn.Module):
  """torchvision/timm ResNet BasicBlock: 3x3 (stride) -> BN -> ReLU -> 3x3 -> BN, + shortcut, ReLU."""
  features: int
  stride: int = 1
  downsample: bool = False
  dtype: Dtype = jnp.float32
  bn_axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train: bool):
    bn = partial(batch_norm, train, axis_name=self.bn_axis_name, dtype=self.dtype)
    cv = partial(conv, bias=False, dtype=self.dtype)
    y = nn.relu(bn(name="bn1")(cv(self.features, 3, self.stride, name="conv1")(x)))
    y = bn(name="bn2")(cv(self.features, 3, name="conv2")(y))
    if self.downsample:
      x = bn(name="downsample_1")(cv(self.features, 1, self.stride, name="downsample_0")(x))
    return nn.relu(y + x)


class Bottleneck(nn.Module):
  """1x1 (width1) -> norm -> ReLU -> 3x3 grouped (width2) -> BN -> ReLU -> 1x1 (features) -> BN [-> SE],
  + shortcut, ReLU. (B,H,W,Cin) -> (B,H/stride,W/stride,features).

  Covers every bottleneck variant used here: the stride sits on the 3x3 (timm/ResNeXt/SENet-154) or on
  conv1 (`stride_on_1x1`, legacy SE-ResNet); `downsample_kernel` 0 = identity shortcut, else a conv of
  that kernel (padding k//2, stride) + BN; `se_name` names the SE submodule ("se" in timm, "se_module" in
  legacy SENet); `ibn` replaces bn1 by IBN-a (IN on the first half of the channels).
  """
  width1: int
  width2: int
  features: int
  stride: int = 1
  groups: int = 1
  stride_on_1x1: bool = False
  downsample_kernel: int = 0
  se_name: Optional[str] = None
  ibn: bool = False
  dtype: Dtype = jnp.float32
  bn_axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train: bool):
    bn = partial(batch_norm, train, axis_name=self.bn_axis_name, dtype=self.dtype)
    cv = partial(conv, bias=False, dtype=self.dtype)
    s1, s3 = (self.stride, 1) if self.stride_on_1x1 else (1, self.stride)
    y = cv(self.width1, 1, s1, name="conv1")(x)
    if self.ibn:
      y = IBN(axis_name=self.bn_axis_name, dtype=self.dtype, name="bn1")(y, train)
    else:
      y = bn(name="bn1")(y)
    y = nn.relu(y)
    y = nn.relu(bn(name="bn2")(cv(self.width2, 3, s3, groups=self.groups, name="conv2")(y)))
    y = bn(name="bn3")(cv(self.features, 1, name="conv3")(y))
    if self.se_name:
      y = SqueezeExcite(dtype=self.dtype, name=self.se_name)(y)
    if self.downsample_kernel:
      x = cv(self.features, self.downsample_kernel, self.stride, name="downsample_0")(x)
      x = bn(name="downsample_1")(x)
    return nn.relu(y + x)


def stem_7x7(x, train: bool, dtype: Dtype, bn_axis_name: Optional[str], features: int = 64):
  """conv1 7x7/2 (3->features, no bias) -> bn1 -> ReLU, created in the calling compact module; no max-pool
  (SPEC 3.1). (B,H,W,3) -> (B,H/2,W/2,features)."""
  x = conv(features, 7, 2, bias=False, dtype=dtype, name="conv1")(x)
  return nn.relu(batch_norm(train, axis_name=bn_axis_name, dtype=dtype, name="bn1")(x))
