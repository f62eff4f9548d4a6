"""timm/torchvision ResNet family: `resnet34`, `seresnext50_32x4d`, `seresnext101_32x4d` (SPEC 3.3).

Names follow timm: conv1, bn1, layer{i}.{j}.conv1/bn1/..., .se.fc1/.se.fc2, .downsample.0/.1.
Stem max-pool removed, so layer1..layer4 run at strides 2, 4, 8, 16.
"""
from typing import Any, ClassVar, Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp

from salt_jax.models.encoders.common import BasicBlock, Bottleneck, stem_7x7

Dtype = Any


class ResNet34(nn.Module):
  """(B,H,W,3) -> layer1..layer4 = (B,H/2,W/2,64), (.,H/4,.,128), (.,H/8,.,256), (.,H/16,.,512)."""
  widths: ClassVar[Tuple[int, ...]] = (64, 128, 256, 512)
  depths: ClassVar[Tuple[int, ...]] = (3, 4, 6, 3)
  dtype: Dtype = jnp.float32
  bn_axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train: bool):
    x = stem_7x7(x, train, self.dtype, self.bn_axis_name, self.widths[0])
    outs, inplanes = [], self.widths[0]
    for i, (planes, n) in enumerate(zip(self.widths, self.depths)):
      for j in range(n):
        stride = 2 if i > 0 and j == 0 else 1
        x = BasicBlock(planes, stride, downsample=j == 0 and (stride != 1 or inplanes != planes),
                       dtype=self.dtype, bn_axis_name=self.bn_axis_name, name=f"layer{i + 1}_{j}")(x, train)
        inplanes = planes
      outs.append(x)
    return tuple(outs)


class ResNetTiny(ResNet34):
  """A quarter-width ResNet-18 ([2,2,2,2] BasicBlocks, 16..128 channels) for CPU-sized runs
  (configs/cpu_small.py). Not an ImageNet model: no weights to import."""
  widths: ClassVar[Tuple[int, ...]] = (16, 32, 64, 128)
  depths: ClassVar[Tuple[int, ...]] = (2, 2, 2, 2)


class SEResNeXt50(nn.Module):
  """timm SE-ResNeXt 32x4d: grouped 3x3 carries the stride, SE (`se`) before the residual sum.

  (B,H,W,3) -> layer1..layer4 with 256, 512, 1024, 2048 channels at strides 2, 4, 8, 16.
  """
  depths: ClassVar[Tuple[int, ...]] = (3, 4, 6, 3)
  dtype: Dtype = jnp.float32
  bn_axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train: bool):
    x = stem_7x7(x, train, self.dtype, self.bn_axis_name)
    outs = []
    for i, (planes, n) in enumerate(zip((64, 128, 256, 512), self.depths)):
      width = planes * 4 // 64 * 32
      for j in range(n):
        stride = 2 if i > 0 and j == 0 else 1
        x = Bottleneck(width, width, planes * 4, stride, groups=32, downsample_kernel=1 if j == 0 else 0,
                       se_name="se", dtype=self.dtype, bn_axis_name=self.bn_axis_name,
                       name=f"layer{i + 1}_{j}")(x, train)
      outs.append(x)
    return tuple(outs)


class SEResNeXt101(SEResNeXt50):
  """timm `seresnext101_32x4d`: as SEResNeXt50 with [3, 4, 23, 3] blocks."""
  depths: ClassVar[Tuple[int, ...]] = (3, 4, 23, 3)
