"""One ResNet-family encoder, configured by a stage spec (SPEC 3.3); the variants are in `ENCODERS`.

Stem max-pool removed (SPEC 3.1), so layer1..layer4 run at strides 2, 4, 8, 16.
"""
from typing import Any, Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from salt_jax.models.layers import batch_norm, conv

Dtype = Any
# (features, kernel, stride) of each stem conv.
StemSpec = Sequence[Tuple[int, int, int]]
STEM_7X7: StemSpec = ((64, 7, 2),)
STEM_DEEP: StemSpec = ((64, 3, 2), (64, 3, 1), (128, 3, 1))  # SENet-154


def _stem(x, spec: StemSpec, train: bool, dtype: Dtype):
  """conv{k} (no bias) -> bn{k} -> ReLU for each (features, kernel, stride), in the calling module.

  (B,H,W,3) -> (B,H/2,W/2,spec[-1][0]) for the stems used here.
  """
  for k, (features, kernel, stride) in enumerate(spec, 1):
    x = conv(features, kernel, stride, bias=False, dtype=dtype, name=f"conv{k}")(x)
    x = nn.relu(batch_norm(train, dtype=dtype, name=f"bn{k}")(x))
  return x


class Stem(nn.Module):
  """The stem as its own submodule (legacy SENet's `layer0`)."""
  spec: StemSpec
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    return _stem(x, self.spec, train, self.dtype)


class ResNet(nn.Module):
  """Stem, then stages of `stage_sizes[i]` blocks `block_cls(planes=widths[i], ...)` named
  `layer{i+1}_{j}`; the first block of stages 2..4 has stride 2.

  `stem_name` None puts the stem's conv1/bn1.. at the top level (timm), else in that submodule (legacy
  SENet `layer0`). `downsample_kernels[i]` is the projection shortcut's kernel in stage i and
  `ibn_stages[i]` makes the blocks' bn1 IBN-a there.

  (B,H,W,3) -> (c2, c3, c4, c5) = layer1..layer4 outputs at strides 2, 4, 8, 16.
  """
  stage_sizes: Sequence[int]
  block_cls: Callable[..., nn.Module]
  widths: Sequence[int] = (64, 128, 256, 512)
  stem: StemSpec = STEM_7X7
  stem_name: Optional[str] = None
  downsample_kernels: Sequence[int] = (1, 1, 1, 1)
  ibn_stages: Sequence[bool] = (False, False, False, False)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    if self.stem_name is None:
      x = _stem(x, self.stem, train, self.dtype)
    else:
      x = Stem(self.stem, self.dtype, name=self.stem_name)(x, train)
    outs = []
    for i, (n, planes) in enumerate(zip(self.stage_sizes, self.widths)):
      for j in range(n):
        x = self.block_cls(planes=planes, stride=2 if i > 0 and j == 0 else 1,
                           downsample_kernel=self.downsample_kernels[i], ibn=self.ibn_stages[i],
                           dtype=self.dtype, name=f"layer{i + 1}_{j}")(x, train)
      outs.append(x)
    return tuple(outs)
