"""ResNeXt-101 32x4d IBN-a as released by the IBN-Net authors (`resnext101_ibn_a`, SPEC 3.3).

State-dict names: conv1, bn1, layer{i}.{j}.conv1, .bn1.IN/.bn1.BN (IBN-a in layer1..3) or .bn1 (layer4),
.conv2/.bn2/.conv3/.bn3, .downsample.0/.1. No SE. Stem max-pool removed.
"""
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from salt_jax.models.encoders.common import Bottleneck, stem_7x7

Dtype = Any


class ResNeXt101IBNa(nn.Module):
  """(B,H,W,3) -> layer1..layer4 with 256, 512, 1024, 2048 channels at strides 2, 4, 8, 16."""
  dtype: Dtype = jnp.float32
  bn_axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train: bool):
    x = stem_7x7(x, train, self.dtype, self.bn_axis_name)
    outs = []
    for i, (planes, n) in enumerate(zip((64, 128, 256, 512), (3, 4, 23, 3))):
      width = planes * 4 // 64 * 32
      for j in range(n):
        stride = 2 if i > 0 and j == 0 else 1
        x = Bottleneck(width, width, planes * 4, stride, groups=32, downsample_kernel=1 if j == 0 else 0,
                       ibn=planes != 512, dtype=self.dtype, bn_axis_name=self.bn_axis_name,
                       name=f"layer{i + 1}_{j}")(x, train)
      outs.append(x)
    return tuple(outs)
