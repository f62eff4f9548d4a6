"""timm legacy SENet family (Cadene weights): `legacy_seresnet152`, `legacy_senet154` (SPEC 3.3).

Names follow timm's legacy senet: layer0.conv1/bn1(/conv2/bn2/conv3/bn3), layer{i}.{j}.conv1/..,
.se_module.fc1/.fc2, .downsample.0/.1. The max-pool after layer0 is removed.
"""
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from salt_jax.models.encoders.common import Bottleneck
from salt_jax.models.layers import batch_norm, conv

Dtype = Any


class Layer0(nn.Module):
  """Legacy SENet stem. 7x7/2 3->64 (SE-ResNet) or, `deep`, 3x3/2 3->64, 3x3 64->64, 3x3 64->128
  (SENet-154), each conv without bias -> BN -> ReLU. (B,H,W,3) -> (B,H/2,W/2,64|128)."""
  deep: bool = False
  dtype: Dtype = jnp.float32
  bn_axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train: bool):
    spec = [(64, 3, 2), (64, 3, 1), (128, 3, 1)] if self.deep else [(64, 7, 2)]
    for k, (c, kernel, stride) in enumerate(spec, 1):
      x = conv(c, kernel, stride, bias=False, dtype=self.dtype, name=f"conv{k}")(x)
      x = nn.relu(batch_norm(train, axis_name=self.bn_axis_name, dtype=self.dtype, name=f"bn{k}")(x))
    return x


class SEResNet152(nn.Module):
  """Legacy SE-ResNet-152: stride on the first 1x1, blocks [3, 8, 36, 3], 1x1 projection shortcuts.

  (B,H,W,3) -> layer1..layer4 with 256, 512, 1024, 2048 channels at strides 2, 4, 8, 16.
  """
  dtype: Dtype = jnp.float32
  bn_axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train: bool):
    x = Layer0(False, self.dtype, self.bn_axis_name, name="layer0")(x, train)
    outs = []
    for i, (planes, n) in enumerate(zip((64, 128, 256, 512), (3, 8, 36, 3))):
      for j in range(n):
        stride = 2 if i > 0 and j == 0 else 1
        x = Bottleneck(planes, planes, planes * 4, stride, stride_on_1x1=True,
                       downsample_kernel=1 if j == 0 else 0, se_name="se_module", dtype=self.dtype,
                       bn_axis_name=self.bn_axis_name, name=f"layer{i + 1}_{j}")(x, train)
      outs.append(x)
    return tuple(outs)


class SENet154(nn.Module):
  """Legacy SENet-154: deep stem to 128 ch, SEBottleneck 1x1 ->2p, 3x3 groups 64 stride s ->4p, 1x1 ->4p;
  blocks [3, 8, 36, 3]; projection shortcut kernel 1 in layer1, kernel 3 (pad 1) in layer2..4.

  (B,H,W,3) -> layer1..layer4 with 256, 512, 1024, 2048 channels at strides 2, 4, 8, 16.
  """
  dtype: Dtype = jnp.float32
  bn_axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train: bool):
    x = Layer0(True, self.dtype, self.bn_axis_name, name="layer0")(x, train)
    outs = []
    for i, (planes, n) in enumerate(zip((64, 128, 256, 512), (3, 8, 36, 3))):
      for j in range(n):
        stride = 2 if i > 0 and j == 0 else 1
        x = Bottleneck(planes * 2, planes * 4, planes * 4, stride, groups=64,
                       downsample_kernel=(1 if i == 0 else 3) if j == 0 else 0, se_name="se_module",
                       dtype=self.dtype, bn_axis_name=self.bn_axis_name, name=f"layer{i + 1}_{j}")(x, train)
      outs.append(x)
    return tuple(outs)
